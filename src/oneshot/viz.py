"""Pictures people would rather look at than read: one-shot episodes with predictions marked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

RIGHT, WRONG = "#1a9850", "#d73027"


@dataclass
class EpisodePicture:
    """What to draw for one episode.

    Attributes:
        support: uint8 (N, C, H, W), one drawing per class, in class order.
        queries: uint8 (Q, C, H, W).
        predicted: (Q,) predicted class index per query.
        truth: (Q,) true class index per query.
        title: caption above the episode.
    """

    support: torch.Tensor
    queries: torch.Tensor
    predicted: list[int]
    truth: list[int]
    title: str = ""


def _show(ax, img: torch.Tensor, invert: bool) -> None:
    a = img.numpy()
    a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    if invert:
        a = 255 - a
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_episodes(episodes: list[EpisodePicture], path: str | Path, invert: bool = True) -> Path:
    """Draw each episode as two rows -- the support set (one drawing per class) and the queries with their
    predicted class, framed green when right and red when wrong -- and save a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = max(max(e.support.shape[0], e.queries.shape[0]) for e in episodes)
    rows = 2 * len(episodes)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.55 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ep in enumerate(episodes):
        for c in range(ep.support.shape[0]):
            ax = axes[2 * i, c]
            ax.axis("on")
            _show(ax, ep.support[c], invert)
            ax.set_title(f"class {c}", fontsize=8)
            for s in ax.spines.values():
                s.set_edgecolor("#4575b4")
                s.set_linewidth(2)
        axes[2 * i, 0].set_ylabel("support", fontsize=8)
        for q in range(ep.queries.shape[0]):
            ax = axes[2 * i + 1, q]
            ax.axis("on")
            _show(ax, ep.queries[q], invert)
            ok = ep.predicted[q] == ep.truth[q]
            colour = RIGHT if ok else WRONG
            mark = "right" if ok else f"wrong (is {ep.truth[q]})"
            ax.set_title(f"-> {ep.predicted[q]}\n{mark}", fontsize=7, color=colour)
            for s in ax.spines.values():
                s.set_edgecolor(colour)
                s.set_linewidth(3)
        axes[2 * i + 1, 0].set_ylabel("queries", fontsize=8)
        if ep.title:
            axes[2 * i, 0].annotate(ep.title, (0, 1.85), xycoords="axes fraction", fontsize=9, weight="bold")
    fig.suptitle("One-shot episodes: one drawing per class (top), queries and predictions (bottom)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
