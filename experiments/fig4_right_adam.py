"""Figure 4-right: Adam at lr 1e-3 (TensorFlow's default) on depths 1, 2, 3, l4.

Paper: "Notice that depth improves speed, suggesting that the acceleration of
overparameterization may be somewhat orthogonal to explicit acceleration methods."
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import gpulinear as gl
from gpulinear.report import ethanol_problem, fmt, optimal_losses, save_json, verdict

NAME = "fig4_right"
TITLE = "Adam (lr 1e-3) on depths 1/2/3, l4 (Fig 4-right)"
# Verdict rule, fixed before any run: holds if depths 2 and 3 both end below depth 1's L - L*
# (TF's Adam epsilon is 1e-8 as torch's; lr 1e-3 is both defaults); partly if one of them does.


def run(out: Path, quick: bool = True, backend: str = "auto", tiny: bool = False, seed: int = 0):
    out = Path(out)
    steps = 300 if tiny else (20_000 if quick else 100_000)
    X, y = ethanol_problem("zscore")
    lstar = optimal_losses(X, y, ["l4"])["l4"]
    cfgs = gl.grid(depth=[1, 2, 3], lr=1e-3, optimizer="adam", seed=seed)
    res = gl.train(X, y, cfgs, loss="l4", steps=steps, log_every=max(1, steps // 400),
                   backend=backend)
    res.save(out / "fig4_right")
    gap = res.loss[:, -1] - lstar
    quarter = res.loss[:, len(res.steps) // 4] - lstar
    res.plot(optimal=lstar, path=out / "fig4_right.png", title="Adam, lr 1e-3, l4")
    import matplotlib.pyplot as plt
    plt.close("all")
    claims = [{"claim": "depth improves speed [of Adam]",
               "measured": f"after {steps:,} steps L - L*: depth 1 {fmt(gap[0])}, depth 2 "
                           f"{fmt(gap[1])}, depth 3 {fmt(gap[2])} (at {res.steps[len(res.steps) // 4]:,}"
                           f" steps: {fmt(quarter[0])}, {fmt(quarter[1])}, {fmt(quarter[2])})",
               "verdict": verdict(gap[1] < gap[0] and gap[2] < gap[0],
                                  gap[1] < gap[0] or gap[2] < gap[0])}]
    return save_json(out, NAME, {"claims": claims, "figures": ["fig4_right.png"],
                                 "final_gap": gap, "optimal_loss": lstar,
                                 "setup": f"Ethanol z-scored, Adam lr 1e-3 (beta 0.9/0.999, eps "
                                          f"1e-8), N(0, 0.01^2) init, {steps:,} steps."})


if __name__ == "__main__":
    from gpulinear.report import experiment_cli
    sys.exit(experiment_cli(sys.modules[__name__]))
