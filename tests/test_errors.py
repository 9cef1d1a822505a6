"""Every bad input gets a clear ValueError/TypeError naming the argument."""
import numpy as np
import pytest

import gpulinear as gl
from gpulinear.backend import cuda_status

X = np.random.default_rng(0).normal(size=(20, 3))
Y = X.sum(1)
CFG = gl.Config()


def train(**kw):
    args = dict(X=X, y=Y, configs=[CFG], loss="l2", steps=3, backend="numpy")
    args.update(kw)
    return gl.train(**args)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(y=Y[:-1]), ValueError, "X and y"),
    (dict(X=X[:, 0]), ValueError, "X must be 2-D"),
    (dict(X=np.where(np.eye(20, 3) > 0, np.nan, X)), ValueError, "X contains .* NaN"),
    (dict(y=np.where(np.arange(20) == 3, np.inf, Y)), ValueError, "y contains .* NaN/inf"),
    (dict(X=np.array([["a"] * 3] * 20)), TypeError, "X must be numeric"),
    (dict(loss="l1"), ValueError, "p must be"),
    (dict(loss="huber"), ValueError, "loss: unknown"),
    (dict(backend="tpu"), ValueError, "backend: unknown"),
    (dict(steps=-1), ValueError, "steps must be >= 0"),
    (dict(steps=2.5), TypeError, "steps must be an int"),
    (dict(log_every=0), ValueError, "log_every must be >= 1"),
    (dict(configs=[]), ValueError, "configs is empty"),
    (dict(configs=[{"depth": 2}]), TypeError, "Config"),
    (dict(dtype="float16"), TypeError, "dtype must be one of"),
    (dict(diverge_above=-1.0), ValueError, "diverge_above"),
    (dict(target=[1.0, 2.0]), ValueError, "target must be"),
])
def test_train_rejects(kw, exc, match):
    with pytest.raises(exc, match=match):
        train(**kw)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(depth=0), ValueError, "depth must be >= 1"),
    (dict(depth=1.5), TypeError, "depth must be an int"),
    (dict(depth=2, width=0), ValueError, "width must be >= 1"),
    (dict(depth=3, width=(4,)), ValueError, "width: a tuple of hidden widths needs depth-1 = 2"),
    (dict(lr=0.0), ValueError, "lr must be a finite number > 0"),
    (dict(lr=-1e-3), ValueError, "lr must be"),
    (dict(lr=float("nan")), ValueError, "lr must be"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay must be"),
    (dict(optimizer="lbfgs"), ValueError, "optimizer: unknown 'lbfgs'"),
    (dict(init="xavier"), ValueError, "init: unknown"),
    (dict(parameterization="wide"), ValueError, "parameterization: unknown"),
    (dict(optimizer="adam", parameterization="e2e"), ValueError, "e2e.*optimizer='gd'"),
    (dict(loss="l1.5"), ValueError, "p must be"),
    (dict(seed=-1), ValueError, "seed must be"),
])
def test_config_rejects(kw, exc, match):
    with pytest.raises(exc, match=match):
        gl.Config(**kw)


def test_lp_rejects_p_below_2():
    with pytest.raises(ValueError, match="p must be a finite number >= 2"):
        gl.Lp(1.5)


def test_grid_rejects_unknown_fields_and_empty_axes():
    with pytest.raises(ValueError, match="unknown Config field"):
        gl.grid(depht=[1, 2])
    with pytest.raises(ValueError, match="'lr' is an empty list"):
        gl.grid(lr=[])


def test_hyperparameter_for_the_wrong_optimizer():
    with pytest.raises(ValueError, match="beta1"):
        train(configs=[gl.Config(optimizer="gd", beta1=0.9)])


@pytest.mark.skipif(cuda_status()[0], reason="a GPU is present here")
def test_cuda_without_gpu_says_why():
    with pytest.raises(RuntimeError, match="backend='cuda' was asked for but CUDA is unavailable"):
        train(backend="cuda")


def test_grid_order_is_documented_cartesian():
    cfgs = gl.grid(depth=[1, 2], lr=[0.1, 0.2], width=3)
    assert [(c.depth, c.lr) for c in cfgs] == [(1, 0.1), (1, 0.2), (2, 0.1), (2, 0.2)]
    assert all(c.width == 3 for c in cfgs)
    assert gl.grid(depth=3, width=(2, 5))[0].widths == (2, 5)


def test_xent_needs_one_hot_labels():
    labels = np.arange(20) % 3
    with pytest.raises(ValueError, match="y: loss 'xent' needs one-hot labels"):
        train(y=labels, loss="xent")
    with pytest.raises(ValueError, match="one-hot"):
        gl.optimal_loss(X, labels, "xent")
    res = train(y=np.eye(3)[labels], loss="xent", steps=5)      # the documented fix works
    assert res.loss.shape == (1, 2) and res.loss[0, -1] < res.loss[0, 0]


def test_bad_hyperparameters_fail_when_the_grid_is_built():
    with pytest.raises(ValueError, match="beta1: must be finite and in \\[0, 1\\).*got 1.5"):
        gl.grid(optimizer="adam", beta1=[0.9, 1.5])
    with pytest.raises(ValueError, match="momentum: must be"):
        gl.Config(optimizer="nesterov", momentum=1.0)
