"""Claim computations of the reproduce report, and each Ethanol experiment in tiny mode."""
import json

import numpy as np
import pytest

import gpulinear as gl
from gpulinear.cli import main
from gpulinear.report import (EXPERIMENTS, VERDICTS, best_per_model, gaps_at, load_experiment,
                              steps_to_reach, verdict)


def test_steps_to_reach_known_curves():
    steps = np.array([0, 10, 20, 30])
    curves = np.array([[1.0, 0.5, 0.2, 0.05], [1.0, 0.9, np.inf, np.nan], [0.01, 0.01, 0, 0]])
    got = steps_to_reach(steps, curves, [0.5, 0.1])
    np.testing.assert_array_equal(got, [[10, 30], [-1, -1], [0, 0]])


def test_best_per_model_picks_the_fastest_lr():
    X, y = gl.datasets.synthetic_regression(m=60, d=4, seed=1)
    cfgs = gl.grid(depth=[1, 2], lr=[1e-3, 3e-2, 1e-1, 50.0], init_scale=0.2)
    res = gl.train(X, y, cfgs, loss="l2", steps=300, log_every=10, backend="numpy")
    lstar = gl.optimal_loss(X, y, "l2")
    rows = best_per_model(res, lstar, ["depth"], (0.1,), [100])
    assert [r["depth"] for r in rows] == [1, 2]
    gap = res.loss - lstar
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.nanmean(np.log10(np.where(gap > 0, gap, np.nan)), axis=1)
    for r in rows:
        same = [i for i, c in enumerate(cfgs) if c.depth == r["depth"] and not res.diverged[i]]
        assert r["config_index"] == same[int(np.argmin(auc[same]))]
        assert r["lr"] != 50.0 and not r["diverged"]
        assert r["final_gap"] == pytest.approx(gap[r["config_index"], -1])
    assert gaps_at(res, lstar, [300])[cfgs.index(gl.Config(depth=1, lr=50.0, init_scale=0.2)), 0] \
        == np.inf


def test_verdict_words():
    assert verdict(True) == "holds" and verdict(False, True) == "partly"
    assert verdict(False) == "does not hold"


@pytest.mark.parametrize("name", ["fig2", "fig3", "fig4_left", "fig4_right", "fig5_left"])
def test_experiment_tiny_writes_its_claims(name, tmp_path):
    module = load_experiment(name)
    data = module.run(tmp_path, quick=True, backend="numpy", tiny=True)
    doc = json.loads((tmp_path / f"{module.NAME}.json").read_text())
    assert doc["claims"] and doc["figures"] and doc["setup"]
    for claim in doc["claims"]:
        assert claim["verdict"] in VERDICTS and claim["claim"] and claim["measured"]
    for fig in doc["figures"]:
        assert (tmp_path / fig).stat().st_size > 5000
    assert data["claims"] == doc["claims"]


def test_reproduce_command_writes_report(tmp_path, capsys):
    assert main(["reproduce", "fig4_right", "--tiny", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "| fig4_right |" in report and "TINY" in report
    assert "fig4_right/fig4_right.png" in report
    capsys.readouterr()
    assert main(["reproduce", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in EXPERIMENTS)
    with pytest.raises(SystemExit, match="unknown experiment"):
        main(["reproduce", "nope", "--tiny", "--out", str(tmp_path)])
