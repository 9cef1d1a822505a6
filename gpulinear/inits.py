"""Initial weights of one config: `init_weights(cfg, d, k)` -> [W_1, ..., W_N] (float64).

Deterministic from cfg.seed alone, so configs that differ only in lr or optimizer start from the
same weights (common random numbers make lr comparisons fair), and train() starts exactly here.
"""
from __future__ import annotations

import numpy as np

from .config import Config


def init_weights(cfg: Config, d: int, k: int) -> list[np.ndarray]:
    """[W_1..W_N], W_j of shape (n_j, n_{j-1}) with n_0 = d, n_N = k.

    normal:   entries N(0, init_scale^2) (the paper's near-zero init uses 0.01).
    identity: eye(n_j, n_{j-1}) (ones on the diagonal, non-square too) plus that noise.
    balanced: Eq 7 exactly: W_{j+1}^T W_{j+1} = W_j W_j^T.  A k x d Gaussian A (entries
              N(0, init_scale^2)) is cut to rank r = min(n_0..n_N) and factored as
              W_j = O_j S^(1/N) O_{j-1}^T with O_0 = V, O_N = U (its SVD) and random orthogonal
              O_j in between, so the product W_N..W_1 is that rank-r A.
    """
    rng = np.random.default_rng(cfg.seed)
    shapes = cfg.layer_shapes(d, k)
    scale = cfg.init_scale
    if cfg.init == "normal":
        return [rng.normal(0.0, scale, shape) for shape in shapes]
    if cfg.init == "identity":
        return [np.eye(*shape) + rng.normal(0.0, scale, shape) for shape in shapes]
    return _balanced(rng, shapes, scale)


def _balanced(rng, shapes, scale):
    dims = [shapes[0][1]] + [s[0] for s in shapes]          # n_0 .. n_N
    depth = len(shapes)
    A = rng.normal(0.0, scale, (dims[-1], dims[0]))
    if depth == 1:
        return [A]
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    r = min(dims)
    root = np.diag(s[:r] ** (1.0 / depth))                   # S^(1/N), r x r
    # bases O_0 = V, O_1..O_{N-1} random orthogonal, O_N = U; only their first r columns matter
    bases = [Vt.T[:, :r]]
    for n in dims[1:-1]:
        Q, R = np.linalg.qr(rng.normal(size=(n, n)))
        bases.append((Q * np.sign(np.diag(R)))[:, :r])         # Haar-distributed columns
    bases.append(U[:, :r])
    return [bases[j + 1] @ root @ bases[j].T for j in range(depth)]
