"""Made-up problems: the two-point problem of the paper's Section 7, random regression."""

from __future__ import annotations

import operator

import numpy as np

from gpulinear.datasets._ethanol import _float_dtype


def two_point_problem(y1: float, y2: float, dtype="float64"):
    """The two-point regression problem of Arora, Cohen & Hazan (2018), Section 7.

    Two training points ([1, 0], y1) and ([0, 1], y2): returns ``X = eye(2)`` (2, 2) and
    ``y = array([y1, y2])`` (2,). With y1 >> y2 and an l_p loss, p > 2, the problem is
    ill-conditioned and depth can accelerate gradient descent.

    Scale of the loss: the paper's Section 7 loss is the SUM over the two points,
    ``(1/p)(w1 - y1)**p + (1/p)(w2 - y2)**p`` (its footnote 2 drops the averaging 1/2), while
    gpulinear's loss is the MEAN over examples, half of that. Gradient descent with learning
    rate ``lr`` on gpulinear's loss therefore follows the paper's iteration with eta = lr / 2:
    to reproduce the paper's eta pass ``lr = 2 * eta``; its stability bound
    eta < 2 / y_i**(p-2) reads lr < 4 / |y_i|**(p-2).
    """
    dt = _float_dtype(dtype)
    y = np.array([y1, y2], dtype=np.float64)
    if not np.isfinite(y).all():
        raise ValueError(f"y1 and y2 must be finite; got {y1!r}, {y2!r}")
    return np.eye(2, dtype=dt), y.astype(dt)


def synthetic_regression(m: int = 256, d: int = 16, k: int = 1, noise: float = 0.1,
                         seed=0, dtype="float64"):
    """A random linear regression problem, deterministic from `seed`.

    With ``rng = numpy.random.default_rng(seed)``, drawn in this order:
    X = rng.standard_normal((m, d)); W_true = rng.standard_normal((k, d)) / sqrt(d);
    E = rng.standard_normal((m, k)); y = X @ W_true.T + noise * E.
    All in float64, cast once to `dtype`. Returns (X (m, d), y (m,) if k == 1 else (m, k)).
    """
    dt = _float_dtype(dtype)
    sizes = {}
    for name, v in (("m", m), ("d", d), ("k", k)):
        try:
            sizes[name] = operator.index(v)
        except TypeError:
            raise TypeError(f"{name} must be an integer; got {v!r}") from None
        if sizes[name] < 1:
            raise ValueError(f"{name} must be >= 1; got {v!r}")
    m, d, k = sizes["m"], sizes["d"], sizes["k"]
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be finite and >= 0; got {noise!r}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, d))
    W_true = rng.standard_normal((k, d)) / np.sqrt(d)
    y = X @ W_true.T + noise * rng.standard_normal((m, k))
    return X.astype(dt), (y[:, 0] if k == 1 else y).astype(dt)
