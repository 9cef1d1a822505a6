"""A user's own table as (X, y): a CSV file or a pandas DataFrame.

    load_csv(path_or_frame, target=-1, header="auto", preprocess="none", delimiter=",")

Nothing is changed unless asked: preprocess="none" (the default) uses the numbers as given;
"zscore" centres each feature and divides it by its standard deviation (a constant feature is
only centred), the target stays as given.  One learning rate across features of very different
scales is usually a poor study: `gl.train` warns when the features' standard deviations span
more than gpulinear.advice.SCALE_WARN (1e3).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

CSV_PREPROCESSINGS = ("none", "zscore")


def load_csv(source, target=-1, header="auto", preprocess="none", delimiter=","):
    """X (m, d) float64 and y (m,) (or (m, k) for a list of targets) from a CSV file or DataFrame.

    target: the target column(s): a name (header row) or a position (default -1: the last
    column); a list gives k targets.  Every other column is a feature, except a leading index
    column as pandas' `DataFrame.to_csv` writes it (unnamed, holding 0..m-1), which is dropped.
    header: "auto" (the first row is a header when a field of it is not a number), True, False.
    preprocess: "none" (as given) or "zscore" (features only).
    Raises ValueError naming the file, the column and the fix for anything that is not numbers.
    """
    if preprocess not in CSV_PREPROCESSINGS:
        raise ValueError(f"preprocess: unknown {preprocess!r}; choose one of {CSV_PREPROCESSINGS}")
    if header not in ("auto", True, False):
        raise ValueError(f"header must be 'auto', True or False, got {header!r}")
    if _is_frame(source):
        names, table, where = _from_frame(source)
    else:
        names, table, where = _from_file(source, header, delimiter)
    names, table = _drop_index(names, table)
    if table.shape[1] < 2:
        raise ValueError(f"{where} needs at least 2 columns (features and a target), got "
                         f"{table.shape[1]}")
    cols = _target_columns(target, names, table.shape[1], where)
    feats = [j for j in range(table.shape[1]) if j not in cols]
    X = table[:, feats]
    y = table[:, cols[0]] if len(cols) == 1 and not isinstance(target, (list, tuple)) \
        else table[:, cols]
    bad = ~np.isfinite(table)
    if bad.any():
        j = int(np.flatnonzero(bad.any(axis=0))[0])
        raise ValueError(f"{where}: column {_name(names, j)} has {int(bad[:, j].sum())} empty, "
                         "NaN or inf value(s); drop or impute them first")
    if preprocess == "zscore":
        X = zscore(X)
    return X, y


def zscore(X):
    """Each column minus its mean, divided by its standard deviation (1 where that is 0)."""
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _is_frame(obj) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "columns") and hasattr(obj, "dtypes")


def _from_frame(df):
    from pandas.api.types import is_bool_dtype, is_numeric_dtype
    names = [str(c) for c in df.columns]
    where = "DataFrame"
    for name, dtype in zip(names, df.dtypes):
        if not (is_numeric_dtype(dtype) or is_bool_dtype(dtype)):
            raise ValueError(f"{where}: column {name!r} is not numeric ({dtype}); drop it or "
                             "encode it as numbers first")
    return names, df.to_numpy(dtype=np.float64, na_value=np.nan), where


def _from_file(path, header, delimiter):
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text (CSV) file") from None
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter)
            if any(f.strip() for f in r)]
    if not rows:
        raise ValueError(f"{path} is empty")
    has_header = header is True or (header == "auto" and not all(_is_number(f) for f in rows[0]))
    names = [f.strip() for f in rows[0]] if has_header else None
    body = rows[1:] if has_header else rows
    if not body:
        raise ValueError(f"{path} has a header row and no data")
    width = len(body[0])
    table = np.empty((len(body), width))
    for i, row in enumerate(body):
        if len(row) != width:
            raise ValueError(f"{path}, line {i + 1 + has_header}: {len(row)} fields, the first "
                             f"data row has {width}")
        for j, f in enumerate(row):
            f = f.strip()
            if f == "" or f.lower() in ("nan", "na"):
                table[i, j] = np.nan
                continue
            try:
                table[i, j] = float(f)
            except ValueError:
                raise ValueError(
                    f"{path}, line {i + 1 + has_header}: column {_name(names, j)} holds {f!r}, "
                    "not a number" + ("" if has_header or i else
                                      " (a header row? pass header=True)")) from None
    if names is not None and len(names) != width:
        raise ValueError(f"{path}: the header names {len(names)} columns, the data has {width}")
    return names, table, where


def _is_number(field) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


def _drop_index(names, table):
    """pandas' to_csv index: a first column named '' or 'Unnamed: 0' holding 0, 1, ..., m-1."""
    if names and names[0] in ("", "Unnamed: 0", "index") and table.shape[1] > 2 \
            and np.array_equal(table[:, 0], np.arange(table.shape[0])):
        return names[1:], table[:, 1:]
    return names, table


def _name(names, j) -> str:
    return f"{names[j]!r}" if names else f"{j}"


def _target_columns(target, names, n, where) -> list:
    wanted = list(target) if isinstance(target, (list, tuple)) else [target]
    if not wanted:
        raise ValueError("target: give at least one column")
    cols = []
    for t in wanted:
        if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
            if not -n <= t < n:
                raise ValueError(f"target: column {t} is out of range for {n} columns")
            cols.append(int(t) % n)
        elif isinstance(t, str):
            if not names or t not in names:
                known = f"; columns: {names}" if names else " (it has no header row: give a " \
                                                          "position, e.g. target=-1)"
                raise ValueError(f"target: {where} has no column {t!r}{known}")
            cols.append(names.index(t))
        else:
            raise TypeError(f"target must be a column name, a position or a list of them, got "
                            f"{type(t).__name__}")
    if len(set(cols)) != len(cols) or len(cols) >= n:
        raise ValueError(f"target: {wanted} leaves no feature column (or repeats a column)")
    return cols
