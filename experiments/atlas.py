"""Beyond the paper: where does depth accelerate gradient descent on Ethanol?

The paper ends saying that when depth accelerates "warrants much further study".  This maps the
speed-up of depths 2, 3 and 4 over depth 1 (each at its own best lr: the paper's grid refined to
14 %, rule a, gpulinear.lrsearch) over the loss exponent p, the initialization and the target's
scale: the grid only a library that trains every config of a cell in one call can afford.

Cells: p in P (l2 is the paper's "hinders", l4 its "accelerates"; 2.5, 3 and 6 fill in between
and beyond), init in INITS (near-zero N(0, 0.01^2), balanced: Eq 7 exact at t = 0 with the same
end-to-end scale, identity: 1 on each layer's diagonal, which at width 1 is feature 0 alone),
target x1 and x10.  Depth 1 (near-zero init; its init hardly matters on a convex problem) is
the baseline of every cell of its p and scale.  Steps: STEPS per run, shorter than the paper's
100k to fit ~20 min on a 2-core CPU; each speed-up is also read on the first half of the run and
a cell whose median speed-up moved by more than SETTLED between the halves is marked unsettled
(the table says how many are).
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
SETTLED = 0.2          # relative change of a cell's median speed-up between half and full run
MODES = {"tiny": {"steps": 200, "lrs": (1e-3, 1e-2), "p": (2.0, 4.0), "inits": ("normal",),
                  "y_scales": (1.0,)},
         "quick": {"steps": 2_000, "lrs": gl.LR_GRID, "p": P, "inits": INITS,
                   "y_scales": protocol.Y_SCALES},
         "full": {"steps": 10_000, "lrs": gl.LR_GRID, "p": P, "inits": INITS,
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
        half = len(search.steps) // 2
        for key in mods:
            p, init, d = key
            if d == 1:
                continue
            base = search.gaps("refined", "mean_log_gap", (p, "normal", 1))[0]
            model = search.gaps("refined", "mean_log_gap", key)[0]
            rows = analysis.speedups(search.steps, base, model)
            full = analysis.median_speedup(rows)
            # the model never left its start (a stall): its median is only an upper bound
            stalled = bool(np.isnan(analysis.escape_steps(search.steps, model[None])[0]))
            first = analysis.median_speedup(analysis.speedups(search.steps[:half], base[:half],
                                                              model[:half]))
            if np.isnan(analysis.escape_steps(search.steps, np.stack([base, model]))).all():
                full = first = float("nan")     # neither moved: no speed-up to read
            settled = bool(np.isfinite(full) and np.isfinite(first)
                           and abs(full - first) <= SETTLED * full)
            unsettled += not settled
            cells.append({"p": p, "init": init, "y_scale": y_scale, "depth": d,
                          "speedup": full, "upper_bound": stalled, "speedup_first_half": first, "settled": settled,
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
                 f"cell is settled if its speed-up on the first half of the run is within "
                 f"{SETTLED:.0%} of the full run's."})


def _summary(cells, unsettled, steps) -> str:
    acc = [c for c in cells if np.nan_to_num(c["speedup"]) > analysis.FASTER]
    by_p = {}
    for c in cells:
        by_p.setdefault(c["p"], []).append(c["speedup"])
    med = ", ".join(f"p={p:g}: {np.nanmedian(v):.2g}x" for p, v in sorted(by_p.items()))
    return (f"{len(acc)} of {len(cells)} cells accelerate (median speed-up > "
            f"{analysis.FASTER}); median speed-up per p over inits, depths and scales: {med}; "
            f"{unsettled} of {len(cells)} cells not settled at {steps:,} steps.")


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
                           + ("" if c["settled"] else " (unsettled)"))
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
        for c in cells:
            if c["depth"] == d:
                grid[m["p"].index(c["p"]), cols.index((c["init"], c["y_scale"]))] = c["speedup"]
        img = ax.imshow(np.log2(np.clip(grid, 1 / 16, 16)), cmap="RdBu", vmin=-3, vmax=3,
                        aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, "n/a" if np.isnan(grid[i, j]) else f"{grid[i, j]:.2g}",
                        ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([f"{i[:4]}\nx{ys:g}" for i, ys in cols], fontsize=7)
        ax.set_yticks(range(len(m["p"])))
        ax.set_yticklabels([f"p={p:g}" for p in m["p"]], fontsize=7)
        ax.set_title(f"depth {d} over depth 1", fontsize=9)
    fig.colorbar(img, ax=axes, label="log2 speed-up (blue: depth faster)", shrink=0.8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    from gpulinear.report import experiment_cli
    sys.exit(experiment_cli(sys.modules[__name__]))
