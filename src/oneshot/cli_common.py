"""What every ``oneshot`` command shares: user mistakes as one line and exit status 2, progress bars (training and
evaluation behind one), ``--json`` output or a one-line summary, result tables, and the option types several
commands take. Imported by :mod:`oneshot.cli`, its command modules and :mod:`oneshot.gallery.cli` (neither
imports the other's internals).
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from oneshot.errors import OneshotError, OneshotWarning
from oneshot.ranges import in_range

if TYPE_CHECKING:
    from oneshot.experiment import CheckpointEvaluation
    from oneshot.training import TrainConfig, TrainProgress, TrainResult

F = TypeVar("F", bound=Callable[..., Any])

console = Console(stderr=True)

DEFAULT_CHECKPOINT = "omniglot"  # the shipped ProtoNet (oneshot.weights); a path works everywhere a name does
#: What `oneshot demo` (and `make demo`) evaluates: the default Omniglot encoder of new galleries, trained on the Lake
#: split's background alphabets only, so it is scored cleanly on the Vinyals test alphabets and on Lake's runs.
DEMO_CHECKPOINT = "omniglot-lake-v4"
CHECKPOINT_HELP = "a built-in encoder name (`oneshot encoders`) or a checkpoint file (.safetensors)"
# `train --augment` and the faces demo: the batch augmentation of photo datasets (oneshot.data.augment.Augment)
PHOTO_AUGMENT = {"flip": 0.5, "scale": [0.8, 1.0], "rotate": 10.0, "shift": 0.05, "brightness": 0.2, "contrast": 0.2}
# `train --augment` on Omniglot: strokes on a blank page have no mirror image and no lighting, only small affine changes
STROKE_AUGMENT = {"flip": 0.0, "scale": [0.85, 1.0], "rotate": 10.0, "shift": 0.05, "brightness": 0.0, "contrast": 0.0}

DataDir = Annotated[
    Optional[Path], typer.Option(help="Folder with the dataset files (else $ONESHOT_DATA, then the user cache, then download).")
]
Device = Annotated[str, typer.Option(help="auto (CUDA when present, else CPU), cpu or cuda.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
# The training-speed levers of `oneshot train` (docs/training.md, "Training speed").
CompileChoice = Annotated[
    str,
    typer.Option(
        "--compile",
        help="torch.compile the encoder: auto (eager on CPU, where compiling was measured slower; on a GPU the "
        "whole-step graph for ProtoNet with --precision fp32), on, off, cuda-graphs (a GPU: "
        "inductor's reduce-overhead mode), or step-graph (a GPU, ProtoNet: the whole training step as one CUDA graph).",
    ),
]
FoldBnChoice = Annotated[
    str,
    typer.Option(
        "--fold-bn",
        help="Run Conv-4's first convolution + batch norm as one folded convolution while training (same function): "
        "auto (on for CPU, where it was measured faster), on or off.",
    ),
]
FusedKernelChoice = Annotated[
    str,
    typer.Option(
        "--fused-kernel",
        help="With --fold-bn, run Conv-4's first convolution + max-pool + ReLU as one CPU kernel (same function; built "
        "once with the system C compiler): auto (on for a CPU with AVX-512 where it builds), on or off.",
    ),
]


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """oneshot's own warnings (a text truncated to the encoder's limit, inputs unlike the encoder's training
    data, extreme upscaling) as one ``warning: ...`` line on stderr; others as Python prints them."""
    if issubclass(category, OneshotWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def user_errors(fn: F) -> F:
    """Print a :class:`OneshotError` as one line on stderr and exit with status 2 (no traceback); print each
    :class:`OneshotWarning` (e.g. :class:`~oneshot.data.images.InputWarning`) as one ``warning: ...`` line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", OneshotWarning)
                warnings.showwarning = show_warning
                return fn(*args, **kwargs)
        except OneshotError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def command(app: typer.Typer, name: str | None = None) -> Callable[[F], F]:
    """Register ``fn`` as a command of ``app`` with :func:`user_errors` around it."""

    def register(fn: F) -> F:
        wrapped = user_errors(fn)
        app.command(name)(wrapped)
        return wrapped

    return register


def progress(quiet: bool) -> Progress:
    """A progress bar on stderr (disabled with ``quiet``, e.g. under ``--json``)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
        transient=False,
    )


MethodOptions = Annotated[
    list[str],
    typer.Option(
        "--option",
        "-o",
        help="Method option KEY=VALUE (repeat; VALUE is read as JSON when it parses, else as text), "
        "e.g. -o mining=batch-hard -o fce=true. See docs/methods.md.",
    ),
]
EncoderOptions = Annotated[
    list[str],
    typer.Option("--encoder-option", "-e", help="Encoder option KEY=VALUE (repeat), e.g. -e hidden=128 (conv4 width)."),
]


def parse_options(items: list[str]) -> dict:
    """``["margin=0.5", "mining=all"]`` -> ``{"margin": 0.5, "mining": "all"}``."""
    return dict(method_option(item) for item in items)


def method_option(item: str) -> tuple[str, Any]:
    """``"margin=0.5"`` -> ``("margin", 0.5)``: one method option KEY=VALUE, the value read as JSON where it is
    JSON, else kept as text; dashes in the key become underscores.

    Raises :class:`~oneshot.errors.OneshotError` naming the expected form (see :func:`option_argument` for
    ``argparse``).
    """
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise OneshotError(f"method option {item!r} is not KEY=VALUE")
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.strip().replace("-", "_"), value


def option_argument(item: str) -> tuple[str, Any]:
    """:func:`method_option` as an ``argparse`` ``type=``: a malformed ``--option`` is a usage error, with its
    message, before any work starts (``dict(args.option)`` then gives the options)."""
    try:
        return method_option(item)
    except OneshotError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def echo_json(obj: object) -> None:
    """Print one JSON object on stdout (values JSON does not know are printed as strings)."""
    typer.echo(json.dumps(obj, default=str))


def echo_result(as_json: bool, obj: object, text: str) -> None:
    """A command's result: ``obj`` as one JSON object under ``--json``, else the one-line summary ``text``."""
    if as_json:
        echo_json(obj)
    else:
        typer.echo(text)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], **column: Any) -> None:
    """A table on stdout: a heading per column (each added with the ``column`` settings, e.g.
    ``justify="right"``) and one row of texts per item of ``rows``."""
    table = Table(title=title)
    for name in columns:
        table.add_column(name, **column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def command_line() -> str:
    """The command as typed (``oneshot train ...``), recorded in what a command writes."""
    return "oneshot " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def train_with_progress(
    quiet: bool,
    total: int | None,
    describe: Callable[[TrainProgress], str],
    method: str,
    cfg: TrainConfig,
    out: Path,
    **options: Any,
) -> TrainResult:
    """:func:`oneshot.experiment.train_model` (``options`` passed on) behind a "training" progress bar, updated
    every 10 episodes (and at episode ``total``) with the text ``describe(progress)``."""
    from oneshot.experiment import train_model

    with progress(quiet) as bar:
        task = bar.add_task("training", total=total, info="")

        def on_progress(p: TrainProgress) -> None:
            if p.episode % 10 == 0 or p.episode == total:
                bar.update(task, completed=p.episode, info=describe(p))

        return train_model(method, cfg, out, on_progress=on_progress, **options)


def evaluate_with_progress(
    checkpoint: str | Path, shapes: list[tuple[int, int]], episodes: int, quiet: bool, **options: Any
) -> CheckpointEvaluation:
    """:func:`oneshot.experiment.evaluate_checkpoint` (``options`` passed on) behind an "evaluating" progress
    bar over ``episodes`` per shape; returns its :class:`~oneshot.evaluation.CheckpointEvaluation`."""
    from oneshot.experiment import evaluate_checkpoint

    with progress(quiet) as bar:
        task = bar.add_task("evaluating", total=episodes * len(shapes), info="")
        return evaluate_checkpoint(checkpoint, shapes, episodes=episodes, progress=lambda n: bar.advance(task, n), **options)


def check_range(name: str, value: float | int | None, low: float | None = None, high: float | None = None, **ends: bool) -> None:
    """Refuse, before any work, option ``--name`` outside its range; ``ends`` are ``low_open`` / ``high_open``
    (see :func:`oneshot.ranges.in_range`)."""
    in_range(f"--{name.replace('_', '-')}", value, low, high, **ends)


def check_output_file(name: str, path: Path) -> None:
    """Refuse, before any work, an output file path that is a folder or whose folder cannot be written."""
    import os
    import tempfile

    if path.is_dir():
        raise OneshotError(f"--{name} {path} is a folder: give a file name (e.g. {path / 'model.safetensors'})")
    folder = path.parent if str(path.parent) else Path(".")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OneshotError(f"--{name} {path}: {probe} is not a folder: choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".oneshot-probe-"):
            pass
    except OSError as exc:
        from oneshot.errors import os_reason

        raise OneshotError(f"--{name} {path} cannot be written ({os_reason(exc)}): choose a writable place") from None
    del os


def episode_shape(text: str) -> tuple[int, int]:
    """``"20x5"`` -> ``(20, 5)``: an episode shape written WAYSxSHOTS (ways >= 2, shots >= 1).

    Raises ``ValueError`` with the expected form, so an ``argparse`` ``type=`` reports it as a usage error.
    """
    parts = text.lower().split("x")
    try:
        ways, shots = (int(v) for v in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not an episode shape: write WAYSxSHOTS, e.g. 5x1 or 20x5") from None
    if ways < 2 or shots < 1:
        raise ValueError(f"{text!r}: an episode needs at least 2 ways and 1 shot")
    return ways, shots


def parse_shapes(ways: list[int], shots: list[int], standard: bool) -> list[tuple[int, int]]:
    """The (ways, shots) shapes of ``evaluate``: the four standard ones with ``--standard``, else every pair."""
    if standard:
        from oneshot.experiment import STANDARD_SHAPES

        return list(STANDARD_SHAPES)
    return [(w, k) for w in ways for k in shots]
