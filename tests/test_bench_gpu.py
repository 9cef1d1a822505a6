"""The GPU benchmark's harness, on the CPU: `bench_gpu.py --dry-run` end to end, and the JAX peer
against gl.train (the peer must do the same math, or its ratio means nothing)."""
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import gpulinear as gl

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_writes_every_column_and_a_finite_rate_per_point(tmp_path):
    bench = _load("bench_gpu")
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(BENCH / "bench_gpu.py"), "--dry-run", "--json",
                           str(out), "--jax", "off"], capture_output=True, text=True, env=env,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    expected = bench.points(dry=True)
    prob = data["meta"]["problem"]
    assert [(r["B"], r["depth"], r["width"], r["dtype"]) for r in data["points"]] == expected
    for row in data["points"]:
        assert set(bench.POINT_KEYS) <= set(row), set(bench.POINT_KEYS) - set(row)
        assert row["status"] == "ok", row
        assert math.isfinite(row["rate"]) and row["rate"] > 0, row
        # whole calls: the rate is B steps / call time, and the call is >= the min-call rule
        assert row["rate"] == pytest.approx(row["B"] * row["steps"] / row["call_s"])
        assert row["pct_fp32_floor"] == pytest.approx(
            100 * row["rate"] * 4 * prob["m"] * prob["d"] / bench.FP32_FLOPS)
        assert (row["pct_fp64_peak"] is None) == (row["dtype"] == "float32")
        assert row["diverged"] == 0, row          # small lrs: a diverged config changes the cost
    both = {r["dtype"] for r in data["points"]}
    assert both == {"float32", "float64"}
    assert [r["status"] for r in data["fig3"]["runs"]] == ["ok", "ok"]
    assert data["fig3"]["configs"] == 60
    assert data["million"]["run_1000"]["status"] == "ok"
    assert "| B | depth |" in proc.stdout and "float64" in proc.stdout    # the markdown table
    # --summary reads the JSON back (what gpu_check.sh prints)
    s = subprocess.run([sys.executable, str(BENCH / "bench_gpu.py"), "--summary", str(out)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert s.returncode == 0 and "Figure 3 grid" in s.stdout, s.stdout + s.stderr


def test_measure_grows_steps_until_the_call_is_long_enough():
    """A fake call of 1 ms setup + 0.1 ms per step: steps grow until a call takes >= 0.05 s,
    and the best of 3 calls is reported, not a slope."""
    import time
    bench = _load("bench_gpu")
    seen = []

    def call(steps):
        seen.append(steps)
        time.sleep(0.001 + 1e-4 * steps)
        return steps

    r = bench.measure(call, quantum=10, min_call_s=0.05, cap_s=10.0)
    assert r["call_s"] >= 0.05 and r["steps"] % 10 == 0 and r["calls"] == 3
    assert seen[-3:] == [r["steps"]] * 3
    assert r["steps"] * 1e-4 < r["call_s"] < 2 * (0.001 + 1e-4 * r["steps"]) + 0.02


def test_jax_peer_does_what_gl_train_does():
    """Same start (gl.init_weights), same lrs, float64: the peer's final end-to-end matrices
    equal gl.train(backend="numpy")'s after 30 steps, for depths 1 and 3 and a width-2 chain."""
    pytest.importorskip("jax")
    peer_mod = _load("jax_peer")
    X, y = gl.datasets.ethanol()
    X, y = X[:200], y[:200]
    for depth, width in ((1, 1), (3, 1), (3, 2)):
        cfgs = gl.grid(depth=depth, width=width, lr=[1e-4, 1e-3, 3e-3], seed=0)
        starts = [gl.init_weights(c, X.shape[1], 1) for c in cfgs]
        weights = [np.stack([s[j] for s in starts]) for j in range(depth)]
        run = peer_mod.make_peer(X, y, [c.lr for c in cfgs], depth, width, p=4.0,
                                 dtype="float64", chunk=10, weights=weights)
        ws = [np.asarray(w) for w in run(30)]
        We = ws[0]
        for W in ws[1:]:
            We = W @ We                                   # (B, n_j, d) -> (B, 1, d)
        res = gl.train(X, y, cfgs, loss="l4", steps=30, log_every=10, backend="numpy")
        assert not res.diverged.any()                     # gl freezes a diverged config, JAX not
        start = np.stack([np.linalg.multi_dot(s[::-1]) if depth > 1 else s[0] for s in starts])
        moved = np.abs(res.end_to_end - start).max()
        assert moved > 0                                  # the steps did something
        # float64, 30 steps of the same arithmetic in another order: rounding only
        np.testing.assert_allclose(We, res.end_to_end, rtol=1e-9, atol=1e-12 * moved)
        if depth == 3 and width == 2:                     # the comparison can fail: l2 is not l4
            wrong = peer_mod.make_peer(X, y, [c.lr for c in cfgs], depth, width, p=2.0,
                                       dtype="float64", chunk=10, weights=weights)
            ws2 = [np.asarray(w) for w in wrong(30)]
            We2 = ws2[2] @ ws2[1] @ ws2[0]
            assert not np.allclose(We2, res.end_to_end, rtol=1e-9, atol=1e-12 * moved)
