"""The CPU benchmark's harness: its hand-batched NumPy baseline does gl.train's math (else its
ratio means nothing), and `--quick` prints the header and a table of positive rates."""
import importlib.util
import io
import json
import math
import pathlib
import re
from contextlib import redirect_stdout

import numpy as np
import pytest

import gpulinear as gl

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _load("bench_cpu")


@pytest.mark.parametrize("loss", ["l2", "l4"])
@pytest.mark.parametrize("depth,width", [(1, 1), (3, 1), (3, 3), (2, 3)])
def test_batched_gd_matches_train(depth, width, loss):
    # fresh random data, lrs large enough that a few steps move the loss visibly
    rng = np.random.default_rng([depth, width, len(loss)])
    m, d, B, steps = 37, 5, 4, 6
    X = rng.normal(size=(m, d))
    y = rng.normal(size=m)
    lrs = np.geomspace(0.05, 0.5, B) if loss == "l2" else np.geomspace(0.01, 0.1, B)
    cfgs = [gl.Config(depth=depth, width=width, lr=float(lr), seed=int(rng.integers(1 << 30)),
                      init_scale=0.5) for lr in lrs]
    res = gl.train(X, y, cfgs, loss=loss, steps=steps, log_every=steps, backend="numpy",
                   dtype="float64", progress=False)
    Ws = bench.stacked_weights(cfgs, d, 1)
    got = bench.batched_gd(X, y, Ws, lrs, bench.P[loss], steps)
    want = res.loss[:, -1]
    assert not res.diverged.any()
    # the configs moved: a baseline that skipped its updates would fail the match below
    assert (np.abs(want - res.loss[:, 0]) > 1e-3 * res.loss[:, 0]).all()
    # float64, a few steps, short sums (m 37, d 5) in another order: measured <= 1 eps apart;
    # 1e-10 leaves room for BLAS blocking changes and is far below what a wrong gradient gives
    np.testing.assert_allclose(got, want, rtol=1e-10)
    We = Ws[-1]
    for W in Ws[-2::-1]:
        We = We @ W
    np.testing.assert_allclose(We, res.end_to_end, rtol=1e-9, atol=1e-12)


def test_only_filters_and_rejects_unknown_keys():
    pts = bench.points(only="dtype=float32,B=64,loss=l4")
    assert len(pts) == len(bench.SHAPES)
    assert {(p["dtype"], p["B"], p["loss"]) for p in pts} == {("float32", 64, "l4")}
    assert len(bench.points()) == 2 * 2 * 5 * 2
    assert len(bench.points(only="B=64,B=1024,depth=8,width=100")) == 2 * 2 * 2
    with pytest.raises(SystemExit):
        bench.points(only="lr=1")


def test_quick_prints_header_and_positive_rates(tmp_path, monkeypatch):
    # the fairness line must appear when the variables are set, and not decide the run
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    out = tmp_path / "q.json"
    buf = io.StringIO()
    with redirect_stdout(buf):
        rows = bench.main(["--quick", "--only", "dtype=float64,B=64,depth=1,width=1,loss=l2",
                           "--json", str(out)])
    text = buf.getvalue()
    assert re.search(r"^# .*cores; vector:", text, re.M), text
    assert "BLAS:" in text and "GEMM floor float64, B=64" in text
    assert "NOT FAIR" in text and "env -u OPENBLAS_CORETYPE" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| float64 | 64 | 1 | 1 | l2 |")]
    assert len(lines) == 1, text
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    for i in (5, 8):         # train cs/s, batched NumPy cs/s: always measured
        assert float(cells[i].replace(",", "")) > 0, cells
    assert len(rows) == 1 and rows[0]["train"] > 0 and rows[0]["batched"] > 0
    r = rows[0]
    assert r["train_whole"] == pytest.approx(64 * r["train_steps"] / r["train_s"])
    assert r["train"] == pytest.approx(64 * r["train_steps"] / max(r["train_s"] - r["train_setup_s"], 1e-9))
    assert rows[0]["diverged"] == 0
    jax_ok = importlib.util.find_spec("jax") is not None
    assert math.isfinite(rows[0]["jax"]) == jax_ok
    data = json.loads(out.read_text())
    assert len(data["points"]) == 1 and data["floors"][0]["floor"] > 0


def test_data_path_column_filled_once_train_takes_gram(monkeypatch):
    seen = []
    real = gl.train

    def train(*args, gram=True, **kw):      # stands in for the lead's gram= keyword
        seen.append(gram)
        return real(*args, **kw)

    monkeypatch.setattr(bench.gl, "train", train)
    X, y = gl.datasets.ethanol()
    timing = dict(repeat=1, min_s=0.0, min_steps=2, max_steps=2)
    row = bench.run_point(dict(dtype="float32", B=3, depth=2, width=2, loss="l2"), X, y, None,
                          timing)
    assert False in seen and row["train_data"] > 0 and row["train_data_steps"] == 2
    assert math.isnan(row["jax"]) and row["batched"] > 0
