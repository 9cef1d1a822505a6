"""Training losses: value and gradient with respect to the predictions, batched over configs.

L(W_e) = (1/m) sum_i l(W_e x_i, y_i).  Every loss works on predictions Z = W_e X^T laid out as
(B, k, m) (configs, outputs, examples) and targets Yt (k, m); `value_and_grad` overwrites Z and
fills `out` with l'(z, y) per example, the gradient of the SUM over examples: the caller divides
by m once, on the much smaller (B, k, d) gradient G = out @ X.  Nothing is allocated for lp with
p = 2 or 4 beyond the caller's `work` buffer, so the training step stays allocation-free.
"""
from __future__ import annotations

import math
import re

import numpy as np

from .backend import array_namespace


def lp_terms(R, p):
    """The lp formula, readable, in one place: (|R|^p, |R|^(p-2) R, |R|^(p-2)) elementwise for
    residuals R and real p >= 2 (0^0 = 1 for p = 2).  l(r) = |r|^p / p, l'(r) = |r|^(p-2) r,
    l''(r) = (p-1) |r|^(p-2).  The reference for the optimized passes (Lp.value_and_grad, the
    X-pass kernel) and what their twins and gl.optimal_loss compute with."""
    xp = array_namespace(R)
    A = xp.abs(R)
    T = A ** (p - 2.0)
    return A ** p, T * R, T


class Lp:
    """l_p loss, l(z, y) = (1/p) sum_r |z_r - y_r|^p, for real p >= 2 ("l2" = half squared error)."""

    def __init__(self, p: float):
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)) \
                or not math.isfinite(p) or p < 2:
            raise ValueError(f"p must be a finite number >= 2 for the lp loss (got {p!r}); the "
                             "paper's analysis and the smoothness of the gradient need p >= 2")
        self.p = float(p)
        self.name = f"l{self.p:g}"

    residual = True      # a function of Z - Y only: train() folds -Y into its forward GEMM

    def __repr__(self):
        return f"Lp({self.p:g})"

    def __eq__(self, other):
        return isinstance(other, Lp) and other.p == self.p

    def __hash__(self):
        return hash(("Lp", self.p))

    def grad_into(self, R, out):
        """out[...] = l'(R) = |R|^(p-2) R for residuals R (B, k, m), in at most two passes and
        no allocation (train()'s data pass: it gets the loss values from its gradient GEMM)."""
        xp = array_namespace(R)
        if self.p == 2.0:
            out[...] = R
        elif self.p == 4.0:
            xp.multiply(R, R, out=out)
            out *= R
        else:
            xp.abs(R, out=out)
            xp.power(out, self.p - 2.0, out=out)     # 0^x = 0 for x > 0
            out *= R
        return out

    def value_and_grad(self, Z, Yt, out, work):
        """Per-config loss (B,) of predictions Z (B, k, m) against Yt (k, m).

        Overwrites Z with the residual R = Z - Y (Yt=None: Z already is the residual, as when
        train() folds -Y into its GEMM); fills out (B, k, m) with l'(R) = |R|^(p-2) R;
        `work` is a (B, k, m) scratch buffer.
        """
        xp = array_namespace(Z)
        m = Z.shape[-1]
        R = Z if Yt is None else xp.subtract(Z, Yt, out=Z)
        if self.p == 2.0:
            out[...] = R
            total = xp.einsum("bkm,bkm->b", R, R)
        elif self.p == 4.0:
            R2 = xp.multiply(R, R, out=work)
            xp.multiply(R2, R, out=out)
            total = xp.einsum("bkm,bkm->b", R2, R2)
        else:
            A = xp.abs(R, out=work)
            T = xp.power(A, self.p - 2.0, out=out)   # |R|^(p-2), 0^x = 0 for x > 0, 1 for p = 2
            total = xp.einsum("bkm,bkm->b", T, xp.multiply(A, A, out=A))  # sum |R|^p
            xp.multiply(T, R, out=out)
        return total / (self.p * m)


class SoftmaxCrossEntropy:
    """Softmax cross-entropy, l(z, y) = -sum_r y_r log softmax(z)_r, y one-hot or probabilities."""

    name = "xent"
    p = None
    residual = False     # train() must not fold -Y into the logits

    def __repr__(self):
        return "SoftmaxCrossEntropy()"

    def __eq__(self, other):
        return isinstance(other, SoftmaxCrossEntropy)

    def __hash__(self):
        return hash("xent")

    def value_and_grad(self, Z, Yt, out, work):
        """Per-config loss (B,) of logits Z (B, k, m); out = softmax(Z) - Y (B, k, m)."""
        xp = array_namespace(Z)
        m = Z.shape[-1]
        Z -= Z.max(axis=1, keepdims=True)             # stable: log-sum-exp of shifted logits
        xp.exp(Z, out=work)
        norm = work.sum(axis=1, keepdims=True)        # (B, 1, m)
        logp = Z - xp.log(norm)                       # log softmax
        xp.divide(work, norm, out=out)
        out -= Yt
        return -xp.einsum("bkm,km->b", logp, Yt) / m


LOSS_NAMES = ("l2", "l4", "l<p> for real p >= 2 (e.g. 'l3', 'l2.5')", "xent")


def get_loss(loss):
    """A loss object from a name ("l2", "l4", "l3.5", "xent") or an Lp / SoftmaxCrossEntropy."""
    if isinstance(loss, (Lp, SoftmaxCrossEntropy)):
        return loss
    if isinstance(loss, str):
        name = loss.strip().lower()
        if name in ("xent", "cross_entropy", "softmax_cross_entropy", "ce"):
            return SoftmaxCrossEntropy()
        match = re.fullmatch(r"l(\d+(\.\d*)?)", name)
        if match:
            return Lp(float(match.group(1)))
    raise ValueError(f"loss: unknown {loss!r}; use one of {LOSS_NAMES} or gl.Lp(p)")


def config_loss(cfg, default):
    """The loss a config trains on: its own `loss` when set, else train()'s `default`."""
    return get_loss(cfg.loss if cfg.loss is not None else default)


def evaluate(loss, We, X, Y):
    """Loss values (B,) and gradients dL/dW_e (B, k, d) at end-to-end matrices We (B, k, d).

    The reference (unbuffered) form of the lp / xent pass that train() runs in place.
    """
    loss = get_loss(loss)
    xp = array_namespace(We, X)
    Yt = as_targets(Y, xp).T                     # (k, m)
    Z = xp.matmul(We, X.T)                       # (B, k, m)
    D = xp.empty_like(Z)
    values = loss.value_and_grad(Z, Yt, D, xp.empty_like(Z))
    G = xp.matmul(D, X) / X.shape[0]             # (B, k, d)
    return values, G


def check_targets_for(loss, Y):
    """Softmax cross-entropy needs one row of k >= 2 class probabilities per example (one-hot
    labels); a label vector would train a single logit to nothing.  Y: (m, k)."""
    if loss.residual:
        return
    if Y.shape[1] < 2 or np.any(Y < 0) or not np.allclose(Y.sum(axis=1), 1.0):
        raise ValueError(f"y: loss 'xent' needs one-hot labels or class probabilities of shape "
                         f"(m, k) with k >= 2 and rows summing to 1, got shape {Y.shape}; for "
                         f"integer labels use np.eye(n_classes)[labels]")


def as_targets(y, xp=np):
    """y as a 2-D (m, k) array: a vector (m,) is one output."""
    y = xp.asarray(y)
    return y[:, None] if y.ndim == 1 else y
