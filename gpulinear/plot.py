"""Figures in the paper's style: training loss minus L* on a log axis against iteration.

A log axis cannot show a gap <= 0 (L* reached up to rounding) and matplotlib overflows on values
near 1e300 (a diverging run's last finite loss), so every curve is clipped into a finite band
[floor, ceiling] and each clipped point gets a marker the legend explains: ▼ at the floor for
gaps <= 0, ▲ at the ceiling for values above it.  Nothing is dropped silently and no value makes
the figure fail.
"""
from __future__ import annotations

import numpy as np

CLIP_ABOVE = 1e3        # ceiling: this many times the largest step-0 gap of the figure
LEGEND_INSIDE = 8       # more curves than this: the legend goes beside the axes
LEGEND_MAX = 30         # more than this: no legend (one line in the title says so)


def clip_band(gaps, first=None):
    """(floor, ceiling) of a log plot of `gaps` (any shape, any values): the floor sits below the
    smallest positive finite gap, the ceiling CLIP_ABOVE x the largest positive step-0 gap
    (`first`, default gaps[..., 0]), never below the largest gap that is not an outlier."""
    g = np.asarray(gaps, dtype=float)
    pos = g[np.isfinite(g) & (g > 0)]
    if pos.size == 0:
        return 1e-16, 1.0
    floor = float(pos.min()) / 2
    f = np.asarray(g[..., 0] if first is None else first, dtype=float)
    f = f[np.isfinite(f) & (f > 0)]
    top = CLIP_ABOVE * float(f.max()) if f.size else float(np.median(pos)) * CLIP_ABOVE
    ceiling = min(max(top, floor * 10), 1e300)
    return floor, ceiling


def clip_curve(gap, floor, ceiling):
    """(values to draw, mask clipped low, mask clipped high); non-finite values become NaN."""
    gap = np.asarray(gap, dtype=float)
    finite = np.isfinite(gap)
    low = finite & (gap <= floor)
    with np.errstate(invalid="ignore"):
        high = finite & (gap > ceiling)
    y = np.where(finite, np.clip(np.where(finite, gap, 1.0), floor, ceiling), np.nan)
    return y, low, high


def plot_curves(result, ax=None, optimal=0.0, labels=None, title=None, path=None):
    """One curve per config of `result`; returns the matplotlib Axes (saves to `path` if given)."""
    import matplotlib
    if ax is None and path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(result.configs)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4 if n <= LEGEND_INSIDE else 8.4, 4.4))
    optimal = np.broadcast_to(np.asarray(optimal, dtype=float), (n,))
    labels = list(labels) if labels is not None else [c.describe() for c in result.configs]
    with np.errstate(invalid="ignore", over="ignore"):
        gaps = result.loss - optimal[:, None]
    floor, ceiling = clip_band(gaps)
    n_low = n_high = 0
    for i, label in enumerate(labels):
        steps, curve = result.steps, gaps[i]
        if result.diverged[i]:
            keep = steps <= result.diverged_at[i]
            steps, curve = steps[keep], curve[keep]
            label += " (diverged)"
        y, low, high = clip_curve(curve, floor, ceiling)
        (line,) = ax.semilogy(steps, y, label=label, lw=1.4)
        color = line.get_color()
        if low.any():
            ax.plot(steps[low], y[low], "v", ms=4, color=color)
            n_low += 1
        if high.any():
            ax.plot(steps[high], y[high], "^", ms=4, color=color)
            n_high += 1
        if result.diverged[i] and len(steps):
            last = np.flatnonzero(np.isfinite(y))
            if len(last):
                ax.plot(steps[last[-1]], y[last[-1]], "x", color=color)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss - L*" if np.any(optimal) else "training loss")
    handles, names = ax.get_legend_handles_labels()
    from matplotlib.lines import Line2D
    if n_low:
        handles.append(Line2D([], [], ls="", marker="v", color="0.3"))
        names.append(f"clipped: gap <= 0 (L* reached up to rounding), drawn at {floor:.1e}")
    if n_high:
        handles.append(Line2D([], [], ls="", marker="^", color="0.3"))
        names.append(f"clipped: above {ceiling:.1e}")
    if n > LEGEND_MAX:
        keep = [j for j, name in enumerate(names) if name.startswith("clipped")]
        handles, names = [handles[j] for j in keep], [names[j] for j in keep]
        title = f"{title + ' - ' if title else ''}{n} curves"
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if handles:
        if n <= LEGEND_INSIDE:
            ax.legend(handles, names, fontsize=7)
        else:
            ax.legend(handles, names, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      borderaxespad=0)
    if path is not None:
        ax.figure.savefig(path, dpi=120, bbox_inches="tight")
    return ax
