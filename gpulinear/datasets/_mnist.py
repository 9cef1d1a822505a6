"""IDX files and MNIST (LeCun, Cortes, Burges), read from local files only: never downloads."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/ file format).
IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(file) -> np.ndarray:
    """Read an IDX file (plain or gzip, recognised by content) into a native-endian array.

    file: a path or a binary file object. Layout: two zero bytes, a type code (0x08 uint8,
    0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions,
    then each dimension as a big-endian uint32, then the data, big-endian, C order.
    Raises ValueError for a bad magic number, an unknown type code, or a data size that does
    not match the dimensions.
    """
    if hasattr(file, "read"):
        data, name = file.read(), getattr(file, "name", "<file>")
    else:
        data, name = Path(file).read_bytes(), str(file)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise ValueError(f"{name}: not an IDX file (magic {data[:4].hex() or 'empty'})")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise ValueError(f"{name}: unknown IDX type code 0x{code:02x}; known: "
                         + ", ".join(f"0x{c:02x}" for c in IDX_DTYPES))
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({ndim} dimensions)")
    dims = tuple(int(s) for s in np.frombuffer(data, ">u4", ndim, 4))
    dt = IDX_DTYPES[code]
    count = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != count * dt.itemsize:
        raise ValueError(f"{name}: IDX dimensions {dims} need {count * dt.itemsize} data bytes, "
                         f"file has {len(data) - header}")
    arr = np.frombuffer(data, dt, count, header).reshape(dims)
    return arr.astype(dt.newbyteorder("="))  # native byte order, writeable copy


def _find(directory: Path, stem: str, idx: str) -> Path | None:
    """`stem-idx` or `stem.idx`, each plain or .gz (e.g. train-images-idx3-ubyte.gz)."""
    for name in (f"{stem}-{idx}.gz", f"{stem}-{idx}", f"{stem}.{idx}.gz", f"{stem}.{idx}"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_mnist(path: str | os.PathLike, split: str = "train"):
    """MNIST from the original IDX files in directory `path`: (images uint8 (n, 28, 28),
    labels uint8 (n,)); n = 60000 for split "train", 10000 for "test".

    Files looked for: ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (split
    "test": ``t10k-...``), each plain or ``.gz``, also spelled ``train-images.idx3-ubyte``.
    Nothing is downloaded: missing files raise FileNotFoundError saying which to put where.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    directory = Path(path)
    prefix = "train" if split == "train" else "t10k"
    images = _find(directory, f"{prefix}-images", "idx3-ubyte")
    labels = _find(directory, f"{prefix}-labels", "idx1-ubyte")
    if images is None or labels is None:
        missing = [f"{prefix}-{kind}-{idx}-ubyte.gz" for kind, idx, f in
                   (("images", "idx3", images), ("labels", "idx1", labels)) if f is None]
        where = "" if directory.is_dir() else " (the directory does not exist)"
        raise FileNotFoundError(
            f"MNIST {split} split: put {' and '.join(missing)} into {str(directory)!r}{where}. "
            "The original IDX files are accepted gzipped or not, also spelled "
            f"{prefix}-images.idx3-ubyte; gpulinear never downloads data.")
    X, y = read_idx(images), read_idx(labels)
    if X.dtype != np.uint8 or X.ndim != 3 or X.shape[1:] != (28, 28):
        raise ValueError(f"{images}: expected uint8 images (n, 28, 28), got {X.dtype} {X.shape}")
    if y.dtype != np.uint8 or y.shape != X.shape[:1]:
        raise ValueError(f"{labels}: expected {X.shape[0]} uint8 labels, got {y.dtype} {y.shape}")
    if y.size and y.max() > 9:
        raise ValueError(f"{labels}: labels must be digits 0..9, found {int(y.max())}")
    return X, y
