"""Regenerate ``data/ethanol-2565x128.npz`` from the source CSV (a maintainer's script).

    python -m gpulinear.datasets._make_ethanol [CSV] [--out PATH] [--check]

CSV defaults to ``shared/data/gas-ethanol/ethanol-2565x128.csv.gz`` beside the repository root
(= ``uci_datasets/gas/data.csv.gz`` of treforevans/uci_datasets): 2565 lines of 129
comma-separated numbers, 128 features then the target, printed with at most 5 significant
digits (e.g. ``-44915``, ``0.0070545``, ``1.5984e+05``).

Format: each token is stored as an exact decimal, ``mantissa * 10**exponent`` with the
mantissa's trailing zeros stripped: ``mantissa`` int32 and ``exponent`` int8 arrays of shape
(2565, 129), written as an .npz (deflate level 9, fixed zip timestamps, so the same zlib gives
the same bytes). Decoded with ``_ethanol.decode_decimal`` every float64 equals ``float(token)``
bit for bit. Why not floats: float32 also keeps 5 significant digits, but its savez_compressed
file is larger (1.23 MB against 1.03 MB) and its float64 values differ from the CSV's in the 8th
digit; float64 is exact but 1.48 MB.

Asserted here before writing: 2565 rows of 129 tokens; every decoded value equals the token as a
decimal and as ``float(token)``; mantissas fit int32 and exponents lie in [-22, 22] (exact powers
of ten); the file stays under 2 MB. ``--check`` builds in memory and compares with the bundled
file instead of writing.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import zipfile
from decimal import Decimal
from pathlib import Path

import numpy as np

from gpulinear.datasets._ethanol import ETHANOL_FILE, N_EXAMPLES, N_FEATURES, decode_decimal

DEFAULT_CSV = (Path(__file__).resolve().parents[3] / "shared" / "data" / "gas-ethanol"
               / "ethanol-2565x128.csv.gz")
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / ETHANOL_FILE
MAX_BYTES = 2_000_000


def read_tokens(csv_path) -> list[list[str]]:
    with gzip.open(csv_path, "rt", encoding="ascii") as f:
        rows = [line.split(",") for line in f.read().splitlines()]
    assert len(rows) == N_EXAMPLES, f"{len(rows)} rows, expected {N_EXAMPLES}"
    assert all(len(r) == N_FEATURES + 1 for r in rows), "a row without 129 columns"
    return rows


def to_decimal_arrays(rows: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(mantissa int64, exponent int64) with value = mantissa * 10**exponent exactly."""
    mant = np.empty((len(rows), len(rows[0])), np.int64)
    expo = np.empty_like(mant)
    for i, row in enumerate(rows):
        for j, tok in enumerate(row):
            sign, digits, e = Decimal(tok).normalize().as_tuple()
            assert isinstance(e, int), f"non-finite token {tok!r} at row {i}, column {j}"
            m = int("".join(map(str, digits)))
            mant[i, j], expo[i, j] = (-m if sign else m), e
    return mant, expo


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz that np.load reads, written with fixed timestamps so it is reproducible."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compress_type=zipfile.ZIP_DEFLATED,
                        compresslevel=9)
    return buf.getvalue()


def build(csv_path=DEFAULT_CSV) -> bytes:
    """The bytes of the bundled file, made from the CSV, with every check asserted."""
    rows = read_tokens(csv_path)
    mant, expo = to_decimal_arrays(rows)
    assert np.abs(mant).max() < 2**31, "mantissa does not fit int32"
    assert -22 <= expo.min() and expo.max() <= 22, "exponent outside the exact powers of ten"
    assert (np.abs(mant) * 10.0 ** np.maximum(expo, 0)).max() < 2**53
    mant32, expo8 = mant.astype(np.int32), expo.astype(np.int8)
    decoded = decode_decimal(mant32, expo8)
    as_float = np.array([[float(t) for t in r] for r in rows])
    assert np.array_equal(decoded, as_float), "decoded float64 differs from float(token)"
    for row, mrow, erow in zip(rows, mant32.tolist(), expo8.tolist()):
        for tok, m, e in zip(row, mrow, erow):
            assert Decimal(tok) == Decimal(m).scaleb(e), f"{tok!r} != {m}e{e}"
    blob = npz_bytes({"mantissa": mant32, "exponent": expo8})
    assert len(blob) < MAX_BYTES, f"{len(blob)} bytes, over {MAX_BYTES}"
    with np.load(io.BytesIO(blob)) as z:  # round trip through np.load
        assert np.array_equal(decode_decimal(z["mantissa"], z["exponent"]), as_float)
    return blob


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", default=str(DEFAULT_CSV))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--check", action="store_true",
                    help="compare with the existing file instead of writing")
    args = ap.parse_args(argv)
    blob = build(args.csv)
    sha = hashlib.sha256(blob).hexdigest()
    if not args.check:
        Path(args.out).write_bytes(blob)
        print(f"wrote {args.out}: {len(blob)} bytes, sha256 {sha}")
        return 0
    old = Path(args.out).read_bytes()
    if old == blob:
        print(f"{args.out} is byte-identical (sha256 {sha})")
        return 0
    with np.load(io.BytesIO(old)) as a, np.load(io.BytesIO(blob)) as b:
        same = all(np.array_equal(a[k], b[k]) for k in ("mantissa", "exponent"))
    print(f"{args.out}: bytes differ (zlib?), arrays {'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
