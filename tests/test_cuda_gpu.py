"""GPU tests (marker `gpu`; skipped cleanly without a CUDA GPU and CuPy).

The CUDA C kernels (kernels/*.cu) and the Numba fused kernel against their NumPy twins on fresh
random inputs; gl.train(backend="cuda") against backend="numpy" (float64: relative 1e-10 after
1000 steps; float32: within 2x the error of plain CuPy float32 math) for every optimizer, the e2e
rule with k = 1 and k > 1, divergence isolation and chunking, with the kernels wired in exactly
as gpulinear.cuda.ops.cuda_step_ops documents (fixture `fused_engine`); CUDA-graph replay equal
to plain launches.  Run: `python -m pytest -m gpu tests/test_cuda_gpu.py` (benchmarks/gpu_check.sh).
"""
import numpy as np
import pytest

import gpulinear as gl
from gpulinear.backend import cuda_status

OK, WHY = cuda_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not OK, reason=f"no CUDA GPU: {WHY}")]
if OK:
    import cupy
    from gpulinear.cuda import GraphSteps, full_fp32_matmul, ops, plan_chunks, twins

NAMES = ("gd", "momentum", "nesterov", "adagrad", "adadelta", "adam", "rmsprop")


def rel_err(got, ref):
    got, ref = np.asarray(cupy.asnumpy(got), dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-300))


def assert_2x(got, plain, ref, dtype):
    """float64: relative 1e-12; float32: error <= 2x plain same-precision math (+ a few ulps)."""
    if np.dtype(dtype) == np.float64:
        assert rel_err(got, ref) <= 1e-12, rel_err(got, ref)
        return
    floor = 8 * np.finfo(np.float32).eps
    assert rel_err(got, ref) <= 2 * rel_err(plain, ref) + floor, (rel_err(got, ref),
                                                                  rel_err(plain, ref))


# ---- kernels against twins ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("p", [2.0, 4.0, 3.0, 2.5])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 2, 37), (5, 1, 2565), (2, 3, 1000)])
def test_lp_kernel(shape, p, dtype):
    rng = np.random.default_rng(0)
    Z, Yt = rng.normal(size=shape), rng.normal(size=shape[1:])
    ref_v, ref_R, ref_out = twins.lp_value_grad(Z, Yt, p)
    Zd, Yd = cupy.asarray(Z, dtype=dtype), cupy.asarray(Yt, dtype=dtype)
    plain_Z, plain_out = Zd.copy(), cupy.empty_like(Zd)
    plain_v = gl.Lp(p).value_and_grad(plain_Z, Yd, plain_out, cupy.empty_like(Zd))
    out, values = cupy.empty_like(Zd), cupy.empty(shape[0], dtype=dtype)
    R0 = Zd - Yd                                         # train() folds -Y into its GEMM
    got = ops.lp_value_and_grad(Zd, Yd, out, None, p, values=values)
    assert got is values
    assert_2x(values, plain_v, ref_v, dtype)
    assert_2x(Zd, plain_Z, ref_R, dtype)
    assert_2x(out, plain_out, ref_out, dtype)
    values0 = ops.lp_value_and_grad(R0, None, out, None, p)
    np.testing.assert_array_equal(cupy.asnumpy(values0), cupy.asnumpy(values))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("N", [1, 2, 3, 6])
@pytest.mark.parametrize("d", [1, 7, 1000])
def test_e2e_kernel(d, N, dtype):
    rng = np.random.default_rng(N)
    B = 5
    W, G = rng.normal(size=(B, 1, d)), rng.normal(size=(B, 1, d))
    W[1] = 0.0
    lr, wd = rng.uniform(0.01, 0.1, B), rng.uniform(0.0, 0.1, B)
    alive = np.array([True, True, False, True, True])
    ref = twins.e2e_k1(W, G, N, lr, wd, alive)
    Wd = cupy.asarray(W, dtype=dtype)
    Ga = cupy.zeros((B, 1, d + 1), dtype=dtype)          # the engine's G is a strided view
    Gd = Ga[:, :, :d]
    Gd[...] = cupy.asarray(G, dtype=dtype)
    lrd, wdd = cupy.asarray(lr, dtype=dtype), cupy.asarray(wd, dtype=dtype)
    plain = cupy.where(cupy.asarray(alive)[:, None, None],
                       gl.end_to_end_update(Wd, Gd, N, lrd, wdd), Wd)
    pure = ops.e2e_k1_update(Wd, Gd, N, lrd, wdd)                 # every config updated
    np.testing.assert_array_equal(cupy.asnumpy(pure[2]), cupy.asnumpy(
        ops.e2e_k1_update(Wd[2:3].copy(), Gd[2:3].copy(), N, lrd[2:3], wdd[2:3])[0]))
    same = ops.e2e_k1_update(Wd, Gd, N, lrd, wdd, alive=cupy.asarray(alive))
    assert same is Wd
    assert_2x(Wd, plain, ref, dtype)
    assert np.array_equal(cupy.asnumpy(Wd[2]), W[2].astype(dtype))      # frozen: untouched
    assert not cupy.asnumpy(Wd[1]).any()                                # zero stays zero


SHAPES = [(1, 7), (3, 1), (2, 3)]
HYPER = {"rmsprop": [dict(), dict(lr=0.005, alpha=0.9, centered=True, weight_decay=0.1),
                     dict(lr=0.002, momentum=0.9), dict(momentum=0.5, centered=True, eps=1e-6)]}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_optimizer_kernels(name, dtype):
    from gpulinear import optim
    per_cfg = HYPER.get(name, [dict(), dict(lr=0.05, weight_decay=0.1), dict(lr=0.02),
                               dict(lr=0.1, weight_decay=0.01)])
    B = len(per_cfg)
    rng = np.random.default_rng(1)
    p0 = [rng.normal(size=(B, *s)) for s in SHAPES]
    alive = np.array([True, True, False, True])
    opt = optim.get_optimizer(name)
    hyper64, hyper = optim.hyper_arrays(name, per_cfg, np.float64), \
        optim.hyper_arrays(name, per_cfg, dtype, xp=cupy)
    ref_p, ref_s = [p.copy() for p in p0], opt.init([p.copy() for p in p0])
    inplace_p = [cupy.asarray(p, dtype=dtype) for p in p0]
    inplace_s = opt.init(inplace_p)
    pure_p, pure_s = [p.copy() for p in inplace_p], opt.init(inplace_p)
    plain_p, plain_s = [p.copy() for p in inplace_p], opt.init(inplace_p)
    mask = cupy.asarray(alive)
    for step in range(6):
        g = [rng.normal(size=p.shape) for p in p0]
        gd = [cupy.zeros(x.shape[:2] + (x.shape[2] + 1,), dtype=dtype)[:, :, :-1] for x in g]
        for a, x in zip(gd, g):                          # strided views, as the engine's G
            a[...] = cupy.asarray(x, dtype=dtype)
        ref_p, ref_s = twins.optimizer_update(name, g, ref_s, ref_p, hyper64, alive)
        out_p, out_s = ops.optimizer_update(name, gd, inplace_s, inplace_p, hyper, alive=mask)
        assert out_p is inplace_p and out_s is inplace_s
        new_p, new_s = ops.optimizer_update(name, gd, pure_s, pure_p, hyper)   # pure form
        pure_p = [cupy.where(mask[:, None, None], n, o) for n, o in zip(new_p, pure_p)]
        pure_s = _select_state(mask, new_s, pure_s)
        new_p, new_s = opt.update(gd, plain_s, plain_p, hyper)                   # plain CuPy
        plain_p = [cupy.where(mask[:, None, None], n, o) for n, o in zip(new_p, plain_p)]
        plain_s = _select_state(mask, new_s, plain_s)
    for j in range(len(SHAPES)):
        assert_2x(inplace_p[j], plain_p[j], ref_p[j], dtype)
        np.testing.assert_array_equal(cupy.asnumpy(inplace_p[j]), cupy.asnumpy(pure_p[j]))
        np.testing.assert_array_equal(cupy.asnumpy(inplace_p[j][2]), p0[j][2].astype(dtype))
    np.testing.assert_array_equal(cupy.asnumpy(inplace_s.count), [6, 6, 0, 6])
    for f in ops.OPTIMIZER_KERNELS[name][0]:
        for j in range(len(SHAPES)):
            assert_2x(getattr(inplace_s, f)[j], getattr(plain_s, f)[j], getattr(ref_s, f)[j], dtype)


def _select_state(mask, new, old):
    def sel(n, o):
        return cupy.where(mask.reshape(mask.shape + (1,) * (n.ndim - 1)), n, o)
    return type(new)(*[[sel(n, o) for n, o in zip(nf, of)] if isinstance(nf, list) else sel(nf, of)
                       for nf, of in zip(new, old)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_width1_kernel(dtype):
    from gpulinear.cuda.fused import train_width1_fused
    rng = np.random.default_rng(2)
    m, d, B = 2565, 128, 20                        # the Ethanol problem's shape; 3 blocks
    X = rng.normal(size=(m, d)) / np.sqrt(d)
    Y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=m)
    depth = rng.integers(1, 5, size=B)
    W1 = rng.normal(size=(B, d)) * 0.1
    wrest = 1 + 0.1 * rng.normal(size=(B, 3))
    lr = rng.uniform(1e-3, 5e-2, size=B)
    lr[7] = 1e3                                    # diverges; must not disturb the others
    ref = twins.train_width1(X, Y, W1, wrest, lr, 4.0, 300, 50, limit=1e6, depth=depth)
    got = train_width1_fused(cupy.asarray(X, dtype=dtype), cupy.asarray(Y, dtype=dtype),
                             cupy.asarray(W1, dtype=dtype), cupy.asarray(wrest, dtype=dtype),
                             lr, 4.0, 300, 50, 1e6, depth=depth, steps_per_launch=128)
    np.testing.assert_array_equal(cupy.asnumpy(got.diverged_at), ref["diverged_at"])
    ok = ref["diverged_at"] < 0
    tol = 1e-10 if dtype == np.float64 else 4 * np.sqrt(np.finfo(np.float32).eps)
    np.testing.assert_allclose(cupy.asnumpy(got.loss)[ok], ref["loss"][ok], rtol=tol)


# ---- the engine, with and without the kernels ---------------------------------------------------

@pytest.fixture
def fused_engine():
    """gl.train through the step that the engine wires to the CUDA kernels on CuPy arrays
    (ops.lp_value_and_grad for the lp pass, ops.fused_update for the e2e rule and the
    optimizers); fused=False keeps width-1 gd grids off the Numba kernel, tested on its own."""
    import functools
    return functools.partial(gl.train, fused=False)


def data(k=1, m=200, d=10, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d)) / np.sqrt(d)
    y = X @ rng.normal(size=(d, k)) + 0.1 * rng.normal(size=(m, k))
    return X, (y[:, 0] if k == 1 else y)


def grid_for(name):
    extra = {"rmsprop": dict(centered=[False, True], momentum=[0.0, 0.5])}.get(name, {})
    lrs = {"adadelta": [0.5, 1.0], "adagrad": [0.01, 0.05]}.get(name, [1e-3, 1e-2])
    return gl.grid(depth=[1, 2, 3], width=[1, 3], lr=lrs, optimizer=name, init="identity",
                   seed=0, **extra)


@pytest.mark.parametrize("name", NAMES)
def test_train_cuda_matches_numpy_float64(fused_engine, name):
    X, y = data()
    cfgs = grid_for(name)
    ref = gl.train(X, y, cfgs, loss="l4", steps=1000, log_every=100, backend="numpy")
    got = fused_engine(X, y, cfgs, loss="l4", steps=1000, log_every=100, backend="cuda")
    assert rel_err(got.loss, ref.loss) <= 1e-10
    assert rel_err(got.end_to_end, ref.end_to_end) <= 1e-10
    np.testing.assert_array_equal(got.diverged_at, ref.diverged_at)


@pytest.mark.parametrize("name", ["gd", "adam", "rmsprop"])
def test_train_cuda_float32_within_2x_of_plain_cupy(fused_engine, monkeypatch, name):
    X, y = data()
    cfgs = grid_for(name)
    ref = gl.train(X, y, cfgs, loss="l4", steps=500, log_every=100, backend="numpy")
    got = fused_engine(X, y, cfgs, loss="l4", steps=500, log_every=100, backend="cuda",
                       dtype="float32")
    monkeypatch.undo()                              # plain CuPy float32 math
    full_fp32_matmul()
    plain = gl.train(X, y, cfgs, loss="l4", steps=500, log_every=100, backend="cuda",
                     dtype="float32")
    floor = 8 * np.finfo(np.float32).eps
    assert rel_err(got.loss, ref.loss) <= 2 * rel_err(plain.loss, ref.loss) + floor


@pytest.mark.parametrize("k", [1, 2])
def test_train_cuda_e2e_rule(fused_engine, k):
    X, y = data(k=k)
    cfgs = gl.grid(depth=[1, 2, 3], lr=[1e-3, 1e-2], parameterization="e2e", init="balanced",
                   weight_decay=[0.0, 1e-3], seed=1)
    ref = gl.train(X, y, cfgs, loss="l2", steps=1000, log_every=100, backend="numpy")
    got = fused_engine(X, y, cfgs, loss="l2", steps=1000, log_every=100, backend="cuda")
    assert rel_err(got.loss, ref.loss) <= 1e-10
    assert rel_err(got.end_to_end, ref.end_to_end) <= 1e-10


def test_train_cuda_divergence_isolated(fused_engine):
    X, y = data()
    cfgs = gl.grid(depth=[1, 3], lr=[1e-2, 50.0], optimizer=["gd", "adam"], init="identity")
    ref = gl.train(X, y, cfgs, loss="l4", steps=300, log_every=10, backend="numpy",
                   diverge_above=1e6)
    got = fused_engine(X, y, cfgs, loss="l4", steps=300, log_every=10, backend="cuda",
                       diverge_above=1e6)
    np.testing.assert_array_equal(got.diverged_at, ref.diverged_at)
    assert (ref.diverged_at >= 0).any() and (ref.diverged_at < 0).any()
    ok = ref.diverged_at < 0
    assert rel_err(got.loss[ok], ref.loss[ok]) <= 1e-10
    alone = fused_engine(X, y, [c for c, o in zip(cfgs, ok) if o], loss="l4", steps=300,
                         log_every=10, backend="cuda", diverge_above=1e6)
    # not bitwise: cuBLAS may pick another GEMM algorithm for another number of configs
    assert rel_err(alone.loss, got.loss[ok]) <= 1e-12


def test_train_cuda_plain_matches_numpy():
    """Whatever the engine does on CUDA today (wired or not) is within 1e-10 of NumPy."""
    X, y = data()
    cfgs = gl.grid(depth=[1, 2, 3], width=[1, 4], lr=[1e-3, 1e-2], optimizer=["gd", "adam"],
                   init="identity")
    ref = gl.train(X, y, cfgs, loss="l4", steps=1000, log_every=100, backend="numpy")
    got = gl.train(X, y, cfgs, loss="l4", steps=1000, log_every=100, backend="cuda")
    assert rel_err(got.loss, ref.loss) <= 1e-10


def test_chunked_grid_equals_one_call(fused_engine):
    from gpulinear.cuda import memory_per_config
    X, y = data()
    cfgs = gl.grid(depth=[1, 2], lr=[1e-3, 3e-3, 1e-2], init="identity", seed=[0, 1])
    per = memory_per_config(2, (1,), 1, X.shape[1], X.shape[0], "float64", "gd", n_records=11)
    plan = plan_chunks(len(cfgs), per, free_bytes=int(5 * per / 0.8))     # 5 per chunk
    assert len(plan.chunks) == 3 and "chunks" in plan.message
    whole = fused_engine(X, y, cfgs, loss="l4", steps=200, log_every=20, backend="cuda")
    parts = [fused_engine(X, y, cfgs[s], loss="l4", steps=200, log_every=20, backend="cuda")
             for s in plan.chunks]
    assert rel_err(np.concatenate([r.loss for r in parts]), whole.loss) <= 1e-12


# ---- CUDA graphs --------------------------------------------------------------------------------

def _graph_problem(dtype=np.float64, B=6, k=1, m=300, d=16):
    rng = np.random.default_rng(3)
    Z0 = cupy.asarray(rng.normal(size=(B, k, m)), dtype=dtype)
    Yt = cupy.asarray(rng.normal(size=(k, m)), dtype=dtype)
    W = cupy.asarray(rng.normal(size=(B, 1, d)), dtype=dtype)
    G = cupy.asarray(rng.normal(size=(B, 1, d)) * 1e-2, dtype=dtype)
    lr = cupy.full(B, 1e-2, dtype=dtype)
    wd = cupy.full(B, 1e-3, dtype=dtype)
    alive = cupy.asarray(np.arange(B) % 3 != 1)
    bufs = dict(Z=cupy.empty_like(Z0), out=cupy.empty_like(Z0), values=cupy.empty(B, dtype=dtype),
                tmp=cupy.empty(B, dtype=dtype))
    return Z0, Yt, W, G, lr, wd, alive, bufs


def _custom_step(Z0, Yt, W, G, lr, wd, alive, bufs):
    def step():
        bufs["Z"][...] = Z0                                         # an elementwise copy kernel
        ops.lp_value_and_grad(bufs["Z"], Yt, bufs["out"], None, 4.0, values=bufs["values"])
        cupy.multiply(bufs["values"], 1e-3, out=bufs["tmp"])       # out= only: no allocation
        cupy.add(G, bufs["tmp"][:, None, None], out=G)
        ops.e2e_k1_update(W, G, 3, lr, wd, alive=alive)
    return step


def test_graph_replay_equals_plain_launches():
    a, b = _graph_problem(), _graph_problem()
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        # warm up the kernels and the pool outside any capture (capture hygiene)
        _custom_step(*_graph_problem())()
        plain = _custom_step(*a)
        for _ in range(3 * 10):
            plain()
    runner = GraphSteps(_custom_step(*b), 10, stream=stream)
    for _ in range(3):
        runner()
    stream.synchronize()
    if runner.fallback_reason is None:
        assert runner.graph is not None
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(cupy.asnumpy(x), cupy.asnumpy(y))
    np.testing.assert_array_equal(cupy.asnumpy(a[7]["values"]), cupy.asnumpy(b[7]["values"]))


def test_graph_falls_back_when_cublas_is_inside():
    """CuPy refuses cuBLAS under capture (cupy issue 6290): GraphSteps says why and runs the
    same steps as plain launches; results equal the eager run either way."""
    def make():
        _, _, W, G, lr, wd, alive, _ = _graph_problem()
        M = cupy.eye(W.shape[-1], dtype=W.dtype)
        outG = cupy.empty_like(G)

        def step():
            cupy.matmul(G, M, out=outG)                             # cuBLAS
            ops.e2e_k1_update(W, outG, 2, lr, wd, alive=alive)
        return W, step

    W_eager, eager = make()
    W_graph, step = make()
    runner = GraphSteps(step, 4)
    for _ in range(3):
        runner()
    runner.stream.synchronize()
    for _ in range(12):
        eager()
    cupy.cuda.Device().synchronize()
    assert runner.graph is not None or runner.fallback_reason
    np.testing.assert_array_equal(cupy.asnumpy(W_graph), cupy.asnumpy(W_eager))


def test_device_info_and_fp32():
    from cupy._core import _routines_linalg as rl
    from gpulinear.cuda import device_info, format_device_info
    info = device_info()
    assert info["available"] and info["name"] and info["driver"]
    assert info["name"] in format_device_info(info)
    full_fp32_matmul()
    assert rl.get_compute_type(np.float32) == rl.COMPUTE_TYPE_FP32
