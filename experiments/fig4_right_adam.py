"""Figure 4-right: Adam at lr 1e-3 (TensorFlow's default) on depths 1, 2, 3, l4.

Paper: "Notice that depth improves speed, suggesting that the acceleration of
overparameterization may be somewhat orthogonal to explicit acceleration methods."  The lr is
fixed by the paper ("learning rates set per Adam's default in TensorFlow"), so no lr search and
no selection rule; what it leaves open is the data (features x target scale, protocol.py) and
whose Adam: TensorFlow 1 adds eps after the bias correction is folded into the lr (eps_hat),
torch.optim before (optim.semantics).  Every (data, semantics) variant is judged apart.
"""
from __future__ import annotations

import sys
from pathlib import Path

import gpulinear as gl
from gpulinear import protocol
from gpulinear.optim import semantics
from gpulinear.report import (FASTER, fmt, gap_curve, optimal_losses, save_json,
                              seed_speedups, speedup_text, spread_text, timed_train, verdict)

NAME = "fig4_right"
TITLE = "Adam (lr 1e-3) on depths 1/2/3, l4 (Fig 4-right)"
DATA = (("zscore", 1.0), ("maxabs", 1.0), ("zscore", 10.0))
FRAMEWORKS = ("torch", "tf1")
AXES = ("data", "semantics")
CLAIM = "depth improves speed [of Adam]"
MODES = {"tiny": {"steps": 300, "seeds": 2, "data": DATA[:1]},
         "quick": {"steps": 20_000, "seeds": 1, "data": DATA},
         "full": {"steps": 100_000, "seeds": 3, "data": DATA}}
# Verdict rule, fixed before any paper-length run: per variant, m2, m3 = median over seeds of the
# median speed-up (analysis.speedups) of Adam on depth 2, 3 over Adam on depth 1 (lr 1e-3, beta
# 0.9/0.999, eps 1e-8: both frameworks' defaults); holds if both > FASTER, partly if one is.


def config_steps(mode: str) -> dict:
    m = MODES[mode]
    return {"l4": 3 * len(FRAMEWORKS) * len(m["data"]) * m["seeds"] * m["steps"]}


def _judge(m2, m3) -> str:
    return verdict(min(m2, m3) > FASTER, max(m2, m3) > FASTER)


def run(out: Path, quick: bool = True, backend: str = "auto", tiny: bool = False, seed: int = 0,
        scale: float = 1.0):
    out = Path(out)
    mode = "tiny" if tiny else ("quick" if quick else "full")
    m = MODES[mode]
    steps = max(10, int(m["steps"] * scale))
    seeds = [seed + s for s in range(m["seeds"])]
    variants, lines, runs = {}, [], {}
    medians = {2: [], 3: []}          # per (variant, seed): the numbers behind "why"
    for features, y_scale in m["data"]:
        label = protocol.data_label(features, y_scale)
        X, y = protocol.ethanol_variant(features, y_scale)
        lstar = optimal_losses(X, y, ["l4"])["l4"]
        cfgs = [gl.Config(depth=d, lr=1e-3, optimizer="adam", loss="l4", seed=s,
                          label=f"{fw}, depth {d}", **semantics(fw, "adam"))
                for fw in FRAMEWORKS for s in seeds for d in (1, 2, 3)]
        res = timed_train(f"fig4_right {label}", X, y, cfgs, steps,
                          log_every=max(1, steps // 400), backend=backend)
        res.save(out / f"fig4_right_{features}_y{y_scale:g}")
        per_fw = []
        for k, fw in enumerate(FRAMEWORKS):
            idx = {d: [k * len(seeds) * 3 + j * 3 + d - 1 for j in range(len(seeds))]
                   for d in (1, 2, 3)}
            curves = {d: [gap_curve(res, i, lstar) for i in idx[d]] for d in (1, 2, 3)}

            def judge(n, curves=curves):
                med = [protocol.med(protocol.seed_medians(
                    res.steps[:n], [c[:n] for c in curves[1]], [c[:n] for c in curves[d]]))
                    for d in (2, 3)]
                return _judge(*med)

            variants[(label, fw)] = protocol.settled(judge, res.steps, mode)
            sp = {d: seed_speedups(res.steps, curves[1], curves[d]) for d in (2, 3)}
            medians[2] += sp[2][1]
            medians[3] += sp[3][1]
            gap = [float(curves[d][0][-1]) for d in (1, 2, 3)]
            runs[f"{label}, {fw}"] = {f"depth{d}": {"per_seed_medians": sp[d][1],
                                                    "levels_seed0": sp[d][0][0]} for d in (2, 3)}
            runs[f"{label}, {fw}"]["final_gap_seed0"] = gap
            per_fw.append(f"{fw}: depth 2 {spread_text(sp[2][1])} (levels, seed {seed}: "
                          f"{speedup_text(sp[2][0][0])}), depth 3 {spread_text(sp[3][1])}; "
                          f"final L - L* d1/d2/d3 {fmt(gap[0])}/{fmt(gap[1])}/{fmt(gap[2])}")
            if (features, y_scale, fw) == (*DATA[0], "tf1"):
                first = [idx[d][0] for d in (1, 2, 3)]
                res.subset(first).plot(optimal=lstar, path=out / "fig4_right.png",
                                       title=f"Adam (TF 1), lr 1e-3, l4, {label}, seed {seed}")
                import matplotlib.pyplot as plt
                plt.close("all")
        lines.append(f"[{label}, {steps:,} steps, {len(seeds)} seed(s)] median speed-up over "
                     f"depth 1 at the L - L* depth 1 reaches at 10/25/50/100% of the run: "
                     + "; ".join(per_fw))
    claim = protocol.claim_record(CLAIM, variants, AXES, " || ".join(lines), mode=mode,
                                  needs="the paper's 100,000 steps (--full)")
    size = (f"depth 2 {protocol.span(medians[2])}, depth 3 {protocol.span(medians[3])} over "
            f"depth 1")
    claim["reason"] += (f"; {size} across the variants and seeds (rule: holds if both > "
                        f"{FASTER:g}x, partly if one is)")
    return save_json(out, NAME, {
        "claims": [claim], "figures": ["fig4_right.png"], "mode": mode, "runs": runs,
        "evidence": [f"{CLAIM}: {claim['verdict']} ({claim['reason']})."],
        "setup": f"Ethanol, data {[protocol.data_label(*d) for d in m['data']]}; Adam lr 1e-3, "
                 f"beta 0.9/0.999, eps 1e-8 with torch.optim's and TensorFlow 1's update "
                 f"({ {fw: semantics(fw, 'adam') for fw in FRAMEWORKS} }); N(0, 0.01^2) init, "
                 f"{steps:,} steps, seeds {seeds}; the lr is the paper's (no search)."})


if __name__ == "__main__":
    from gpulinear.report import experiment_cli
    sys.exit(experiment_cli(sys.modules[__name__]))
