"""The Ethanol problem of UCI dataset 270 (2565 x 128), bundled with the package.

The bundled file ``data/ethanol-2565x128.npz`` holds every number of the source CSV as an exact
decimal: ``value = mantissa * 10**exponent`` with ``mantissa`` int32 and ``exponent`` int8, both
(2565, 129), columns 0..127 the features and column 128 the target, rows in the CSV's order.
Decoding divides (or multiplies) by an exact power of ten, so every float64 value equals
``float(text)`` of the CSV token bit for bit. ``_make_ethanol.py`` writes the file; the provenance
and licence are in ``data/README.md`` and ``data/ETHANOL_LICENSE.txt``.
"""

from __future__ import annotations

import functools
import io
from importlib.resources import files

import numpy as np

ETHANOL_FILE = "ethanol-2565x128.npz"
N_EXAMPLES, N_FEATURES = 2565, 128

_FEATURE_OPTIONS = ("zscore", "maxabs", "raw")
_TARGET_OPTIONS = ("given", "zscore")

ETHANOL_PREPROCESSINGS = {
    "zscore": dict(features="zscore", target="given"),
    "maxabs": dict(features="maxabs", target="given"),
    "raw": dict(features="raw", target="given"),
    "zscore-ystd": dict(features="zscore", target="zscore"),
}

# 10**k for k = 0..22: integers below 2**53 * 2**22, so each float is exact.
_POW10 = np.array([float(10**k) for k in range(23)])


def _float_dtype(dtype) -> np.dtype:
    """float32 or float64 np.dtype from a name or dtype; TypeError/ValueError naming `dtype`."""
    allowed = "'float32' or 'float64'"
    if dtype is None:
        raise TypeError(f"dtype must be {allowed}, got None")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be {allowed}, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be {allowed}, got {dtype!r}")
    return dt


def _check_option(name: str, value, allowed: tuple) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def decode_decimal(mantissa: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """float64 array of ``mantissa * 10**exponent``, correctly rounded (= float() of the text).

    For exponent >= 0 the value is an integer below 2**53 (checked when the file is made); for
    exponent < 0 it is one IEEE division of two exact floats, hence the nearest float64.
    """
    m = mantissa.astype(np.float64)  # exact: |mantissa| < 2**31
    e = exponent.astype(np.int64)
    return np.where(e >= 0, m * _POW10[np.maximum(e, 0)], m / _POW10[np.maximum(-e, 0)])


@functools.lru_cache(maxsize=1)
def _ethanol_raw() -> tuple[np.ndarray, np.ndarray]:
    """(X (2565, 128), y (2565,)) float64 exactly as in the CSV; read-only, cached."""
    blob = (files("gpulinear.datasets") / "data" / ETHANOL_FILE).read_bytes()
    with np.load(io.BytesIO(blob)) as z:
        values = decode_decimal(z["mantissa"], z["exponent"])
    if values.shape != (N_EXAMPLES, N_FEATURES + 1):
        raise RuntimeError(f"bundled {ETHANOL_FILE} has shape {values.shape}, "
                           f"expected {(N_EXAMPLES, N_FEATURES + 1)}")
    X = np.ascontiguousarray(values[:, :N_FEATURES])
    y = np.ascontiguousarray(values[:, N_FEATURES])
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y


def _zscore_columns(A: np.ndarray) -> np.ndarray:
    """(A - mean) / std per column (population std, ddof=0); constant columns become 0."""
    std = A.std(axis=0)
    return (A - A.mean(axis=0)) / np.where(std > 0, std, 1.0)


def ethanol(features: str = "zscore", target: str = "given", dtype="float64"):
    """The Ethanol regression problem of Arora, Cohen & Hazan (2018), Section 8: 2565 x 128.

    Source: the Ethanol subset of UCI dataset 270, "Gas Sensor Array Drift Dataset at Different
    Concentrations" (Vergara et al. 2012; Rodriguez-Lujan et al. 2014; CC BY 4.0), in the centred
    form of the file ``gas/data.csv.gz`` of treforevans/uci_datasets (MIT). It is bundled inside
    the package; nothing is read from outside it. See ``gpulinear/datasets/data/README.md``.

    As stored, each feature column is centred (mean ~0, printed to 5 significant digits) but
    unscaled: column standard deviations range from about 0.53 to 4.2e4, so the raw problem is very
    ill-conditioned. The target is a monotone transform of the ethanol concentration, close to a
    standardized log-concentration (mean ~0, std 1.04; 10 ppmv -> -1.959, 600 ppmv -> 2.042).

    The paper does not say how it scaled the data, and the choice changes the size of the effect
    it reports, so the preprocessing is an explicit option (named combinations in
    ``ETHANOL_PREPROCESSINGS``):

    features:
        "zscore" (default): each column minus its mean, divided by its standard deviation
            (population, ddof=0); a constant column would be left at 0 (none is constant).
        "maxabs": each column divided by its largest absolute value (no re-centring), so every
            column lies in [-1, 1] and reaches +-1.
        "raw": as in the file: centred, unscaled.
    target:
        "given" (default): as in the file.
        "zscore": minus its mean, divided by its standard deviation (ddof=0).
    dtype: "float32" or "float64" (or the numpy dtype). The statistics are computed in float64
        and the result is cast once.

    Returns ``(X, y)``: X (2565, 128), y (2565,), fresh writeable arrays on every call, rows in
    the file's order. Raises ValueError naming the argument for an unknown option, TypeError or
    ValueError naming ``dtype`` for anything but float32/float64.
    """
    dt = _float_dtype(dtype)
    _check_option("features", features, _FEATURE_OPTIONS)
    _check_option("target", target, _TARGET_OPTIONS)
    X, y = _ethanol_raw()
    if features == "zscore":
        X = _zscore_columns(X)
    elif features == "maxabs":
        scale = np.abs(X).max(axis=0)
        X = X / np.where(scale > 0, scale, 1.0)
    if target == "zscore":
        y = _zscore_columns(y)
    return np.array(X, dtype=dt), np.array(y, dtype=dt)  # np.array copies: fresh every call
