"""gpulinear.analysis: the verdict rules on synthetic curves, including the failure modes that
misled earlier reports (a one-record offset during a steep drop, a touch-and-bounce, a finite
1e199 loss, a plateau that overtakes)."""
import numpy as np
import pytest

from gpulinear import analysis as A

STEPS = np.arange(0, 10_001, 100)


def drop(at, start=1.0, end=0.01, width=200.0, steps=STEPS):
    """A gap curve that sits at `start`, falls steeply around step `at` and flattens at `end`."""
    return end + (start - end) / (1 + np.exp((steps - at) / (width / 8)))


def test_steps_to_first_touch_and_reach_and_stay():
    g = np.array([1, .5, .2, .1, .05, .2, .04, .03, .02, .01])
    s = np.arange(10) * 100
    assert A.steps_to(s, g, 0.05) == 400
    assert A.steps_to(s, g, 0.05, stay=True) == 600          # touched at 400, back up at 500
    assert np.isnan(A.steps_to(s, g, 0.001))                 # never is NaN, not -1
    both = A.steps_to(s, np.stack([g, np.ones(10)]), [0.5, 0.05])
    assert both.shape == (2, 2) and both[0].tolist() == [100, 400] and np.isnan(both[1]).all()
    per_curve = A.steps_to(s, np.stack([g, g]), np.array([[0.5], [0.05]]))
    assert per_curve[:, 0].tolist() == [100, 400]


def test_gap_curves_counts_a_huge_finite_loss_as_diverged():
    loss = np.array([[2.0, 1.0, 1e199, 1e-3], [2.0, 1.5, 1.2, 1.0]])
    g = A.gap_curves(loss, 0.0)
    assert np.isinf(g[0, 2:]).all() and g[0, 1] == 1.0         # dead from 1e199 on, for good
    assert np.isfinite(g[1]).all()
    assert np.isfinite(A.gap_curves(loss, 0.0, factor=np.inf)[0]).all()
    assert np.isfinite(A.gap_curves([[0.0, 1.0, 5.0]], 0.0)).all()   # from 0: no relative ceiling
    flagged = A.gap_curves(loss[1:], 0.0, diverged_at=np.array([200]), steps=np.arange(4) * 100)
    assert np.isfinite(flagged[0, :2]).all() and np.isinf(flagged[0, 2:]).all()


def test_rules_pick_different_winners_and_diverged_never_wins():
    fast_then_stuck = drop(1000, end=0.05)
    slow_but_lower = drop(6000, end=0.001)
    dead = drop(500, end=1e-6)
    dead[50:] = np.inf
    g = np.stack([fast_then_stuck, slow_but_lower, dead])
    lrs = [1.0, 2.0, 3.0]
    win = {r: A.best_by(["m"] * 3, lrs, A.rule_scores(STEPS, g, r, level=0.06))["m"]
           for r in ("mean_log_gap", "final", "steps_to", "reach_and_stay")}
    assert win["final"] == 1 and win["steps_to"] == 0 and win["reach_and_stay"] == 0
    assert 2 not in win.values()
    per_curve = A.rule_scores(STEPS, g[:2], "steps_to", level=np.array([0.06, 0.002]))
    assert np.isfinite(per_curve[:, 0]).all()                  # each reaches its own level
    assert np.isinf(A.rule_scores(STEPS, g[:2], "steps_to", level=0.002)[0, 0])
    with pytest.raises(ValueError, match="level"):
        A.rule_scores(STEPS, g, "steps_to")
    with pytest.raises(ValueError, match="rule"):
        A.rule_scores(STEPS, g, "auc")


def test_speedup_plateau_then_overtakes():
    base = drop(2000, end=0.01)
    model = drop(4000, end=0.001, width=400)         # later start, goes much lower
    rows = A.speedups(STEPS, base, model)
    assert rows[1]["speedup"] < 1                   # the model is still stuck at 25 %
    assert A.median_speedup(rows) < 1
    # at a level only the model reaches, the speed-up is a lower bound
    deep = A.speedups(STEPS, base, model, levels=[0.005])
    assert deep[0]["kind"] == "lower" and deep[0]["text"].startswith(">")
    never = A.speedups(STEPS, base, np.ones_like(base))
    assert all(r["kind"] == "upper" for r in never[1:]) and never[-1]["text"].startswith("<")
    assert A.speedup(np.nan, 500, 10_000) == (20.0, "lower")


def test_one_record_offset_during_a_steep_drop_reads_as_agreement():
    a, b = drop(3000), drop(3100)                    # the same curve, one record later
    raw = np.max(np.abs(a - b) / np.minimum(a, b))  # the old measure: a large "disagreement"
    assert raw > 0.5
    assert A.agreement_after_drop(a, b) < 0.05          # fig2's CLOSE is 0.10
    levels, ratio = A.level_step_ratios(STEPS, a, b)
    assert len(levels) == 8 and np.all(ratio <= 1.0 + 1e-12)
    c = drop(6000)                                   # a real time difference: 2x
    _, ratio_c = A.level_step_ratios(STEPS, a, c)
    assert ratio_c.max() > 1.5
    assert A.agreement_after_drop(a, drop(3000, end=0.02)) > 0.5   # different plateaus differ


def test_escape_steps():
    g = np.stack([drop(3000), np.ones(len(STEPS))])
    esc = A.escape_steps(STEPS, g)
    assert 2500 <= esc[0] <= 3000 and np.isnan(esc[1])


def test_refine_lrs_resolves_to_15_percent():
    grid = [1e-3, 5e-3, 1e-2, 5e-2]
    new = A.refine_lrs(grid, 5e-3)
    assert min(new) > 1e-3 and max(new) < 1e-2 and not set(new) & set(grid)
    assert A.lr_resolution(grid, 5e-3) > 2
    for best in new:
        assert A.lr_resolution(sorted(grid + new), best) <= 1.15


def test_robust_verdict_names_the_deciding_axis():
    axes = ("features", "y scale")
    agree = {("z", 1): "holds", ("m", 1): "holds"}
    assert A.robust_verdict(agree, axes)[0] == "holds"
    split = {("z", 1): "holds", ("z", 10): "holds", ("m", 1): "does not hold",
             ("m", 10): "does not hold"}
    head, reason = A.robust_verdict(split, axes)
    assert head == "depends on features" and "features=z: holds" in reason
    assert "features=m: does not hold" in reason and "(whatever the y scale)" in reason
    assert reason.startswith("2 of 4 variants hold")
    xor = {("z", 1): "holds", ("z", 10): "does not hold", ("m", 1): "does not hold",
           ("m", 10): "holds"}
    head, reason = A.robust_verdict(xor, axes)
    assert head == "depends on features x y scale"
    assert "features=z/y scale=10: does not hold" in reason and "whatever" not in reason
    mixed = {("z", 1, r): "holds" for r in "abcd"} | {("m", 1, "a"): "holds",
                                                       ("m", 1, "b"): "partly",
                                                       ("m", 1, "c"): "partly",
                                                       ("m", 1, "d"): "partly"}
    head, reason = A.robust_verdict(mixed, ("features", "y scale", "rule"))
    assert head == "depends on features x rule"
    # only both axes together decide, over > 6 variants: counts per value of the axis that
    # sorts them best
    assert "features=z: holds; features=m: holds 1, partly 3 (counts over the rule)" in reason
    assert reason.startswith("5 of 8 variants hold")
