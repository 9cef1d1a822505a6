"""Beyond the paper: where does depth accelerate gradient descent on Ethanol?

The paper ends saying that when depth accelerates "warrants much further study".  This maps the
speed-up of depths 2, 3 and 4 over depth 1 (each at its own best lr: the paper's grid refined to
14 %, rule a, gpulinear.lrsearch) over the loss exponent p, the initialization and the target's
scale: the grid only a library that trains every config of a cell in one call can afford.

Cells: p in P (l2 is the paper's "hinders", l4 its "accelerates"; 2.5, 3 and 6 fill in between
and beyond), init in INITS (near-zero N(0, 0.01^2), balanced: Eq 7 exact at t = 0 with the same
end-to-end scale, identity: 1 on each layer's diagonal, which at width 1 is feature 0 alone),
target x1 and x10.  Depth 1 (near-zero init; its init hardly matters on a convex problem) is
the baseline of every cell of its p and scale.

Length: 15,000 steps per run, shorter than the paper's 100k, so that the 90 cells (x 19 lrs, x 2
target scales) fit ~30 min of one core.  A speed-up read at a fixed horizon depends on the
horizon (the deep nets' plateau is a time offset that weighs less as the run grows, and for p > 2
the rates differ, so the ratio keeps growing): no horizon makes every value stop moving.  What
the map claims is the direction, so a cell is *settled* when the direction it reads (faster /
neither / slower, analysis.speedup_direction) is the same on the first half of the run as on the
whole run; the table marks the others "(unsettled)" and gives, beside each value, how far it
moved from the half-length reading (the 10,000-step preliminary run of 2026-12-07: 24 of 90
directions moved between 5k and 10k steps; 61 of 90 values moved by more than 20 %).
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

import gpulinear as gl
from gpulinear import analysis, protocol
from gpulinear.lrsearch import lr_search
from gpulinear.report import optimal_losses, save_json, timed_train

NAME = "atlas"
TITLE = "Atlas: speed-up of depth 2/3/4 over depth 1 across p x init x target scale (beyond the paper)"
P = (2.0, 2.5, 3.0, 4.0, 6.0)
INITS = ("normal", "balanced", "identity")
DEPTHS = (2, 3, 4)
MODES = {"tiny": {"steps": 200, "lrs": (1e-3, 1e-2), "p": (2.0, 4.0), "inits": ("normal",),
                  "y_scales": (1.0,)},
         "quick": {"steps": 2_000, "lrs": gl.LR_GRID, "p": P, "inits": INITS,
                   "y_scales": protocol.Y_SCALES},
         "full": {"steps": 15_000, "lrs": gl.LR_GRID, "p": P, "inits": INITS,
                  "y_scales": protocol.Y_SCALES}}


def loss_name(p: float) -> str:
    return f"l{p:g}"


def models(m) -> dict:
    out = {}
    for p in m["p"]:
        out[(p, "normal", 1)] = dict(depth=1, loss=loss_name(p))
        for init in m["inits"]:
            for d in DEPTHS:
                out[(p, init, d)] = dict(depth=d, loss=loss_name(p), init=init)
    return out


def config_steps(mode: str) -> dict:
    m = MODES[mode]
    return {"all": len(models(m)) * (len(m["lrs"]) + 9) * m["steps"] * len(m["y_scales"])}


def run(out: Path, quick: bool = True, backend: str = "auto", tiny: bool = False, seed: int = 0,
        scale: float = 1.0):
    out = Path(out)
    mode = "tiny" if tiny else ("quick" if quick else "full")
    m = MODES[mode]
    steps = max(10, int(m["steps"] * scale))
    out.mkdir(parents=True, exist_ok=True)
    mods = models(m)
    cells, unsettled = [], 0
    for y_scale in m["y_scales"]:
        X, y = protocol.ethanol_variant("zscore", y_scale)
        lstar = optimal_losses(X, y, sorted({loss_name(p) for p in m["p"]}))
        # the loss's curvature grows as y_scale^(p-2): the same grid, shifted by it, searches the
        # same range of effective step sizes at every scale (x10 at p = 6 needs lrs 1e4 smaller)
        lrs = {key: [lr / y_scale ** (key[0] - 2) for lr in m["lrs"]] for key in mods}
        search = lr_search(X, y, mods, lrs, steps, lambda c: lstar[c.loss],
                           train=functools.partial(timed_train), label=f"atlas y x{y_scale:g}",
                           rules=("mean_log_gap",), seeds=(seed,),
                           log_every=max(1, steps // 200), backend=backend)
        for key in mods:
            p, init, d = key
            if d == 1:
                continue
            base = search.gaps("refined", "mean_log_gap", (p, "normal", 1))[0]
            model = search.gaps("refined", "mean_log_gap", key)[0]
            reading = read_cell(search.steps, base, model)
            unsettled += not reading["settled"]
            cells.append({"p": p, "init": init, "y_scale": y_scale, "depth": d, **reading,
                          "lr": search.lr("refined", "mean_log_gap", key),
                          "lr_depth1": search.lr("refined", "mean_log_gap", (p, "normal", 1)),
                          "known_within": search.choice[("refined", "mean_log_gap",
                                                         key)]["resolution"],
                          "final_gap": float(model[-1]), "final_gap_depth1": float(base[-1])})
    _heatmap(cells, m, out / "atlas.png")
    table = _table(cells, m)
    return save_json(out, NAME, {
        "claims": [], "figures": ["atlas.png"], "cells": cells, "mode": mode,
        "markdown": table,
        "evidence": [_summary(cells, unsettled, steps)],
        "setup": f"Ethanol z-scored, GD, width 1; p {list(m['p'])}, inits {list(m['inits'])}, "
                 f"target x{list(m['y_scales'])}; depths {list(DEPTHS)} vs depth 1 (near-zero "
                 f"init); lr grid {list(m['lrs'])} / y_scale^(p-2) (the curvature's scale), "
                 f"refined to 14 % (rule a: mean log10 gap); 'no progress': neither depth 1 nor "
                 f"the model left 90 % of its start at its best lr; "
                 f"{steps:,} steps; speed-up = median over depth 1's 10/25/50/100 % levels; a "
                 f"cell is settled if its direction (faster > {analysis.FASTER}x, slower < "
                 f"1/{analysis.FASTER}, or neither) on the first half of the run is the same as "
                 f"on the whole run; '(half: v)' is the half-length value."})


def read_cell(steps, base, model) -> dict:
    """One cell's reading from depth 1's and a model's gap curves (r,) at its best lr: the median
    speed-up over depth 1's levels on the whole run and on its first half, the direction each
    reads, settled (same direction on both), and upper_bound (the model never left its start: a
    stall, so the value is only an upper bound).  A cell where neither curve moved reads nan."""
    half = len(steps) // 2
    full = analysis.median_speedup(analysis.speedups(steps, base, model))
    first = analysis.median_speedup(analysis.speedups(steps[:half], base[:half], model[:half]))
    stalled = bool(np.isnan(analysis.escape_steps(steps, model[None])[0]))
    if np.isnan(analysis.escape_steps(steps, np.stack([base, model]))).all():
        full = first = float("nan")
    direction = analysis.speedup_direction(full)
    return {"speedup": full, "speedup_first_half": first, "direction": direction,
            "direction_first_half": analysis.speedup_direction(first),
            "settled": bool(np.isfinite(full) and direction
                            == analysis.speedup_direction(first)),
            "upper_bound": stalled}


def _summary(cells, unsettled, steps) -> str:
    acc = [c for c in cells if c["direction"] == "faster"]
    moved = sum(not (abs(c["speedup"] - c["speedup_first_half"]) <= 0.2 * c["speedup"])
                for c in cells)
    by_p = {}
    for c in cells:
        by_p.setdefault(c["p"], []).append(c["speedup"])
    med = ", ".join(f"p={p:g}: {np.nanmedian(v):.2g}x" for p, v in sorted(by_p.items()))
    return (f"{len(acc)} of {len(cells)} cells accelerate (median speed-up > "
            f"{analysis.FASTER}); median speed-up per p over inits, depths and scales: {med}; "
            f"{unsettled} of {len(cells)} cells not settled at {steps:,} steps (direction differs "
            f"from the half-length run's); {moved} of {len(cells)} values moved by more than 20 % "
            f"from half to full length (a speed-up grows with the horizon where the rates "
            f"differ).")


def _table(cells, m) -> list[str]:
    cols = [(init, ys) for init in m["inits"] for ys in m["y_scales"]]
    lines = ["| p | depth | " + " | ".join(f"{i}, y x{ys:g}" for i, ys in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for p in m["p"]:
        for d in DEPTHS:
            row = []
            for init, ys in cols:
                c = next((c for c in cells if (c["p"], c["init"], c["y_scale"], c["depth"])
                          == (p, init, ys, d)), None)
                row.append("-" if c is None else "no progress" if np.isnan(c["speedup"]) else
                           ("<" if c["upper_bound"] else "") + f"{c['speedup']:.2g}x"
                           + f" (half: {c['speedup_first_half']:.2g})"
                           + ("" if c["settled"] else " unsettled"))
            lines.append(f"| {p:g} | {d} | " + " | ".join(row) + " |")
    return lines


def _heatmap(cells, m, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = [(init, ys) for init in m["inits"] for ys in m["y_scales"]]
    fig, axes = plt.subplots(1, len(DEPTHS), figsize=(4.2 * len(DEPTHS), 0.6 + 0.5 * len(m["p"])),
                             sharey=True)
    for ax, d in zip(np.atleast_1d(axes), DEPTHS):
        grid = np.full((len(m["p"]), len(cols)), np.nan)
        settled = np.ones(grid.shape, dtype=bool)
        for c in cells:
            if c["depth"] == d:
                at = m["p"].index(c["p"]), cols.index((c["init"], c["y_scale"]))
                grid[at], settled[at] = c["speedup"], c["settled"]
        img = ax.imshow(np.log2(np.clip(grid, 1 / 16, 16)), cmap="RdBu", vmin=-3, vmax=3,
                        aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                # "?": the direction differs between half and full length (not settled)
                ax.text(j, i, "n/a" if np.isnan(grid[i, j]) else
                        f"{grid[i, j]:.2g}" + ("" if settled[i, j] else "?"),
                        ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([f"{i[:4]}\nx{ys:g}" for i, ys in cols], fontsize=7)
        ax.set_yticks(range(len(m["p"])))
        ax.set_yticklabels([f"p={p:g}" for p in m["p"]], fontsize=7)
        ax.set_title(f"depth {d} over depth 1 (?: not settled)", fontsize=9)
    fig.colorbar(img, ax=axes, label="log2 speed-up (blue: depth faster)", shrink=0.8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    from gpulinear.report import experiment_cli
    sys.exit(experiment_cli(sys.modules[__name__]))
