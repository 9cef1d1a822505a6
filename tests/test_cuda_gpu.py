"""GPU tests (marker `gpu`; skipped cleanly without a CUDA GPU and CuPy).

The fused CUDA step (gpulinear.cuda.step: X-pass kernel + Numba update kernel, graph-replayed)
against the NumPy engine: float64 within relative 1e-10 after 1000 steps for every optimizer,
depths 1-8, widths 1 and 7, k = 1 and 3, deep and e2e; float32 within 2x the error of the plain
CuPy float32 step (fused=False: cuBLAS + CuPy elementwise) against the float64 reference;
divergence isolation, chunking, graph replay bitwise equal to eager launches; each kernel against
its NumPy twin.  Run: `python -m pytest -m gpu tests/test_cuda_gpu.py` (benchmarks/gpu_check.sh).
"""
import numpy as np
import pytest

import gpulinear as gl
from gpulinear.backend import cuda_status

OK, WHY = cuda_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not OK, reason=f"no CUDA GPU: {WHY}")]
if OK:
    import cupy

NAMES = ("gd", "momentum", "nesterov", "adagrad", "adadelta", "adam", "rmsprop")


def rel_err(got, ref):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-300))


def data(k=1, m=700, d=37, seed=0):
    """m and d are not multiples of any tile on purpose."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d)) / np.sqrt(d)
    y = X @ rng.normal(size=(d, k)) + 0.1 * rng.normal(size=(m, k))
    return X, y[:, 0] if k == 1 else y


def grid_for(name):
    extra = {"rmsprop": dict(centered=[False, True], momentum=[0.0, 0.5])}.get(name, {})
    lrs = {"adadelta": [0.5, 1.0], "adagrad": [0.01, 0.05]}.get(name, [1e-3, 1e-2])
    return gl.grid(depth=[1, 2, 3, 8], width=[1, 7], lr=lrs, optimizer=name, init="identity",
                   init_scale=0.05, seed=0, **extra)


@pytest.mark.parametrize("name", NAMES)
def test_fused_step_matches_numpy_float64(name):
    X, y = data()
    cfgs = grid_for(name)
    ref = gl.train(X, y, cfgs, loss="l4", steps=1000, log_every=100, backend="numpy")
    got = gl.train(X, y, cfgs, loss="l4", steps=1000, log_every=100, backend="cuda", fused=True)
    assert got.meta["step"] == "cuda-fused" and got.meta.get("graph") == "replayed", got.meta
    assert rel_err(got.loss, ref.loss) <= 1e-10
    assert rel_err(got.end_to_end, ref.end_to_end) <= 1e-10
    np.testing.assert_array_equal(got.diverged_at, ref.diverged_at)


def test_fused_step_k3_mixed_losses_and_targets():
    X, y = data(k=3)
    cfgs = (gl.grid(depth=[1, 3], width=[1, (7, 4)], lr=[1e-3, 3e-3], optimizer=["gd", "adam"],
                    init="identity", init_scale=0.05, loss=["l2", "l4", "l3"]))
    kw = dict(steps=400, log_every=50, target=0.2)
    ref = gl.train(X, y, cfgs, backend="numpy", **kw)
    got = gl.train(X, y, cfgs, backend="cuda", fused=True, **kw)
    assert rel_err(got.loss, ref.loss) <= 1e-10
    np.testing.assert_array_equal(got.steps_to_target, ref.steps_to_target)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["gd", "adam", "rmsprop"])
def test_fused_float32_within_2x_of_plain_cupy(name, dtype):
    X, y = data()
    cfgs = grid_for(name)
    ref = gl.train(X, y, cfgs, loss="l4", steps=500, log_every=100, backend="numpy")
    got = gl.train(X, y, cfgs, loss="l4", steps=500, log_every=100, backend="cuda",
                   dtype=dtype, fused=True)
    plain = gl.train(X, y, cfgs, loss="l4", steps=500, log_every=100, backend="cuda",
                     dtype=dtype, fused=False)
    assert plain.meta["step"] == "array"
    floor = 8 * np.finfo(dtype).eps
    assert rel_err(got.loss, ref.loss) <= 2 * rel_err(plain.loss, ref.loss) + floor


@pytest.mark.parametrize("k", [1, 3])
def test_fused_e2e_rule(k):
    X, y = data(k=k)
    cfgs = gl.grid(depth=[1, 2, 3, 8], lr=[1e-3, 1e-2], parameterization="e2e", init="balanced",
                   weight_decay=[0.0, 1e-3], seed=1)
    ref = gl.train(X, y, cfgs, loss="l2", steps=1000, log_every=100, backend="numpy")
    got = gl.train(X, y, cfgs, loss="l2", steps=1000, log_every=100, backend="cuda", fused=True)
    assert rel_err(got.loss, ref.loss) <= 1e-10
    assert rel_err(got.end_to_end, ref.end_to_end) <= 1e-10


def test_fused_divergence_isolated():
    X, y = data()
    cfgs = gl.grid(depth=[1, 3], lr=[1e-2, 50.0], optimizer=["gd", "adam"], init="identity")
    kw = dict(loss="l4", steps=300, log_every=10, diverge_above=1e6)
    ref = gl.train(X, y, cfgs, backend="numpy", **kw)
    got = gl.train(X, y, cfgs, backend="cuda", fused=True, **kw)
    np.testing.assert_array_equal(got.diverged_at, ref.diverged_at)
    assert (ref.diverged_at >= 0).any() and (ref.diverged_at < 0).any()
    ok = ref.diverged_at < 0
    assert rel_err(got.loss[ok], ref.loss[ok]) <= 1e-10
    alone = gl.train(X, y, [c for c, o in zip(cfgs, ok) if o], backend="cuda", fused=True, **kw)
    # the X-pass's example splits depend on the number of rows: not bitwise, rounding-close
    assert rel_err(alone.loss, got.loss[ok]) <= 1e-12


def test_chunked_grid_equals_one_call(monkeypatch):
    from gpulinear import engine
    X, y = data()
    cfgs = gl.grid(depth=[1, 2], lr=[1e-3, 3e-3, 1e-2], init="identity", seed=[0, 1])
    whole = gl.train(X, y, cfgs, loss="l4", steps=200, log_every=20, backend="cuda")
    monkeypatch.setattr(engine, "_device_chunks",
                        lambda configs, *a: [slice(i, min(i + 5, len(configs)))
                                             for i in range(0, len(configs), 5)]
                        if len(configs) > 5 else [slice(0, len(configs))])
    parts = gl.train(X, y, cfgs, loss="l4", steps=200, log_every=20, backend="cuda")
    assert rel_err(parts.loss, whole.loss) <= 1e-12


def test_graph_replay_equals_eager_launches():
    from gpulinear.cuda.step import CudaStep
    from gpulinear.plan import record_steps, segment_ends
    X, y = data()
    cfgs = gl.grid(depth=[1, 3], width=[1, 7], lr=[1e-3, 1e-2], optimizer=["gd", "adam"],
                   init="identity")
    rec = record_steps(300, 50)
    runs = []
    for graphs in (True, False):
        step = CudaStep(X, y[:, None], cfgs, gl.Lp(4), np.dtype("float64"), rec, None, np.inf,
                        graphs=graphs)
        for end in segment_ends(0, 300, 50):
            step.advance_to(end, 300)
        runs.append((step, step.host_arrays()))
    (g, a), (_, b) = runs
    assert g.replay.replays >= 4 and g.replay.fallback_reason is None
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_xpass_kernel_matches_twin_on_gpu(dtype):
    from gpulinear.cuda.launch import Launcher
    from gpulinear.cuda.xpass import launch_xpass, padded, plan_xpass, xpass_twin
    rng = np.random.default_rng(5)
    for R, m, d, k in [(1, 33, 5, 1), (96, 2565, 128, 1), (39, 1000, 37, 3), (4096, 500, 300, 1)]:
        plan = plan_xpass(R, m, d, k, dtype)
        W, X = rng.normal(size=(R, d)) / np.sqrt(d), rng.normal(size=(m, d))
        Yt = rng.normal(size=(k, m))
        prow = rng.choice([2.0, 4.0, 3.5], size=R)
        Wd = padded(cupy.asarray(W, dtype=dtype), plan.ldw)
        Xd = padded(cupy.asarray(X, dtype=dtype), plan.ldx)
        G = cupy.zeros((plan.splits, R, plan.ldg), dtype=dtype)
        L = cupy.zeros((plan.splits, R), dtype=dtype)
        launch_xpass(Launcher(), plan, Wd, Xd, cupy.asarray(Yt, dtype=dtype),
                     cupy.asarray(prow, dtype=dtype), G, L)
        Gt, Lt = xpass_twin(W, X, Yt, prow, plan.splits, plan.m_per_split, d, k)
        scale = np.sqrt(m) * np.finfo(dtype).eps * 64
        assert rel_err(cupy.asnumpy(L), Lt) <= scale
        assert rel_err(cupy.asnumpy(G)[:, :, :d], Gt) <= scale


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_xpass_occupancy_on_the_device_is_what_the_planner_assumes(dtype):
    """CuPy's occupancy API for the compiled gl_xpass (NVRTC's ptxas, this GPU's shared memory)
    gives the blocks per SM plan_xpass assumes from the pure-Python calculator (4 on sm_90);
    the kernel's registers are within __launch_bounds__'s 128."""
    from gpulinear.cuda.xpass import MIN_BLOCKS, device_blocks_per_sm, load_kernel
    kernel = load_kernel(dtype)
    print(f"gl_xpass<{dtype}>: {kernel.num_regs} registers, "
          f"{device_blocks_per_sm(dtype)} blocks/SM on {cupy.cuda.runtime.getDeviceProperties(0)['name']}")
    assert kernel.num_regs <= 65536 // (128 * MIN_BLOCKS[dtype])
    if cupy.cuda.Device().compute_capability == "90":
        assert device_blocks_per_sm(dtype) == MIN_BLOCKS[dtype]
    else:
        assert device_blocks_per_sm(dtype) >= 1
