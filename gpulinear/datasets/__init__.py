"""Datasets for gpulinear: the bundled Ethanol problem, readers for original UCI 270 and MNIST
files, and small synthetic problems. Importing this needs NumPy only; nothing is downloaded.

    ethanol(features="zscore", target="given", dtype="float64")  -> X (2565, 128), y (2565,)
    ETHANOL_PREPROCESSINGS                                       named (features, target) choices
    load_csv(path or DataFrame, target=-1, header="auto", preprocess="none") -> X (m, d), y
    load_uci_gas_drift(path)      -> GasDrift(X (n, 128), gas (n,), concentration (n,), batch (n,))
    read_idx(file)                -> array from an IDX or IDX.gz file
    load_mnist(path, split)       -> images uint8 (n, 28, 28), labels uint8 (n,)
    two_point_problem(y1, y2)     -> X = eye(2), y = [y1, y2]   (the paper's Section 7)
    synthetic_regression(m, d, k, noise, seed, dtype) -> X (m, d), y (m,) or (m, k)
"""

from gpulinear.datasets._csv import CSV_PREPROCESSINGS, load_csv
from gpulinear.datasets._ethanol import ETHANOL_PREPROCESSINGS, ethanol
from gpulinear.datasets._mnist import load_mnist, read_idx
from gpulinear.datasets._synthetic import synthetic_regression, two_point_problem
from gpulinear.datasets._uci import GAS_NAMES, GasDrift, load_uci_gas_drift

__all__ = [
    "CSV_PREPROCESSINGS",
    "load_csv",
    "ETHANOL_PREPROCESSINGS",
    "GAS_NAMES",
    "GasDrift",
    "ethanol",
    "load_mnist",
    "load_uci_gas_drift",
    "read_idx",
    "synthetic_regression",
    "two_point_problem",
]
