"""oneshot: learn to recognise a new class from a single example."""

from typing import Any

__version__ = "0.2.0"
__all__ = ["Gallery", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import oneshot` (and the CLI) does not load FAISS until the gallery is used.
    if name == "Gallery":
        from oneshot.gallery import Gallery

        return Gallery
    raise AttributeError(f"module 'oneshot' has no attribute {name!r}")
