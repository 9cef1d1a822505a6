"""gpulinear.lrsearch: the refined best lr lands within its stated resolution of the best lr of a
dense scan (the oracle), for every rule; seeds rerun the chosen lrs."""
import numpy as np
import pytest

import gpulinear as gl
from gpulinear import analysis
from gpulinear.lrsearch import lr_search


@pytest.fixture(scope="module")
def problem():
    X, y = gl.datasets.synthetic_regression(200, 6, 1, noise=0.3, seed=3)
    X = X * np.linspace(0.3, 3.0, 6)              # ill-conditioned: a sharp divergence edge
    return X, y, {"l2": gl.optimal_loss(X, y, "l2"), "l4": gl.optimal_loss(X, y, "l4")}


@pytest.mark.parametrize("loss", ["l2", "l4"])
def test_refined_lr_is_within_its_resolution_of_a_dense_scan(problem, loss):
    X, y, lstar = problem
    steps, models = 300, {"d1": dict(depth=1, loss=loss), "d2": dict(depth=2, loss=loss)}
    grid = list(gl.LR_GRID)
    found = lr_search(X, y, models, grid, steps, lambda c: lstar[c.loss], baseline="d1",
                      seeds=(0, 1), log_every=10)
    dense = list(np.geomspace(1e-5, 0.5, 120))
    scan = gl.train(X, y, [gl.Config(**m, lr=lr) for m in models.values() for lr in dense],
                    steps=steps, log_every=10)
    gaps = analysis.gap_curves(scan.loss, lstar[loss], scan.diverged_at, scan.steps)
    for n, key in enumerate(models):
        g = gaps[n * len(dense):(n + 1) * len(dense)]
        for rule in ("mean_log_gap", "final"):
            oracle = dense[analysis.best_by([0] * len(g), dense,
                                            analysis.rule_scores(scan.steps, g, rule))[0]]
            got = found.choice[("refined", rule, key)]
            assert got["resolution"] <= 1.15
            # the dense scan's own spacing adds its half-step (4.5 %) to the tolerance
            assert abs(np.log(got["lr"] / oracle)) <= np.log(1.15 * 1.05), (key, rule, got, oracle)
            assert len(got["gaps"]) == 2                   # seed 0 and the rerun seed 1
    assert found.choice[("grid", "final", "d1")]["resolution"] > 1.4   # the paper's 2x/5x grid
    assert set(found.results) == {"grid", "refined", "seeds"}


def test_steps_to_rule_needs_a_baseline(problem):
    X, y, lstar = problem
    with pytest.raises(ValueError, match="baseline"):
        lr_search(X, y, {"a": dict(depth=1)}, [1e-3], 10, lambda c: lstar["l2"])
