"""Figure 3: depth 1 vs 2 vs 3 under l2 and l4 on Ethanol, lr chosen per model by grid search.

Paper: "with l2 loss, depth (slightly) hinders optimization, whereas with l4 loss it leads to
significant acceleration".  Run under several documented preprocessings, because the paper does
not say how it scaled the data and the scaling changes the size of the effect; the default
(z-scored features, target as given) was fixed before any run (README, "Data").
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import gpulinear as gl
from gpulinear.report import (best_per_model, ethanol_problem, finish_figure, fmt,
                              optimal_losses, save_json, verdict)

NAME = "fig3"
TITLE = "Depth 1/2/3 on Ethanol with the lr grid: l2 slightly slower, l4 accelerated (Fig 3)"
PREPROCESSINGS = ("zscore", "maxabs", "zscore-ystd")   # the first is the default
EPS = (0.1, 0.03, 0.01)                                # gaps L - L* for steps-to-target
# Verdict rules, fixed before any run.  r = (best deeper net's final gap) / (depth 1's):
#   l2 "depth slightly hinders":   holds if min(r2, r3) >= 1; partly if >= 0.8; else not.
#   l4 "significant acceleration": holds if max(r2, r3) <= 0.5; partly if min(r2, r3) < 1.
L2_PARTLY, L4_SIGNIFICANT = 0.8, 0.5


def run(out: Path, quick: bool = True, backend: str = "auto", tiny: bool = False, seed: int = 0):
    out = Path(out)
    if tiny:
        plan = [("zscore", 300, [1e-3, 5e-3, 1e-2])]
    else:
        full = 100_000
        plan = [(pre, (20_000 if i == 0 else 10_000) if quick else full, list(gl.LR_GRID))
                for i, pre in enumerate(PREPROCESSINGS)]
    data = {"claims": [], "figures": [], "runs": {}}
    for pre, steps, lrs in plan:
        X, y = ethanol_problem(pre)
        lstar = optimal_losses(X, y, ["l2", "l4"])
        cfgs = gl.grid(loss=["l2", "l4"], depth=[1, 2, 3], lr=lrs, seed=seed)
        res = gl.train(X, y, cfgs, steps=steps, log_every=max(1, steps // 200), backend=backend)
        res.save(out / f"fig3_{pre}")
        opt = np.array([lstar[c.loss] for c in cfgs])
        at = [steps // 4, steps // 2]
        rows = best_per_model(res, opt, ["loss", "depth"], EPS, at)
        data["runs"][pre] = {"steps": steps, "optimal_loss": lstar, "best": rows,
                             "n_diverged": int(res.diverged.sum()), "n_configs": len(cfgs)}
        fig = f"fig3_{pre}.png" if pre != PREPROCESSINGS[0] else "fig3.png"
        _plot(res, opt, rows, out / fig, f"Ethanol ({pre}), best lr per depth")
        data["figures"].append(fig)
        data["claims"] += _claims(pre, steps, rows)
    data["setup"] = (f"GD, N(0, 0.01^2) init, width 1, depths 1/2/3, l2 and l4, lr grid "
                     f"{plan[0][2]}; best lr per (loss, depth) by the lowest mean log10(L - L*) "
                     f"over the run; steps per preprocessing: "
                     f"{ {p: s for p, s, _ in plan} }.")
    return save_json(out, NAME, data)


def _claims(pre, steps, rows):
    gap = {(r["loss"], r["depth"]): r["final_gap"] for r in rows}
    lr = {(r["loss"], r["depth"]): r["lr"] for r in rows}
    claims = []
    for loss in ("l2", "l4"):
        r2 = gap[(loss, 2)] / gap[(loss, 1)]
        r3 = gap[(loss, 3)] / gap[(loss, 1)]
        measured = (f"[{pre}] after {steps:,} steps, best L - L*: depth 1 {fmt(gap[(loss, 1)])} "
                    f"(lr {lr[(loss, 1)]:g}), depth 2 {fmt(gap[(loss, 2)])} (lr "
                    f"{lr[(loss, 2)]:g}), depth 3 {fmt(gap[(loss, 3)])} (lr {lr[(loss, 3)]:g}); "
                    f"ratio to depth 1: {r2:.2f}, {r3:.2f}")
        if loss == "l2":
            claims.append({"claim": "with l2 loss, depth (slightly) hinders optimization",
                           "measured": measured,
                           "verdict": verdict(min(r2, r3) >= 1, min(r2, r3) >= L2_PARTLY)})
        else:
            claims.append({"claim": "with l4 loss it [depth] leads to significant acceleration",
                           "measured": measured,
                           "verdict": verdict(max(r2, r3) <= L4_SIGNIFICANT, min(r2, r3) < 1)})
    return claims


def _plot(res, opt, rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, loss in zip(axes, ("l2", "l4")):
        idx = [r["config_index"] for r in rows if r["loss"] == loss]
        res.subset(idx).plot(ax=ax, optimal=opt[idx], title=f"{loss} loss",
                             labels=[f"depth {res.configs[i].depth}, lr {res.configs[i].lr:g}"
                                     for i in idx])
    fig.suptitle(title)
    finish_figure(fig, path)


if __name__ == "__main__":
    from gpulinear.report import experiment_cli
    sys.exit(experiment_cli(sys.modules[__name__]))
