"""Fixtures shared by several test files."""
import numpy as np
import pytest


@pytest.fixture
def csv(tmp_path):
    """A headerless CSV of a small regression problem (4 features, then the target)."""
    import gpulinear as gl
    X, y = gl.datasets.synthetic_regression(m=50, d=4, seed=2)
    path = tmp_path / "data.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", fmt="%.17g")
    return path
