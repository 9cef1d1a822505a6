"""L* = min_W L(W): the floor the paper's plots subtract (loss - L* on a log axis).

l2: the least-squares closed form.  lp (p > 2): damped Newton on the convex objective, started
from the l2 solution; each output is a separate problem.  xent: L-BFGS (scipy), which may only
approach an infimum of 0 on separable data.
"""
from __future__ import annotations

import numpy as np

from .data import check_data
from .losses import Lp, check_targets_for, evaluate, get_loss, lp_terms


def optimal_loss(X, y, loss="l2", tol=1e-13, max_iter=200) -> float:
    """L* of the depth-1 linear model on (X, y) for the given loss (float64)."""
    X, Y = check_data(X, y)
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    loss = get_loss(loss)
    check_targets_for(loss, Y)
    W = np.linalg.lstsq(X, Y, rcond=None)[0].T                 # (k, d): the l2 optimum
    if isinstance(loss, Lp) and loss.p != 2.0:
        W = np.stack([_newton_lp(X, Y[:, r], W[r], loss, tol, max_iter) for r in range(Y.shape[1])])
    elif not isinstance(loss, Lp):
        W = _lbfgs(X, Y, loss)
    return float(evaluate(loss, W[None], X, Y)[0][0])


def _newton_lp(X, y, w, loss, tol, max_iter):
    """Damped Newton with backtracking on f(w) = mean |Xw - y|^p / p (convex, smooth for p >= 2)."""
    p, m = loss.p, X.shape[0]

    def f(w):
        return np.mean(lp_terms(X @ w - y, p)[0]) / p

    value = f(w)
    for _ in range(max_iter):
        _, dl, T = lp_terms(X @ w - y, p)
        grad = X.T @ dl / m
        curv = (p - 1) * T / m
        H = (X * curv[:, None]).T @ X
        H += 1e-14 * np.trace(H) / len(w) * np.eye(len(w))  # lp Hessians go singular at r = 0
        step = np.linalg.solve(H, grad)
        t = 1.0
        while t > 1e-12:
            cand = w - t * step
            new = f(cand)
            if new <= value - 1e-4 * t * grad @ step or new <= value:
                break
            t *= 0.5
        else:
            break
        decrease = value - new
        w, value = cand, new
        if decrease <= tol * max(value, 1e-300):
            break
    return w


def _lbfgs(X, Y, loss):
    from scipy.optimize import minimize

    k, d = Y.shape[1], X.shape[1]

    def fun(w):
        values, G = evaluate(loss, w.reshape(1, k, d), X, Y)
        return float(values[0]), G.ravel()

    res = minimize(fun, np.zeros(k * d), jac=True, method="L-BFGS-B",
                   options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
    return res.x.reshape(k, d)
