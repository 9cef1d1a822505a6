"""gpulinear.optim: torch.optim formulas and defaults, purity, freezing, validation."""
import copy
import importlib.util
import pathlib

import numpy as np
import pytest

try:
    from gpulinear import optim
except Exception:  # the package __init__ may be mid-edit: load the module by path
    _path = pathlib.Path(__file__).resolve().parents[1] / "gpulinear" / "optim.py"
    _spec = importlib.util.spec_from_file_location("gpulinear_optim_standalone", _path)
    optim = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(optim)

NAMES = ("gd", "momentum", "nesterov", "adagrad", "adadelta", "adam", "rmsprop")
SHAPES = [(1, 7), (3, 1), (2, 3)]  # layer shapes (a, b); params are (B, a, b)
STEPS = 20
TORCH_MISSING = "torch not installed (pip install 'gpulinear[torch]')"

# Three configurations per optimizer, with different values of every hyperparameter it reads.
CONFIGS = {
    "gd": [dict(lr=0.05), dict(lr=0.02, weight_decay=0.1), dict(lr=0.1, weight_decay=0.01)],
    "momentum": [dict(lr=0.02), dict(lr=0.01, momentum=0.5, weight_decay=0.1),
                 dict(lr=0.03, momentum=0.99, weight_decay=0.01)],
    "nesterov": [dict(lr=0.02), dict(lr=0.01, momentum=0.5, weight_decay=0.1),
                 dict(lr=0.03, momentum=0.99, weight_decay=0.01)],
    "adagrad": [dict(), dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator=0.3),
                dict(lr=0.05, eps=1e-3, lr_decay=0.5)],
    "adadelta": [dict(), dict(lr=0.5, rho=0.5, eps=1e-3, weight_decay=0.1),
                 dict(lr=2.0, rho=0.99, eps=1e-8)],
    "adam": [dict(), dict(lr=0.05, beta1=0.5, beta2=0.9, eps=1e-3, weight_decay=0.1),
             dict(lr=0.01, beta1=0.0, beta2=0.99, eps=1e-10)],
    "rmsprop": [dict(), dict(lr=0.005, alpha=0.9, eps=1e-4, centered=True, weight_decay=0.1),
                dict(lr=0.002, alpha=0.5, momentum=0.9),
                dict(lr=0.001, alpha=0.95, momentum=0.5, centered=True, eps=1e-6)],
}


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy", reason="CuPy not installed")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, runtime mismatch
        pytest.skip(f"CuPy finds no usable CUDA device: {exc}")
    if n < 1:
        pytest.skip("CuPy sees 0 CUDA devices")
    return cupy


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    return np if request.param == "numpy" else _cupy_or_skip()


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _problem(B, dtype, seed=0):
    """Initial params [(B, a, b)] and a gradient function of a random quadratic plus fresh noise:
    g_j = A_j * (p_j - C_j) + noise_j(step), computed from the caller's own params."""
    rng = np.random.default_rng(seed)
    p0 = [rng.normal(size=(B,) + s) for s in SHAPES]
    A = [rng.uniform(0.5, 2.0, size=(B,) + s) for s in SHAPES]
    C = [rng.normal(size=(B,) + s) for s in SHAPES]
    noise = [[rng.normal(scale=0.3, size=(B,) + s) for s in SHAPES] for _ in range(STEPS)]

    def grad(step, params, rows=slice(None)):  # params as float64 NumPy arrays of configs `rows`
        return [(a[rows] * (p - c[rows]) + n[rows]).astype(dtype)
                for a, c, n, p in zip(A, C, noise[step], params)]
    return [p.astype(dtype) for p in p0], grad


def _run_ours(name, cfgs, dtype, xp=np, rows=None, freeze=None):
    """STEPS updates of configs `rows` of the problem; `freeze` = row to keep frozen throughout."""
    p0, grad = _problem(len(cfgs), dtype)
    rows = list(range(len(cfgs))) if rows is None else rows
    opt = optim.get_optimizer(name)
    hyper = optim.hyper_arrays(name, [cfgs[i] for i in rows], dtype, xp=xp)
    params = [xp.asarray(p[rows]) for p in p0]
    state = opt.init(params)
    for step in range(STEPS):
        host = [_host(p).astype(np.float64) for p in params]
        grads = [xp.asarray(g) for g in grad(step, host, rows)]
        new_params, new_state = opt.update(grads, state, params, hyper)
        if freeze is not None:
            alive = xp.asarray(np.arange(len(rows)) != freeze)
            keep = lambda new, old: xp.where(alive.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
            new_params = [keep(n, o) for n, o in zip(new_params, params)]
            new_state = type(state)(*[[keep(n, o) for n, o in zip(nf, of)] if isinstance(nf, list)
                                      else keep(nf, of) for nf, of in zip(new_state, state)])
        params, state = new_params, new_state
    return [_host(p) for p in params], state


def _run_torch(torch, name, cfgs, dtype):
    """The same problem with one torch.optim optimizer per config, on torch tensors of dtype."""
    p0, grad = _problem(len(cfgs), dtype)
    tdtype = {np.float64: torch.float64, np.float32: torch.float32}[np.dtype(dtype).type]
    out = []
    for i, cfg in enumerate(cfgs):
        # the hyperparameters exactly as our arrays hold them (rounded to dtype)
        h = {k: float(v[i]) for k, v in optim.hyper_arrays(name, cfgs, dtype).items()}
        ps = [torch.tensor(p[i:i + 1], dtype=tdtype, requires_grad=True) for p in p0]
        common = dict(lr=h["lr"], weight_decay=h["weight_decay"], foreach=False)
        if name in ("gd", "momentum", "nesterov"):
            o = torch.optim.SGD(ps, momentum=h.get("momentum", 0.0), nesterov=name == "nesterov",
                                **common)
        elif name == "adagrad":
            o = torch.optim.Adagrad(ps, lr_decay=h["lr_decay"], eps=h["eps"],
                                    initial_accumulator_value=h["initial_accumulator"], **common)
        elif name == "adadelta":
            o = torch.optim.Adadelta(ps, rho=h["rho"], eps=h["eps"], **common)
        elif name == "adam":
            o = torch.optim.Adam(ps, betas=(h["beta1"], h["beta2"]), eps=h["eps"], **common)
        else:
            o = torch.optim.RMSprop(ps, alpha=h["alpha"], eps=h["eps"], momentum=h["momentum"],
                                    centered=bool(h["centered"]), **common)
        for step in range(STEPS):
            gs = grad(step, [p.detach().numpy().astype(np.float64) for p in ps], slice(i, i + 1))
            for p, g in zip(ps, gs):
                p.grad = torch.from_numpy(g)
            o.step()
        out.append([p.detach().numpy() for p in ps])
    return [np.concatenate([o[j] for o in out]) for j in range(len(SHAPES))]


# Tolerance from the dtype, relative to the largest |param| of the layer: 256 eps. Measured worst
# case after 20 steps against torch 2.13 CPU: 1.4 eps (float64), 1.9 eps (float32).
RTOL = {dt: 256 * np.finfo(dt).eps for dt in (np.float64, np.float32)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_matches_torch(name, dtype):
    torch = pytest.importorskip("torch", reason=TORCH_MISSING)
    cfgs = CONFIGS[name]
    ours, state = _run_ours(name, cfgs, dtype)
    ref = _run_torch(torch, name, cfgs, dtype)
    rtol = RTOL[dtype]
    for o, r in zip(ours, ref):
        assert o.dtype == dtype and o.shape == r.shape
        np.testing.assert_allclose(o, r, rtol=rtol, atol=rtol * np.abs(r).max())
    assert np.array_equal(_host(state.count), np.full(len(cfgs), STEPS))
    for field in state:
        for a in (field if isinstance(field, list) else []):
            assert a.dtype == dtype


def test_table():
    torch = pytest.importorskip("torch", reason=TORCH_MISSING)
    assert tuple(optim.OPTIMIZERS) == NAMES
    assert all(optim.OPTIMIZERS[n].name == n and optim.get_optimizer(n) is optim.OPTIMIZERS[n]
               for n in NAMES)
    for o in optim.OPTIMIZERS.values():
        assert {"lr", "weight_decay"} <= set(o.defaults) <= set(optim.HYPERPARAMETERS)
    one = [torch.zeros(1, requires_grad=True)]
    d = {n: c(one).defaults for n, c in [("sgd", torch.optim.SGD), ("adagrad", torch.optim.Adagrad),
         ("adadelta", torch.optim.Adadelta), ("adam", torch.optim.Adam),
         ("rmsprop", torch.optim.RMSprop)]}
    sgd = {"lr": d["sgd"]["lr"], "weight_decay": d["sgd"]["weight_decay"]}
    expected = {
        "gd": sgd,
        "momentum": {**sgd, "momentum": 0.9},  # ours: 0.9 (torch's 0 would be plain gd)
        "nesterov": {**sgd, "momentum": 0.9},
        "adagrad": {**{k: d["adagrad"][k] for k in ("lr", "weight_decay", "lr_decay", "eps")},
                    "initial_accumulator": d["adagrad"]["initial_accumulator_value"]},
        "adadelta": {k: d["adadelta"][k] for k in ("lr", "weight_decay", "rho", "eps")},
        "adam": {"lr": d["adam"]["lr"], "weight_decay": d["adam"]["weight_decay"],
                 "beta1": d["adam"]["betas"][0], "beta2": d["adam"]["betas"][1],
                 "eps": d["adam"]["eps"], "eps_hat": 0.0},   # torch: eps after the sqrt(1-b2^t)
        "rmsprop": {k: float(d["rmsprop"][k]) for k in
                    ("lr", "weight_decay", "alpha", "eps", "momentum", "centered")},
    }
    assert d["sgd"]["momentum"] == 0 and d["adam"]["amsgrad"] is False
    for n in NAMES:
        assert optim.OPTIMIZERS[n].defaults == expected[n], n


@pytest.mark.parametrize("name", NAMES)
def test_pure(name, xp):
    p0, grad = _problem(4, np.float64)
    opt = optim.get_optimizer(name)
    cfgs = (CONFIGS[name] * 2)[:4]
    hyper = optim.hyper_arrays(name, cfgs, np.float64, xp=xp)
    params = [xp.asarray(p) for p in p0]
    state = opt.init(params)
    params, state = opt.update([xp.asarray(g) for g in grad(0, p0)], state, params, hyper)
    grads = [xp.asarray(g) for g in grad(1, [_host(p) for p in params])]
    before = copy.deepcopy([_host(a) for a in grads + params] + [_host(v) for v in hyper.values()]
                           + [_host(a) for f in state for a in (f if isinstance(f, list) else [f])])
    new_params, new_state = opt.update(grads, state, params, hyper)
    after = ([_host(a) for a in grads + params] + [_host(v) for v in hyper.values()]
             + [_host(a) for f in state for a in (f if isinstance(f, list) else [f])])
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert type(new_state) is type(state)
    assert all(type(p) is type(params[0]) and p.dtype == np.float64 for p in new_params)
    assert not any(np.array_equal(_host(a), _host(b)) for a, b in zip(new_params, params))


@pytest.mark.parametrize("name", NAMES)
def test_freeze_is_per_config(name):
    cfgs = (CONFIGS[name] * 2)[:3]
    frozen, state = _run_ours(name, cfgs, np.float64, freeze=1)
    alone, _ = _run_ours(name, cfgs, np.float64, rows=[0, 2])
    p0, _ = _problem(3, np.float64)
    for f, a, p in zip(frozen, alone, p0):
        assert np.array_equal(f[[0, 2]], a)  # bit for bit
        assert np.array_equal(f[1], p[1])
    assert _host(state.count).tolist() == [STEPS, 0, STEPS]


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_cupy_matches_numpy(name):
    cupy = _cupy_or_skip()
    ours_np, _ = _run_ours(name, CONFIGS[name], np.float64)
    ours_cp, state = _run_ours(name, CONFIGS[name], np.float64, xp=cupy)
    assert type(state.count).__module__.startswith("cupy")
    for a, b in zip(ours_np, ours_cp):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.abs(a).max())


def test_hyper_arrays_defaults_and_dtype(xp):
    h = optim.hyper_arrays("adam", [dict(lr=0.1, beta1=None), {}], "float32", xp=xp)
    assert set(h) == {"lr", "weight_decay", "beta1", "beta2", "eps", "eps_hat"}
    assert all(v.dtype == np.float32 and v.shape == (2,) for v in h.values())
    assert _host(h["lr"]).tolist() == [np.float32(0.1), np.float32(1e-3)]
    assert _host(h["beta1"]).tolist() == [np.float32(0.9)] * 2
    h = optim.hyper_arrays("rmsprop", [dict(centered=True), dict(centered=False)], np.float64)
    assert h["centered"].tolist() == [1.0, 0.0]
    assert optim.hyper_arrays("gd", [dict(momentum=None)], np.float64)["lr"].tolist() == [1e-3]


@pytest.mark.parametrize("name, bad, match", [
    ("gd", dict(lr=0.0), "lr"), ("gd", dict(lr=-1.0), "lr"), ("gd", dict(lr=float("inf")), "lr"),
    ("gd", dict(lr=float("nan")), "lr"), ("gd", dict(lr=1e-50), "lr"),  # 0 in float32
    ("gd", dict(weight_decay=-0.1), "weight_decay"),
    ("momentum", dict(momentum=1.0), "momentum"), ("nesterov", dict(momentum=-0.1), "momentum"),
    ("rmsprop", dict(momentum=1.5), "momentum"),
    ("adam", dict(beta1=1.0), "beta1"), ("adam", dict(beta1=-0.1), "beta1"),
    ("adam", dict(beta2=1.0), "beta2"), ("adam", dict(beta2=-0.5), "beta2"),
    ("adam", dict(eps=0.0), "eps"), ("adagrad", dict(eps=-1e-8), "eps"),
    ("adadelta", dict(rho=1.1), "rho"), ("adadelta", dict(rho=-0.1), "rho"),
    ("rmsprop", dict(alpha=1.5), "alpha"), ("rmsprop", dict(alpha=-0.1), "alpha"),
    ("adagrad", dict(lr_decay=-0.1), "lr_decay"), ("rmsprop", dict(centered=0.5), "centered"),
    ("gd", dict(beta1=0.9), "beta1.*'gd'"), ("adam", dict(momentum=0.9), "momentum.*'adam'"),
    ("gd", dict(lr="fast"), "lr"),
])
def test_validation(name, bad, match):
    with pytest.raises(ValueError, match=match):
        optim.hyper_arrays(name, [dict(), bad], np.float32)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match=r"optimizer.*'sgdx'.*'gd'.*'rmsprop'"):
        optim.get_optimizer("sgdx")
    with pytest.raises(ValueError, match="optimizer"):
        optim.hyper_arrays("lbfgs", [dict()], np.float64)


# ---- TensorFlow 1 semantics (the paper's framework), against TF 1's update formulas written out
# by hand from tf.compat.v1.train's docs/kernels (training_ops.cc), float64, one scalar at a time.

def _tf1_reference(name, lr, p0, grads):
    """TF 1 ApplyAdagrad / ApplyAdadelta / ApplyAdam with TF 1's defaults, elementwise loops."""
    p = np.array(p0, dtype=np.float64)
    if name == "adagrad":            # accum starts at initial_accumulator_value = 0.1; no eps
        accum = np.full_like(p, 0.1)
        for g in grads:
            accum += g * g
            p -= lr * g / np.sqrt(accum)
    elif name == "adadelta":         # rho 0.95, epsilon 1e-8
        accum, accum_update = np.zeros_like(p), np.zeros_like(p)
        for g in grads:
            accum = 0.95 * accum + 0.05 * g * g
            update = np.sqrt(accum_update + 1e-8) / np.sqrt(accum + 1e-8) * g
            accum_update = 0.95 * accum_update + 0.05 * update * update
            p -= lr * update
    else:                            # adam: lr_t = lr sqrt(1-b2^t)/(1-b1^t); eps outside
        m, v = np.zeros_like(p), np.zeros_like(p)
        for t, g in enumerate(grads, start=1):
            lr_t = lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            p -= lr_t * m / (np.sqrt(v) + 1e-8)
    return p


@pytest.mark.parametrize("name", ["adagrad", "adadelta", "adam"])
def test_tf1_semantics_match_tf1_formulas(name):
    """Config(**semantics("tf1", name)) steps exactly as TF 1's optimizer with its defaults; the
    torch defaults do not (so the test can tell the two apart)."""
    rng = np.random.default_rng(7)
    shape, steps, lr = (2, 3, 4), 30, 0.05
    p0 = rng.normal(size=shape)
    # small gradients: where the two frameworks differ most (eps and a0 against g^2)
    grads = [rng.normal(scale=10.0 ** rng.uniform(-6, 0), size=shape) for _ in range(steps)]
    ref = _tf1_reference(name, lr, p0, grads)

    def ours(hyper):
        opt = optim.get_optimizer(name)
        h = optim.hyper_arrays(name, [dict(lr=lr, **hyper)] * shape[0], np.float64)
        params, state = [p0.copy()], opt.init([p0.copy()])
        for g in grads:
            params, state = opt.update([g], state, params, h)
        return params[0]

    tf1 = ours(optim.semantics("tf1", name))
    np.testing.assert_allclose(tf1, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    torch_like = ours(optim.semantics("torch", name))
    assert np.abs(torch_like - ref).max() > 1e-6 * np.abs(ref).max()


def test_semantics_table_and_errors():
    assert optim.semantics("torch", "adam") == {}
    assert optim.semantics("tf1", "gd") == {}
    with pytest.raises(ValueError, match="framework"):
        optim.semantics("tf2", "adam")
    with pytest.raises(ValueError, match="optimizer"):
        optim.semantics("tf1", "adamw")
    # adagrad may drop eps only with a positive initial accumulator
    optim.hyper_arrays("adagrad", [dict(eps=0.0, initial_accumulator=0.1)], np.float64)
    with pytest.raises(ValueError, match="initial_accumulator > 0"):
        optim.hyper_arrays("adagrad", [dict(eps=0.0)], np.float64)
    with pytest.raises(ValueError, match="eps"):
        optim.hyper_arrays("adam", [dict(eps=0.0)], np.float64)
    with pytest.raises(ValueError, match="eps_hat"):
        optim.hyper_arrays("adam", [dict(eps_hat=0.5)], np.float64)
