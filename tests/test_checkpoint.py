"""Checkpoints: a resumed run equals an uninterrupted one exactly (NumPy backend)."""
import numpy as np
import pytest

import gpulinear as gl
from gpulinear import step


def _problem():
    X, y = gl.datasets.synthetic_regression(m=50, d=5, seed=3)
    cfgs = (gl.grid(depth=[1, 3], lr=[1e-2, 3e-2], optimizer=["adam", "momentum"], init_scale=0.2)
            + gl.grid(depth=2, lr=[1e-2, 80.0], init_scale=0.2, parameterization="e2e"))
    return X, y, cfgs


def test_resume_after_an_interrupt_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    X, y, cfgs = _problem()
    kw = dict(loss="l4", steps=100, log_every=7, target=0.05, backend="numpy")
    whole = gl.train(X, y, cfgs, **kw)
    ckpt = tmp_path / "run.npz"
    real_evaluate = step.ArrayStep._evaluate

    def dying_evaluate(self, t):
        if t == 50:
            raise KeyboardInterrupt("killed")
        return real_evaluate(self, t)

    monkeypatch.setattr(step.ArrayStep, "_evaluate", dying_evaluate)
    with pytest.raises(KeyboardInterrupt):
        gl.train(X, y, cfgs, checkpoint=ckpt, checkpoint_every=30, **kw)
    monkeypatch.setattr(step.ArrayStep, "_evaluate", real_evaluate)
    assert ckpt.exists() and not list(tmp_path.glob("*.tmp*"))
    with np.load(ckpt) as z:
        assert int(z["t"]) == 30
    resumed = gl.train(X, y, cfgs, checkpoint=ckpt, checkpoint_every=30, resume=True, **kw)
    for name in ("loss", "diverged_at", "end_to_end", "steps_to_target", "steps"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name), err_msg=name)
    assert resumed.diverged.any()                      # the lr 80 config diverged and stayed frozen


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    X, y, cfgs = _problem()
    ckpt = tmp_path / "run.npz"
    gl.train(X, y, cfgs, loss="l4", steps=10, checkpoint=ckpt, backend="numpy")
    with pytest.raises(ValueError, match="belongs to a different run"):
        gl.train(X, y, cfgs[:3], loss="l4", steps=10, checkpoint=ckpt, resume=True,
                 backend="numpy")
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        gl.train(X, y, cfgs, loss="l4", steps=10, resume=True, backend="numpy")


def test_resuming_a_run_that_stopped_at_its_target_does_not_train_on(tmp_path):
    X, y, cfgs = _problem()
    cfgs = [c for c in cfgs if c.lr < 50]
    kw = dict(loss="l4", steps=4000, log_every=10, target=0.5, stop_at_target=True,
              backend="numpy", checkpoint=tmp_path / "run.npz")
    first = gl.train(X, y, cfgs, **kw)
    assert first.steps[-1] < 4000
    again = gl.train(X, y, cfgs, resume=True, **kw)
    np.testing.assert_array_equal(again.steps, first.steps)
    np.testing.assert_array_equal(again.end_to_end, first.end_to_end)
    np.testing.assert_array_equal(again.loss, first.loss)
