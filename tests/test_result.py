"""Result: table, best (per-model lr selection), save/load round trip, plot."""
import json

import numpy as np
import pytest

import gpulinear as gl


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = X @ rng.normal(size=5) / 3
    cfgs = gl.grid(depth=[1, 2], lr=[1e-3, 1e-2, 5.0], init_scale=0.2)
    return gl.train(X, y, cfgs, loss="l4", steps=200, log_every=20, target=0.05,
                    backend="numpy")


def test_save_load_round_trip(result, tmp_path):
    path = result.save(tmp_path / "run")
    assert path.suffix == ".npz" and (tmp_path / "run.json").exists()
    json.loads((tmp_path / "run.json").read_text())          # plain json, no pickle
    back = gl.Result.load(tmp_path / "run")
    assert back.configs == result.configs
    for name in ("steps", "loss", "diverged_at", "end_to_end", "steps_to_target", "target"):
        np.testing.assert_array_equal(getattr(back, name), getattr(result, name))
    assert back.meta == json.loads(json.dumps(result.meta))


def test_best_picks_the_fastest_live_lr_per_model(result):
    assert result.diverged[[2, 5]].all()
    best = result.best(by="final_loss")
    assert [c.depth for c in best.configs] == [1, 2]
    for c, loss in zip(best.configs, best.final_loss):
        same = [i for i, d in enumerate(result.configs) if d.depth == c.depth]
        assert loss == min(result.final_loss[same])
        assert c.lr != 5.0
    by_target = result.best(by="steps_to_target")
    assert len(by_target.configs) == 2
    with pytest.raises(ValueError, match="by: unknown"):
        result.best(by="speed")
    with pytest.raises(ValueError, match="group: unknown"):
        result.best(group=["dept"])


def test_table_has_one_row_per_config(result):
    rows = result.records()
    assert len(rows) == 6
    assert {"depth", "lr", "final_loss", "diverged_at", "steps_to_target"} <= set(rows[0])
    assert rows[2]["diverged"] and rows[2]["diverged_at"] >= 0


def test_plot_writes_a_png(result, tmp_path):
    ax = result.plot(optimal=0.0, path=tmp_path / "fig.png", title="t")
    assert (tmp_path / "fig.png").stat().st_size > 5000
    assert len(ax.get_lines()) >= 6


def test_concat_restores_the_original_order(result):
    parts = [([4, 1], result.subset([4, 1])), ([0, 5, 2, 3], result.subset([0, 5, 2, 3]))]
    merged = gl.Result.concat(parts, 6)
    assert merged.configs == result.configs
    for name in ("loss", "diverged_at", "end_to_end", "steps_to_target", "target"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(result, name))
    with pytest.raises(ValueError, match="exactly once"):
        gl.Result.concat(parts[:1], 6)


def test_save_keeps_dots_in_names(result, tmp_path):
    result.save(tmp_path / "lr_0.01")
    result.subset([0]).save(tmp_path / "lr_0.05")
    assert len(gl.Result.load(tmp_path / "lr_0.01").configs) == 6
    assert len(gl.Result.load(tmp_path / "lr_0.05.npz").configs) == 1


def test_auc_does_not_penalise_reaching_the_optimum():
    fast = [1.0, 0.1, 0.0, 0.0, 0.0]            # at L* from step 2 on (gap 0 up to rounding)
    slow = [1.0, 0.5, 0.2, 0.1, 0.05]
    res = gl.Result(configs=[gl.Config(lr=0.1), gl.Config(lr=0.01)], steps=np.arange(5),
                    loss=np.array([fast, slow]), diverged_at=np.array([-1, -1]),
                    end_to_end=np.zeros((2, 1, 3)))
    assert res.best_indices(by="auc", group=["depth"]) == [0]


def test_concat_refuses_parts_that_disagree(result):
    with pytest.raises(ValueError, match="lists 2 positions but its Result holds 1"):
        gl.Result.concat([([0, 1], result.subset([0])),
                          ([2, 3, 4, 5], result.subset([2, 3, 4, 5]))], 6)
    untargeted = result.subset([0, 1])
    untargeted.steps_to_target = untargeted.target = None
    with pytest.raises(ValueError, match="some parts have a target"):
        gl.Result.concat([([0, 1], untargeted), ([2, 3, 4, 5], result.subset([2, 3, 4, 5]))], 6)
