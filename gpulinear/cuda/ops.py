"""CuPy wrappers of the CUDA C kernels (kernels/*.cu) and `cuda_step_ops`, the engine's hook.

Every wrapper takes CuPy arrays, launches on CuPy's current stream, never syncs with the host
and allocates nothing when given its output buffers (`values=`, `alive=`), so a step made of
them can be captured into a CUDA graph (gpulinear.cuda.GraphSteps).  NumPy twins:
gpulinear.cuda.twins.  CuPy is imported inside the functions only.

Engine integration (CuPy only, gpulinear.engine._Run.step): the loss pass of an lp loss calls
lp_value_and_grad over the rows of that loss; the update of each bucket calls fused_update and
falls back to the generic code when it returns False.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ._loader import get_kernel

# Launch shapes: NOT tuned yet (no GPU so far); 256 threads is the usual starting point.  Tune on
# an H200 with benchmarks/bench_gpu.py and write here how it was measured.
THREADS = 256        # per block for the per-config reductions and the elementwise updates
MAX_BLOCKS = 65535   # grid-stride cap for the elementwise kernels


def _check(name, a, dtype, shape=None):
    if a.dtype != dtype or not a.flags.c_contiguous or (shape is not None and a.shape != shape):
        raise ValueError(f"{name}: need a C-contiguous {np.dtype(dtype).name} array"
                         f"{'' if shape is None else f' of shape {shape}'}, got "
                         f"{a.dtype} {a.shape} (contiguous={a.flags.c_contiguous})")


def lp_value_and_grad(Z, Yt, out, work, p, values=None):
    """Lp(p).value_and_grad on the GPU in one pass: Z (B, k, m) is overwritten with R = Z - Y
    (Yt=None: Z already is R, as when train() folds -Y into its GEMM), out (B, k, m) =
    |R|^(p-2) R, returns values (B,) = sum |R|^p / (p m).  `work` is unused (kept for the
    signature); `values` (B,) receives the result without an allocation."""
    import cupy
    B, k, m = Z.shape
    dt = Z.dtype
    _check("Z", Z, dt)
    if Yt is not None:
        _check("Yt", Yt, dt, (k, m))
    _check("out", out, dt, Z.shape)
    values = cupy.empty(B, dtype=dt) if values is None else values
    _check("values", values, dt, (B,))
    p = float(p)
    mode = 2 if p == 2.0 else 4 if p == 4.0 else 0
    kernel = get_kernel("lp_loss.cu", "gl_lp_value_grad", dt)
    kernel((B,), (THREADS,), (Z, Z if Yt is None else Yt, out, values, np.int32(k * m),
                              np.int32(m), dt.type(p), np.int32(mode), np.int32(Yt is not None)))
    return values


def e2e_k1_update(We, G, depth, lr, weight_decay=0.0, alive=None):
    """Eq 12 for We, G (B, 1, d), one block per config.  alive=None: returns a new array (all
    configs updated; the engine's mask does the freezing); alive (B,) bool: updates We in place,
    frozen configs untouched, and returns We.  k > 1 falls back to gpulinear.e2e (Eq 10)."""
    import cupy
    if We.shape[-2] != 1:
        from ..e2e import end_to_end_update
        new = end_to_end_update(We, G, depth, lr, weight_decay)
        if alive is None:
            return new
        We[...] = cupy.where(alive[:, None, None], new, We)
        return We
    B, _, d = We.shape
    dt = We.dtype
    _check("We", We, dt)
    _, gsc, _ = _strides("G", G, We)
    lr = _per_config(lr, B, dt)
    wd = _per_config(weight_decay, B, dt)
    out = We if alive is not None else cupy.empty_like(We)
    alive = _all_alive(B) if alive is None else alive
    kernel = get_kernel("e2e.cu", "gl_e2e_k1", dt)
    kernel((B,), (THREADS,), (We, G, out, lr, wd, alive, np.int32(d), np.int32(depth),
                              np.int64(gsc)))
    return out


# optimizer -> (state fields holding per-layer buffers, extra hyperparameters after lr, wd,
#               whether the kernel reads the step count)
OPTIMIZER_KERNELS = {
    "gd": ((), (), False),
    "momentum": (("buf",), ("momentum",), False),
    "nesterov": (("buf",), ("momentum",), False),
    "adagrad": (("sum",), ("lr_decay", "eps"), True),
    "adadelta": (("square_avg", "acc_delta"), ("rho", "eps"), False),
    "adam": (("exp_avg", "exp_avg_sq"), ("beta1", "beta2", "eps"), True),
    "rmsprop": (("square_avg", "grad_avg", "buf"), ("alpha", "eps", "momentum", "centered"), False),
}


def optimizer_update(name, grads, state, params, hyper, alive=None):
    """The fused `name` update (gpulinear.optim semantics) of every layer, then the step count.

    alive=None: pure, like gpulinear.optim (params and state are copied first, every config
    steps); alive (B,) bool: in place, frozen configs keep params AND state; returns the same
    (params, state) objects.  Layers (B, a, b) and state buffers must be C-contiguous.
    """
    import cupy
    fields, extra, uses_count = OPTIMIZER_KERNELS[name]
    if alive is None:                   # the pure form: copy, then update the copies in place
        params = [p.copy() for p in params]
        state = type(state)(*[[a.copy() for a in f] if isinstance(f, list) else f.copy()
                              for f in state])
    B = params[0].shape[0]
    dt = params[0].dtype
    mask = _all_alive(B) if alive is None else alive
    h = [_per_config(hyper[k], B, dt) for k in ("lr", "weight_decay", *extra)]
    kernel = get_kernel("optim.cu", "gl_opt_" + ("momentum" if name == "nesterov" else name), dt)
    for j, (p, g) in enumerate(zip(params, grads)):
        _check(f"params[{j}]", p, dt)
        gs = _strides(f"grads[{j}]", g, p)
        bufs = [getattr(state, f)[j] for f in fields]
        for f, buf in zip(fields, bufs):
            _check(f"state.{f}[{j}]", buf, dt, p.shape)
        n, per = p.size, p.size // B
        blocks = max(1, min((n + THREADS - 1) // THREADS, MAX_BLOCKS))
        args = [np.int64(n), np.int64(per), p, g, *[np.int64(x) for x in gs], *bufs, *h[:2]]
        if name in ("momentum", "nesterov"):
            args += [h[2], np.int32(name == "nesterov")]
        else:
            args += h[2:]
        if uses_count:
            args.append(state.count)
        kernel((blocks,), (THREADS,), (*args, mask))
    count_step = get_kernel("optim.cu", "gl_count_step")
    count_step(((B + THREADS - 1) // THREADS,), (THREADS,), (np.int32(B), state.count, mask))
    return params, state


def _strides(name, g, like):
    """(cols, config stride, row stride) of g in elements: g has like's shape and dtype, a
    (B, rows, cols) array whose last axis is contiguous (e.g. the engine's G view)."""
    item = like.dtype.itemsize
    if g.dtype != like.dtype or g.shape != like.shape or g.ndim != 3 or g.strides[-1] != item \
            or g.strides[0] % item or g.strides[1] % item:
        raise ValueError(f"{name}: need a {like.dtype} array of shape {like.shape} whose last "
                         f"axis is contiguous; got {g.dtype} {g.shape} strides {g.strides}")
    return g.shape[2], g.strides[0] // item, g.strides[1] // item


def _per_config(x, B, dt):
    """x as a C-contiguous (B,) array of dtype dt (no copy when it already is one)."""
    import cupy
    if isinstance(x, cupy.ndarray) and x.shape == (B,) and x.dtype == dt and x.flags.c_contiguous:
        return x
    return cupy.ascontiguousarray(cupy.broadcast_to(cupy.asarray(x, dtype=dt), (B,)))


_ALIVE: dict = {}


def _all_alive(B):
    """A cached all-True (B,) mask per (B, device): allocated once, never written."""
    import cupy
    key = (B, cupy.cuda.Device().id)
    if key not in _ALIVE:
        _ALIVE[key] = cupy.ones(B, dtype=np.bool_)
    return _ALIVE[key]


class StepOps(NamedTuple):
    """Fused replacements for one bucket's step; None where the engine keeps its generic code."""
    value_and_grad: Callable | None  # (Z, Yt, out, work, values=None) -> values (B,)
    e2e_update: Callable | None      # (We, G, depth, lr, weight_decay, alive=None) -> We'
    optimizer_update: Callable | None  # (grads, state, params, hyper, alive=None) -> (params, state)


def cuda_step_ops(loss, optimizer_name, e2e, depth) -> StepOps:
    """The CUDA kernels for a bucket of (loss, optimizer, parameterization, depth).

    Signatures are the engine's (loss.value_and_grad(Z, Yt, out, work),
    end_to_end_update(We, G, depth, lr, weight_decay), optimizer.update(grads, state, params,
    hyper)) plus an optional keyword (values= / alive=) that makes them allocation-free and in
    place.  Lp losses get the fused lp pass; softmax cross-entropy keeps the generic code.
    Also switches CuPy's float32 GEMMs to plain FP32 (no TF32; see gpulinear.cuda).
    """
    from . import full_fp32_matmul
    full_fp32_matmul()
    p = getattr(loss, "p", None)
    vg = None
    if p is not None:
        def vg(Z, Yt, out, work, values=None, _p=float(p)):
            return lp_value_and_grad(Z, Yt, out, work, _p, values=values)
    e2e_fn = None
    if e2e:
        def e2e_fn(We, G, depth_, lr, weight_decay=0.0, alive=None):
            return e2e_k1_update(We, G, depth_, lr, weight_decay, alive=alive)
    opt_fn = None
    if not e2e and optimizer_name in OPTIMIZER_KERNELS:
        def opt_fn(grads, state, params, hyper, alive=None, _name=optimizer_name):
            return optimizer_update(_name, grads, state, params, hyper, alive=alive)
    return StepOps(vg, e2e_fn, opt_fn)


# ---- the engine's two call sites ------------------------------------------------------------------

_STEP_OPS: dict = {}


def bucket_ops(b) -> StepOps:
    """cuda_step_ops for an engine Bucket, made once per (loss, optimizer, e2e, depth)."""
    key = (b.loss, b.optimizer.name, b.e2e, b.depth)
    if key not in _STEP_OPS:
        _STEP_OPS[key] = cuda_step_ops(*key)
    return _STEP_OPS[key]


def fused_update(b, G, prefixes, alive) -> bool:
    """engine._update(b, G, prefixes, alive) through the kernels: the e2e rule or the optimizer
    update of bucket b, in place when `alive` (B,) is given (frozen configs keep params and
    state), pure when it is None (every config alive).  False when there is no kernel for it
    (the engine's generic code must run)."""
    step = bucket_ops(b)
    if b.e2e:
        if step.e2e_update is None:
            return False
        b.params = [step.e2e_update(b.params[0], G, b.depth, b.hyper["lr"],
                                    b.hyper["weight_decay"], alive=alive)]
        return True
    if step.optimizer_update is None:
        return False
    from ..chain import layer_gradients
    grads = [G] if b.depth == 1 else layer_gradients(b.params, G, prefixes)
    b.params, b.state = step.optimizer_update(grads, b.state, b.params, b.hyper, alive=alive)
    return True
