"""``python -m oneshot``: the command line (also what ``torchrun ... -m oneshot train`` starts in every process)."""

from oneshot.cli import app

if __name__ == "__main__":
    app(prog_name="oneshot")
