"""Figures in the paper's style: training loss minus L* on a log axis against iteration."""
from __future__ import annotations

import numpy as np


def plot_curves(result, ax=None, optimal=0.0, labels=None, title=None, path=None):
    """One curve per config of `result`; returns the matplotlib Axes (saves to `path` if given)."""
    import matplotlib
    if ax is None and path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.4))
    optimal = np.broadcast_to(np.asarray(optimal, dtype=float), (len(result.configs),))
    labels = labels or [c.describe() for c in result.configs]
    for i, label in enumerate(labels):
        curve = result.loss[i] - optimal[i]
        steps = result.steps
        if result.diverged[i]:
            keep = steps <= result.diverged_at[i]
            steps, curve = steps[keep], curve[keep]
            label += " (diverged)"
        curve = np.where(curve > 0, curve, np.nan)            # a log axis shows gaps > 0 only
        (line,) = ax.semilogy(steps, curve, label=label, lw=1.4)
        if result.diverged[i] and len(steps):
            ax.plot(steps[-1:], curve[-1:], "x", color=line.get_color())
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss - L*" if np.any(optimal) else "training loss")
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    if path is not None:
        ax.figure.tight_layout()
        ax.figure.savefig(path, dpi=120)
    return ax
