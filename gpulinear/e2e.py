"""The end-to-end update rule: Eq 10 (any k), its closed form Eq 12 (k = 1) and Claim 1's P.

P_{W}(G) = sum_{j=1..N} [W W^T]^((j-1)/N) G [W^T W]^((N-j)/N), with [.]^0 = identity.
With the thin SVD W = U diag(s) V^T (r = min(k, d)), the j = 1 and j = N terms are the only ones
that act on the null spaces, so
    P(G) = U diag(s^a) U^T G  +  G V diag(s^a) V^T  +  U (U^T G V o M) V^T,   a = 2(N-1)/N,
    M_{rr'} = sum_{j=2..N-1} s_r^(2(j-1)/N) s_r'^(2(N-j)/N),
which never forms a d x d matrix.  Singular values at rounding level (s <= max(k, d) eps s_max)
are set to exactly zero first: (1e-17)^0.2 is not small, and a zero direction must stay zero.
"""
from __future__ import annotations

import numpy as np

from .backend import array_namespace


def _check_depth(depth):
    if isinstance(depth, bool) or int(depth) != depth or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    return int(depth)


def precondition(We, G, depth):
    """P_{W_e}(G) of Eq 10 for W_e, G of shape (..., k, d); batched over leading dims."""
    N = _check_depth(depth)
    if N == 1:
        return G
    xp = array_namespace(We, G)
    U, s, Vt = xp.linalg.svd(We, full_matrices=False)        # (..., k, r), (..., r), (..., r, d)
    eps = np.finfo(We.dtype).eps
    tol = max(We.shape[-2:]) * eps * s.max(axis=-1, keepdims=True)
    s = xp.where(s > tol, s, 0.0)
    a = s ** (2.0 * (N - 1) / N)                               # (..., r)
    Ut, V = xp.swapaxes(U, -1, -2), xp.swapaxes(Vt, -1, -2)
    left = U @ (a[..., :, None] * (Ut @ G))                    # U s^a U^T G        (j = N)
    right = ((G @ V) * a[..., None, :]) @ Vt                   # G V s^a V^T        (j = 1)
    if N == 2:
        return left + right
    # the middle terms j = 2..N-1; on We's own namespace: CuPy refuses a NumPy operand
    js = xp.arange(2, N, dtype=s.dtype)
    pw_left = s[..., :, None] ** (2.0 * (js - 1) / N)          # (..., r, N-2)
    pw_right = s[..., :, None] ** (2.0 * (N - js) / N)
    M = pw_left @ xp.swapaxes(pw_right, -1, -2)                # (..., r, r)
    middle = U @ ((Ut @ G @ V) * M) @ Vt
    return left + right + middle


def precondition_k1(We, G, depth):
    """Eq 12 (k = 1): ||W||^(2-2/N) (G + (N-1) <G, W/||W||> W/||W||); 0 at W = 0 for N >= 2."""
    N = _check_depth(depth)
    if We.shape[-2] != 1:
        raise ValueError(f"Eq 12 is the single-output rule (k = 1); We has k = {We.shape[-2]}")
    if N == 1:
        return G
    xp = array_namespace(We, G)
    sq = (We * We).sum(axis=(-2, -1), keepdims=True)           # ||W||^2, (..., 1, 1)
    norm = xp.sqrt(sq)
    safe = xp.where(norm > 0, norm, 1.0)
    unit = We / safe
    proj = (G * unit).sum(axis=(-2, -1), keepdims=True) * unit  # Pr_W{G}
    scale = xp.where(norm > 0, safe ** (2.0 - 2.0 / N), 0.0)
    return scale * (G + (N - 1) * proj)


def end_to_end_update(We, G, depth, lr, weight_decay=0.0):
    """One step of Eq 10: (1 - lr wd N) W_e - lr P_{W_e}(G); Eq 12 when k = 1.

    We, G: (..., k, d); lr, weight_decay: scalars or arrays of the leading shape (...).
    """
    xp = array_namespace(We, G)
    N = _check_depth(depth)
    lr = xp.asarray(lr, dtype=We.dtype)[..., None, None]
    wd = xp.asarray(weight_decay, dtype=We.dtype)[..., None, None]
    step = precondition_k1(We, G, N) if We.shape[-2] == 1 else precondition(We, G, N)
    return (1.0 - lr * wd * N) * We - lr * step


def preconditioner(We, depth):
    """The explicit (k d, k d) matrix P_{W_e} of Claim 1: vec(P(G)) = P vec(G), vec column-major.

    Built by applying Eq 10 to each basis matrix, so tests can check it against Claim 1's
    eigen-decomposition written independently.  We: (..., k, d).
    """
    xp = array_namespace(We)
    k, d = We.shape[-2:]
    lead = We.shape[:-2]
    basis = xp.eye(k * d, dtype=We.dtype).reshape(k * d, d, k).swapaxes(-1, -2)  # column-major
    Wb = xp.broadcast_to(We[..., None, :, :], (*lead, k * d, k, d))
    images = precondition(Wb, xp.broadcast_to(basis, Wb.shape), depth)   # (..., kd, k, d)
    cols = xp.swapaxes(images, -1, -2).reshape(*lead, k * d, k * d)      # vec of each image
    return xp.swapaxes(cols, -1, -2)
