"""Validation of user data: X (m, d) and y (m,) or (m, k), numeric and finite."""
from __future__ import annotations

import numpy as np

from .backend import to_numpy


def check_data(X, y):
    """(X (m, d), Y (m, k)) as float64 NumPy arrays, or a ValueError/TypeError naming the problem."""
    X = _numeric("X", X)
    Y = _numeric("y", y)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (m examples, d features), got shape {X.shape}; "
                         "reshape a single feature with X[:, None]")
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise ValueError(f"y must be 1-D (m,) or 2-D (m, k), got shape {Y.shape}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and y have different numbers of examples: X has {X.shape[0]} rows, "
                         f"y has {Y.shape[0]}")
    if X.shape[0] == 0 or X.shape[1] == 0 or Y.shape[1] == 0:
        raise ValueError(f"X and y must be non-empty, got X {X.shape}, y {Y.shape}")
    return X, Y


def _numeric(name, a):
    try:
        arr = to_numpy(a)
    except Exception as exc:  # e.g. a ragged list
        raise TypeError(f"{name} must be a numeric array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}; convert it with "
                        f"np.asarray({name}, dtype=float)")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf value(s); drop or impute them first")
    return arr
