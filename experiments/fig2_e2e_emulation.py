"""Figure 2: GD on depth-2/3 nets (hidden widths 1 and 100) against the end-to-end rule (Eq 12).

Paper: "the preconditioning schemes reliably emulate deep network optimization" and "the
negligible effect of network width - for a given depth, setting size of hidden layers to 1
(scalars) or 100 yielded similar convergence".  lr 1e-3 as in the paper, l2 and l4.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import gpulinear as gl
from gpulinear.report import (NOT_TESTABLE, ethanol_problem, finish_figure, fmt, optimal_losses,
                              save_json, timed_train, verdict)

NAME = "fig2"
TITLE = "Deep nets (widths 1, 100) vs the end-to-end rule Eq 12, N = 2, 3 (Fig 2)"
LR = 1e-3
# Verdict rules, fixed before any run: curves are compared by the largest relative difference of
# L - L* over the records where the reference curve has moved (L - L* below 90% of its start).
# emulation holds if <= 10% for every depth and loss, partly if <= 30%; width likewise.
CLOSE, ROUGH = 0.10, 0.30
# Escape and agreement are judged apart (issue 10): the escape step (first record with L - L*
# below 90% of its start) depends on the init scale, hence on width at depth 3; after it, curves
# are compared shifted to a common escape, max relative difference of L - L* over the records
# both have.  Escape steps agree if |a - b| / b <= CLOSE (holds), <= ROUGH (partly).
MODES = {"tiny": 100, "quick": 20_000, "full": 100_000}


def config_steps(mode: str) -> dict:
    return {"l2": 10 * MODES[mode], "l4": 10 * MODES[mode]}


def escape_index(gap) -> int:
    """Record index of the escape from the start (gap below 90% of gap[0]); -1 if never."""
    hit = np.isfinite(gap) & (gap < 0.9 * gap[0])
    return int(np.argmax(hit)) if hit.any() else -1


def post_escape_gap(a, b) -> float:
    """max |a - b| / b over the records after each curve's own escape, aligned at it (inf if
    either never escaped).  Records must be evenly spaced, as train()'s log_every makes them
    (the last record, possibly off the spacing, is left out)."""
    ia, ib = escape_index(a), escape_index(b)
    if ia < 0 or ib < 0:
        return float("inf")
    n = min(len(a) - 1 - ia, len(b) - 1 - ib)
    if n <= 0:
        return float("inf")
    a, b = a[ia:ia + n], b[ib:ib + n]
    return float(np.max(np.abs(a - b) / b))


def escape_difference(steps, a, b) -> float:
    """|escape(a) - escape(b)| / escape(b) in steps (inf if either never escaped)."""
    ia, ib = escape_index(a), escape_index(b)
    if ia < 0 or ib < 0:
        return float("inf")
    return abs(float(steps[ia]) - float(steps[ib])) / max(float(steps[ib]), 1.0)


def rel_gap(a, b, moved):
    """max |a - b| / b over the records in `moved` (inf if nothing moved)."""
    if not moved.any():
        return float("inf")
    return float(np.max(np.abs(a[moved] - b[moved]) / b[moved]))


def run(out: Path, quick: bool = True, backend: str = "auto", tiny: bool = False, seed: int = 0,
        scale: float = 1.0):
    out = Path(out)
    steps = max(10, int(MODES["tiny" if tiny else ("quick" if quick else "full")] * scale))
    wide = 10 if tiny else 100          # tiny (CI smoke) keeps the wide net small
    X, y = ethanol_problem("zscore")
    lstar = optimal_losses(X, y, ["l2", "l4"])
    cfgs = []
    for loss in ("l2", "l4"):
        for depth in (2, 3):
            cfgs += [gl.Config(depth=depth, width=w, lr=LR, loss=loss, seed=seed,
                               label=f"depth {depth}, width {w}") for w in (1, wide)]
            cfgs.append(gl.Config(depth=depth, width=1, lr=LR, loss=loss, seed=seed,
                                  parameterization="e2e", label=f"Eq 12, N = {depth}"))
    # Theorem 1's premise: balanced factors (Eq 7 exact) and the e2e rule from their product
    balanced = [gl.Config(depth=depth, width=1, lr=LR, loss=loss, seed=seed, init="balanced",
                          parameterization=par, label=f"balanced, {name} N = {depth}")
                for loss in ("l2", "l4") for depth in (2, 3)
                for par, name in (("deep", "depth"), ("e2e", "Eq 12,"))]
    n_main = len(cfgs)
    cfgs += balanced
    res = timed_train("fig2", X, y, cfgs, steps, log_every=max(1, steps // 400), backend=backend)
    res.save(out / "fig2")
    opt = np.array([lstar[c.loss] for c in cfgs])
    gap = res.loss - opt[:, None]
    rows, worst_e2e, worst_width, moved_all = [], 0.0, 0.0, True
    worst_esc_e2e = worst_esc_width = 0.0
    for n in range(0, n_main, 3):
        w1, w100, e2e = n, n + 1, n + 2      # width 1, the wide net, Eq 12
        moved = gap[e2e] < 0.9 * gap[e2e, 0]
        moved_all &= bool(moved.any())
        row = {"loss": cfgs[n].loss, "depth": cfgs[n].depth,
               "e2e_vs_width1": rel_gap(gap[w1], gap[e2e], moved),
               "e2e_vs_wide": rel_gap(gap[w100], gap[e2e], moved),
               "width1_vs_wide": rel_gap(gap[w100], gap[w1], gap[w1] < 0.9 * gap[w1, 0]),
               "final_gap": {"width1": float(gap[w1, -1]), "wide": float(gap[w100, -1]),
                             "e2e": float(gap[e2e, -1])},
               "moved_fraction": float(1 - gap[e2e, -1] / gap[e2e, 0]),
               "escape_step": {name: int(res.steps[i]) if i >= 0 else -1 for name, i in
                               (("width1", escape_index(gap[w1])),
                                ("wide", escape_index(gap[w100])),
                                ("e2e", escape_index(gap[e2e])))},
               "after_escape": {"e2e_vs_width1": post_escape_gap(gap[w1], gap[e2e]),
                                "e2e_vs_wide": post_escape_gap(gap[w100], gap[e2e]),
                                "width1_vs_wide": post_escape_gap(gap[w100], gap[w1])},
               "escape_difference": {
                   "e2e_vs_width1": escape_difference(res.steps, gap[w1], gap[e2e]),
                   "width1_vs_wide": escape_difference(res.steps, gap[w100], gap[w1])}}
        rows.append(row)
        worst_e2e = max(worst_e2e, row["after_escape"]["e2e_vs_width1"])
        worst_width = max(worst_width, row["after_escape"]["width1_vs_wide"])
        worst_esc_e2e = max(worst_esc_e2e, row["escape_difference"]["e2e_vs_width1"])
        worst_esc_width = max(worst_esc_width, row["escape_difference"]["width1_vs_wide"])
    worst_balanced, balanced_rows = 0.0, []
    for n in range(n_main, len(cfgs), 2):
        deep, e2e = n, n + 1
        gap_b = rel_gap(gap[deep], gap[e2e], gap[e2e] < 0.9 * gap[e2e, 0])
        balanced_rows.append({"loss": cfgs[n].loss, "depth": cfgs[n].depth, "e2e_vs_deep": gap_b})
        worst_balanced = max(worst_balanced, gap_b)
    _plot(res.subset(range(n_main)), opt[:n_main], out / "fig2.png")
    esc = {r["loss"] + str(r["depth"]): r["escape_step"] for r in rows}

    def esc_text(a, b):
        return "; ".join(f"{r['loss']} N={r['depth']}: {fmt(r['escape_step'][a])} vs "
                         f"{fmt(r['escape_step'][b])}" for r in rows)

    after = "; ".join(f"{r['loss']} N={r['depth']}: width 1 "
                      f"{r['after_escape']['e2e_vs_width1']:.3g}, width {wide} "
                      f"{r['after_escape']['e2e_vs_wide']:.3g}, final L-L* "
                      f"{fmt(r['final_gap']['e2e'])}" for r in rows)
    emulate = "the preconditioning schemes reliably emulate deep network optimization"
    width = ("for a given depth, setting size of hidden layers to 1 (scalars) or 100 yielded "
             "similar convergence")
    claims = [
        {"claim": emulate + " [after the escape]",
         "measured": f"after {steps:,} steps at lr {LR:g}, curves aligned at their own escape "
                     f"(L - L* < 90% of start), largest relative difference of L - L* between "
                     f"deep net and Eq 12: {after}",
         "verdict": _judged(worst_e2e, moved_all)},
        {"claim": emulate + " [escape time]",
         "measured": f"escape step, deep width 1 vs Eq 12: {esc_text('width1', 'e2e')}",
         "verdict": _judged(worst_esc_e2e)},
        {"claim": width + " [after the escape]",
         "measured": f"largest relative difference of L - L*, width 1 vs {wide}, aligned at their "
                     "escapes (inf: a curve never escaped): " + ", ".join(
             f"{r['loss']} N={r['depth']}: {r['after_escape']['width1_vs_wide']:.3g}"
             for r in rows),
         "verdict": _judged(worst_width)},
        {"claim": width + " [escape time]",
         "measured": f"escape step, width 1 vs width {wide} (depends on the init scale of the "
                     f"product, so on width): {esc_text('width1', 'wide')}",
         "verdict": _judged(worst_esc_width)},
    ]
    claims.append({
        "claim": "[Theorem 1] Assume ... their initial values (time t_0) satisfy [Eq 7] ... Then, "
                 "the end-to-end weight matrix W_e is governed by [Eq 8]",
        "measured": "with balanced factors (Eq 7 exact, end-to-end entries N(0, 0.01^2)), largest "
                    "relative difference of L - L* between deep net and Eq 12: " + ", ".join(
                        f"{r['loss']} N={r['depth']}: {r['e2e_vs_deep']:.3g}"
                        for r in balanced_rows),
        "verdict": verdict(worst_balanced <= CLOSE, worst_balanced <= ROUGH)})
    evidence = [
        f"Eq 12 vs the deep net: after their escapes the curves differ by at most "
        f"{worst_e2e:.2g} (relative L - L*), their escapes by {worst_esc_e2e:.2g}; from unbalanced "
        f"N(0, 0.01^2) factors the rule emulates the path more than the timing of the escape.",
        f"Width 1 vs {wide}: after the escape at most {worst_width:.2g} apart, escapes "
        f"{worst_esc_width:.2g} apart; width changes the init scale of the product, so mainly "
        f"when the curve starts to move.",
        f"Balanced factors (Theorem 1's premise): deep net and Eq 12 within "
        f"{worst_balanced:.2g} over the whole run."]
    data = {"claims": claims, "figures": ["fig2.png"], "comparisons": rows, "escape_steps": esc,
            "evidence": evidence,
            "balanced": balanced_rows,
            "optimal_loss": lstar,
            "setup": f"Ethanol, z-scored features; GD lr {LR:g}, N(0, 0.01^2) init, {steps:,} "
                     "steps; Eq 12 starts from the product of the width-1 net's initial factors. "
                     "N(0, 0.01^2) factors are far from balanced (||W_1||^2 ~ 128 w_2^2), which "
                     "is why a balanced-init pair is run as well."}
    return save_json(out, NAME, data)


def _judged(worst, moved_all=True):
    """The CLOSE / ROUGH rule on a worst relative difference; a comparison with a curve that
    never escaped within the run (worst = inf) is not testable at the run's length."""
    if not np.isfinite(worst):
        return NOT_TESTABLE
    return verdict(worst <= CLOSE and moved_all, worst <= ROUGH)


def _plot(res, opt, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, loss in zip(axes, ("l2", "l4")):
        idx = [i for i, c in enumerate(res.configs) if c.loss == loss]
        res.subset(idx).plot(ax=ax, optimal=opt[idx], title=f"{loss} loss, lr {LR:g}")
    finish_figure(fig, path)


if __name__ == "__main__":
    from gpulinear.report import experiment_cli
    sys.exit(experiment_cli(sys.modules[__name__]))
