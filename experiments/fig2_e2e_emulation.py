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
from gpulinear import analysis
from gpulinear.report import (NOT_TESTABLE, ethanol_problem, finish_figure, fmt, optimal_losses,
                              save_json, timed_train, verdict)

NAME = "fig2"
TITLE = "Deep nets (widths 1, 100) vs the end-to-end rule Eq 12, N = 2, 3 (Fig 2)"
LR = 1e-3
# Verdict rules, fixed before any run: curves are compared by the largest relative difference of
# L - L* over the records where the reference curve has moved (L - L* below 90% of its start).
# emulation holds if <= 10% for every depth and loss, partly if <= 30%; width likewise.
CLOSE, ROUGH = 0.10, 0.30
# Escape and agreement are judged apart (issue 10; measure corrected in issue 16): the escape
# step (analysis.escape_steps: L - L* below 90% of its start) depends on the init scale, hence
# on width at depth 3; after it, curves are compared where BOTH are past their drop
# (analysis.agreement_after_drop: within 2x of their final gap), so a time offset shorter than a
# record during the drop is not read as disagreement (the old measure read 58 % there).  Eq 12
# starts from the product of the very net it is compared with.  Escape steps agree if
# |a - b| / b <= CLOSE (holds), <= ROUGH (partly).
MODES = {"tiny": 100, "quick": 20_000, "full": 100_000}


def config_steps(mode: str) -> dict:
    return {"l2": 12 * MODES[mode], "l4": 12 * MODES[mode]}


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
            # Eq 12 from each net's own initial product: like for like
            cfgs += [gl.Config(depth=depth, width=w, lr=LR, loss=loss, seed=seed,
                               parameterization="e2e", label=f"Eq 12 from width {w}, N = {depth}")
                     for w in (1, wide)]
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
    # L - L* with the divergence rule applied (inf once diverged): every measure reads this
    gap = analysis.gap_curves(res.loss, opt, res.diverged_at, res.steps)
    rows, worst_e2e, worst_width, moved_all = [], 0.0, 0.0, True
    worst_esc_e2e = worst_esc_width = worst_ratio = 0.0
    for n in range(0, n_main, 4):
        w1, w100, e1, e100 = n, n + 1, n + 2, n + 3   # deep width 1 / wide, Eq 12 from each
        moved_all &= bool(np.isfinite(analysis.escape_steps(res.steps, gap[[e1, e100]])).all())
        esc = analysis.escape_steps(res.steps, gap[[w1, w100, e1, e100]])
        ratios = {name: analysis.level_step_ratios(res.steps, gap[a], gap[b])[1]
                  for name, a, b in (("e2e_vs_width1", w1, e1), ("e2e_vs_wide", w100, e100),
                                     ("width1_vs_wide", w100, w1))}
        row = {"loss": cfgs[n].loss, "depth": cfgs[n].depth,
               "final_gap": {"width1": float(gap[w1, -1]), "wide": float(gap[w100, -1]),
                             "e2e_width1": float(gap[e1, -1]), "e2e_wide": float(gap[e100, -1])},
               "escape_step": dict(zip(("width1", "wide", "e2e_width1", "e2e_wide"),
                                       (_int(e) for e in esc))),
               # after both curves are past their drop (analysis.agreement_after_drop)
               "after_escape": {"e2e_vs_width1": analysis.agreement_after_drop(gap[w1], gap[e1]),
                                "e2e_vs_wide": analysis.agreement_after_drop(gap[w100], gap[e100]),
                                "width1_vs_wide": analysis.agreement_after_drop(gap[w100], gap[w1])},
               # steps to reach each level below the escapes, as a ratio (one record of slack)
               "level_step_ratio_max": {k: float(np.max(v)) if len(v) else float("inf")
                                        for k, v in ratios.items()},
               "escape_difference": {
                   "e2e_vs_width1": _esc_diff(esc[0], esc[2]),
                   "e2e_vs_wide": _esc_diff(esc[1], esc[3]),
                   "width1_vs_wide": _esc_diff(esc[0], esc[1])}}
        rows.append(row)
        worst_e2e = max(worst_e2e, row["after_escape"]["e2e_vs_width1"],
                        row["after_escape"]["e2e_vs_wide"])
        worst_width = max(worst_width, row["after_escape"]["width1_vs_wide"])
        worst_esc_e2e = max(worst_esc_e2e, row["escape_difference"]["e2e_vs_width1"],
                            row["escape_difference"]["e2e_vs_wide"])
        worst_esc_width = max(worst_esc_width, row["escape_difference"]["width1_vs_wide"])
        worst_ratio = max(worst_ratio, row["level_step_ratio_max"]["e2e_vs_wide"])
    worst_balanced, balanced_rows = 0.0, []
    for n in range(n_main, len(cfgs), 2):
        deep, e2e = n, n + 1
        gap_b = rel_gap(gap[deep], gap[e2e], gap[e2e] < 0.9 * gap[e2e, 0])
        balanced_rows.append({"loss": cfgs[n].loss, "depth": cfgs[n].depth, "e2e_vs_deep": gap_b})
        worst_balanced = max(worst_balanced, gap_b)
    _plot(res.subset(range(n_main)), opt[:n_main], out / "fig2.png")
    esc = {r["loss"] + str(r["depth"]): r["escape_step"] for r in rows}

    def esc_text(*names):
        return "; ".join(f"{r['loss']} N={r['depth']}: " + " vs ".join(
            fmt(r["escape_step"][a]) for a in names) for r in rows)

    after = "; ".join(f"{r['loss']} N={r['depth']}: width 1 "
                      f"{r['after_escape']['e2e_vs_width1']:.3g}, width {wide} "
                      f"{r['after_escape']['e2e_vs_wide']:.3g} (steps-to-level ratio "
                      f"{r['level_step_ratio_max']['e2e_vs_width1']:.3g} / "
                      f"{r['level_step_ratio_max']['e2e_vs_wide']:.3g}), final L-L* "
                      f"{fmt(r['final_gap']['e2e_width1'])}" for r in rows)
    emulate = "the preconditioning schemes reliably emulate deep network optimization"
    width = ("for a given depth, setting size of hidden layers to 1 (scalars) or 100 yielded "
             "similar convergence")
    def pairs(kind, *keys):
        """{'l2 N=2 width 1': value, ...} of one measure over every row."""
        return {f"{r['loss']} N={r['depth']} {label}": r[kind][k] for r in rows
                for k, label in keys}

    e2e_pairs = (("e2e_vs_width1", "width 1"), ("e2e_vs_wide", f"width {wide}"))
    width_pairs = (("width1_vs_wide", f"width 1 vs {wide}"),)
    claims = [
        {"claim": emulate + " [after the escape]",
         "measured": f"after {steps:,} steps at lr {LR:g}, Eq 12 started from each net's own "
                     f"initial product; largest relative difference of L - L* where both curves "
                     f"are past their drop (within 2x of their final gap), deep net vs Eq 12: "
                     f"{after}",
         "verdict": _judged(worst_e2e, moved_all),
         "reason": _reason(pairs("after_escape", *e2e_pairs), "past the drop, deep net vs Eq 12",
                           steps)},
        {"claim": emulate + " [escape time]",
         "measured": "escape step (L - L* below 90% of start), deep width 1 vs Eq 12 from it, "
                     f"deep width {wide} vs Eq 12 from it: "
                     + "; ".join(f"{r['loss']} N={r['depth']}: {fmt(r['escape_step']['width1'])}"
                                 f" vs {fmt(r['escape_step']['e2e_width1'])}, "
                                 f"{fmt(r['escape_step']['wide'])} vs "
                                 f"{fmt(r['escape_step']['e2e_wide'])}" for r in rows),
         "verdict": _judged(worst_esc_e2e),
         "reason": _reason(pairs("escape_difference", *e2e_pairs), "escape step, deep net vs "
                           "Eq 12", steps)},
        {"claim": width + " [after the escape]",
         "measured": f"largest relative difference of L - L*, width 1 vs {wide}, where both are "
                     "past their drop (inf: a curve never got there): " + ", ".join(
             f"{r['loss']} N={r['depth']}: {r['after_escape']['width1_vs_wide']:.3g}"
             for r in rows),
         "verdict": _judged(worst_width),
         "reason": _reason(pairs("after_escape", *width_pairs), "past the drop, width 1 vs "
                           f"{wide}", steps)},
        {"claim": width + " [escape time]",
         "measured": f"escape step, width 1 vs width {wide} (depends on the init scale of the "
                     f"product, so on width): {esc_text('width1', 'wide')}",
         "verdict": _judged(worst_esc_width),
         "reason": _reason(pairs("escape_difference", *width_pairs), f"escape step, width 1 vs "
                           f"{wide}", steps)},
    ]
    claims.append({
        "claim": "[Theorem 1] Assume ... their initial values (time t_0) satisfy [Eq 7] ... Then, "
                 "the end-to-end weight matrix W_e is governed by [Eq 8]",
        "measured": "with balanced factors (Eq 7 exact, end-to-end entries N(0, 0.01^2)), largest "
                    "relative difference of L - L* between deep net and Eq 12: " + ", ".join(
                        f"{r['loss']} N={r['depth']}: {r['e2e_vs_deep']:.3g}"
                        for r in balanced_rows),
        "verdict": verdict(worst_balanced <= CLOSE, worst_balanced <= ROUGH),
        "reason": _reason({f"{r['loss']} N={r['depth']}": r["e2e_vs_deep"]
                           for r in balanced_rows}, "balanced factors, deep net vs Eq 12",
                          steps)})
    def most(x, fmt=".2g"):
        return f"at most {x:{fmt}}" if np.isfinite(x) else "(unreadable: a curve never escaped)"

    evidence = [
        f"Eq 12 vs the deep net (each from the same initial product): past the drop the curves "
        f"differ by {most(worst_e2e)} (relative L - L*), their escapes by "
        f"{most(worst_esc_e2e)} (relative), the steps to each level at width {wide} by a factor "
        f"{most(worst_ratio, '.3g')}. Escape steps per depth and width: {esc_text('width1', 'wide')} "
        f"(width 1 vs {wide}); unbalanced N(0, 0.01^2) factors at width 1 start the product "
        f"~100x smaller at depth 3, which delays the escape there and only there.",
        f"Width 1 vs {wide}: past the drop {most(worst_width)} apart, escapes "
        f"{most(worst_esc_width)} apart (relative).",
        f"Balanced factors (Theorem 1's premise): deep net and Eq 12 within "
        f"{worst_balanced:.2g} over the whole run."]
    data = {"claims": claims, "figures": ["fig2.png"], "comparisons": rows, "escape_steps": esc,
            "evidence": evidence,
            "balanced": balanced_rows,
            "optimal_loss": lstar,
            "setup": f"Ethanol, z-scored features; GD lr {LR:g}, N(0, 0.01^2) init, {steps:,} "
                     "steps; Eq 12 starts from the product of each net's own initial factors (width 1 and the wide one). "
                     "N(0, 0.01^2) factors are far from balanced (||W_1||^2 ~ 128 w_2^2), which "
                     "is why a balanced-init pair is run as well."}
    return save_json(out, NAME, data)


def _int(x):
    return -1 if not np.isfinite(x) else int(x)


def _esc_diff(a, b) -> float:
    """|a - b| / b of two escape steps (inf if either never escaped)."""
    if not (np.isfinite(a) and np.isfinite(b)):
        return float("inf")
    return abs(a - b) / max(b, 1.0)


def _judged(worst, moved_all=True):
    """The CLOSE / ROUGH rule on a worst relative difference; a comparison with a curve that
    never escaped within the run (worst = inf) is not testable at the run's length."""
    if not np.isfinite(worst):
        return NOT_TESTABLE
    return verdict(worst <= CLOSE and moved_all, worst <= ROUGH)


def _reason(values: dict, what: str, steps: int) -> str:
    """One sentence: the worst relative difference of a measure and where it is, against the
    CLOSE / ROUGH rule (or which curve never got there)."""
    never = [k for k, v in values.items() if not np.isfinite(v)]
    if never:
        return (f"{what}: {', '.join(never)} never got past the drop within {steps:,} steps, so "
                f"the comparison cannot be read there")
    where = max(values, key=values.get)
    return (f"{what}: worst relative difference {values[where]:.2g} ({where}); holds if every "
            f"one is <= {CLOSE:.0%}, partly if <= {ROUGH:.0%}")


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
