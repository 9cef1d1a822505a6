"""The update half of the two-launch CUDA step: one Numba-CUDA launch updates every config.

A step of the CUDA path is two launches: the X-pass (CUDA C++) reads W (R, ldw), the rows of
the end-to-end matrices (R = C k; row i = output i % k of config i // k), and writes
    Gpart (S, R, ldg)   sum over the examples of split s of |r|^(p-2) r x_j  (not divided by m)
    Lpart (S, R)        sum over the examples of split s of |r|^p            (not / (p m))
and increments the step counter clock[0] (start -1, so this launch sees t = clock[0]).  Then
this kernel, one warp per config c (gpulinear.cuda._update_kernel.update_kernel), does exactly
what engine._Run.step does for c at step t:
  a. G = sum_s Gpart[s, rows of c, :d] / m;  loss = sum Lpart[:, rows of c] / (p m)
  b. healthy = loss finite, loss <= limit and W_e = W[rows of c, :d] finite; a live config that
     is not healthy is frozen: diverged_at = t, alive = 0
  c. reached_at = t the first time a live config's loss <= target (NaN target: none)
  d. log[c, t // log_every] = loss when t % log_every == 0; log[c, -1] = loss when t == steps
  e. live and t < steps: the update, then W[rows of c, :d] = the new W_e.
     deep: suffix products s_N = I_k, s_{j-1} = s_j W_j (k, n_{j-1}); q_0 = G, q_j = q_{j-1} W_j^T;
           dL/dW_j[a, b] = sum_r s_j[r, a] q_{j-1}[r, b], fused into gpulinear.optim's step of
           every element (count + 1 is the optimizers' t); the new W_e is s_0 of the new weights.
     e2e:  W_e <- (1 - lr wd N) W_e - lr P(G), Eq 12 for k = 1, Eq 10 for k > 1 through the
           eigendecomposition of the k x k matrix W_e W_e^T (see `precondition_eigen`).
     count += 1 (deep and e2e alike: count is the number of updates taken).
  f. frozen, or t == steps: params, state, count and W are left as they are.
Cost per config: O(k sum n_j n_{j-1}) (deep) or O(k^2 d + k^3) (e2e); no d x d matrix.

Eq 10 through the k x k side: with W W^T = U diag(s^2) U^T and, for b > 0,
G (W^T W)^b = (G W^T U) diag(s^(2b-2)) U^T W, Claim 1's P(G) = sum_j (W W^T)^((j-1)/N) G
(W^T W)^((N-j)/N) becomes  U diag(s^a) U^T G + U (Ht o M') U^T W  with a = 2(N-1)/N,
Ht = U^T G W^T U and M'_{ab} = sum_{j=1}^{N-1} s_a^(2(j-1)/N) s_b^(2(N-j)/N - 2) (0 where s_b = 0).
Small singular values: forming W W^T rounds its eigenvalues to ~eps s_max^2, so sqrt(lambda)
would carry ~1e-8 s_max of noise, and a noise s enters P as s^(2/N) (an O(1e-2) error at N = 8
for a rank-deficient W_e, e.g. e2e from factors narrower than k).  The eigenvectors are accurate
to ~eps, so the kernel takes s_b = |W^T u_b| (accurate to ~eps s_max, like an SVD) and then
gpulinear.e2e's rule: s <= max(k, d) eps s_max is set to exactly 0.

Importing this module imports neither numba nor CuPy; `kernel()` imports numba on first use.
"""
from __future__ import annotations

import math

import numpy as np

from ..chain import chain_product, layer_gradients
from ..e2e import end_to_end_update
from ..optim import HYPERPARAMETERS, OPTIMIZER_NAMES, get_optimizer
from .layout import Packed, unpack_params, unpack_state

__all__ = ["kernel", "kernel_args", "launch_update", "update_twin", "precondition_eigen",
           "CONFIGS_PER_BLOCK", "update_launch_shape",
           "load_update_kernel"]

# Configs per block: one warp each (gpulinear.cuda._update_kernel).  4 warps = 128 threads a
# block: small blocks fill the SMs evenly for any C (ESTIMATE, not tuned: no GPU has run it).
CONFIGS_PER_BLOCK = 4
WARP = 32
MAX_DYNAMIC_SHARED = 48 * 1024


def kernel():
    """The update kernel's Numba dispatcher (imports numba.cuda; compiled once per dtype)."""
    from ._update_kernel import update_kernel
    return update_kernel


def load_update_kernel(args):
    """Compile the update kernel for the types of `args` (kernel_args' tuple) and load it on
    the current device, now: NVVM errors (NvvmError, NvvmSupportError: no libNVVM) surface at
    compile(), link and load errors (LinkerError; CudaAPIError such as
    CUDA_ERROR_UNSUPPORTED_PTX_VERSION from a driver older than the PTX) at bind().  The
    launches with arguments of the same types reuse this compilation.  Returns the kernel."""
    import numba
    compiled = kernel().compile(tuple(numba.typeof(a) for a in args))
    compiled.bind()
    return compiled


def kernel_args(dev: Packed, Gpart, Lpart, W, clock, S, m, k, d, steps, log_every, limit,
                do_update=True):
    """The kernel's argument tuple: arrays first (dev's as device arrays), then the scalars.
    do_update=False: the bookkeeping of step clock[0] only, its update left pending (CudaStep
    ends a graph segment so, and starts the next with the same launch, do_update=True; the
    bookkeeping repeated there is idempotent)."""
    return (Gpart, Lpart, W, dev.theta, dev.state, dev.count, dev.hyper, dev.opt, dev.e2e,
            dev.depth, dev.dims, dev.poff, dev.loff, dev.soff, dev.woff, dev.work, dev.p,
            dev.alive, dev.diverged_at, dev.reached_at, dev.target, dev.log, clock,
            np.int64(S), np.int64(m), np.int64(k), np.int64(d), np.int64(steps),
            np.int64(log_every), np.float64(limit), np.int64(bool(do_update)))


def update_launch_shape(C, k, needs_eq10, configs_per_block=CONFIGS_PER_BLOCK):
    """(grid, block, dynamic shared bytes) of one update launch over C configs: one warp per
    config, `configs_per_block` warps a block; Eq 10's float64 k x k scratch per warp only when
    the call has an e2e config with k > 1 and depth > 1 (needs_eq10), and then fewer warps a
    block where they would need more than 48 KiB (k = 16: 10.1 KiB a warp, 4 a block)."""
    if not 1 <= configs_per_block <= 32:
        raise ValueError(f"configs_per_block must be in [1, 32] (a block of at most 1024 "
                         f"threads, one warp per config), got {configs_per_block}")
    per_warp = 8 * (5 * k * k + k) if needs_eq10 else 0
    if per_warp:        # within the 48 KiB of dynamic shared memory a launch gets without opt-in
        configs_per_block = max(1, min(configs_per_block, MAX_DYNAMIC_SHARED // per_warp))
    return ((-(-C // configs_per_block),), (WARP * configs_per_block,),
            per_warp * configs_per_block)


def needs_eq10(dev: Packed, k) -> bool:
    """Whether Eq 10's shared scratch is needed: an e2e config with k > 1 and depth > 1."""
    return bool(k > 1 and ((np.asarray(dev.e2e) != 0) & (np.asarray(dev.depth) > 1)).any())


def launch_update(launcher, dev: Packed, Gpart, Lpart, W, clock, S, m, k, d, steps, log_every,
                  limit=math.inf, configs_per_block=CONFIGS_PER_BLOCK, do_update=True,
                  eq10=None):
    """Launch the update of every config of `dev` (a Packed of device arrays; NumPy arrays under
    the simulator) through launcher.numba: one warp per config (update_launch_shape).
    limit: the divergence ceiling (inf: none); eq10: needs_eq10(dev, k) computed once by the
    caller (None: computed here, which reads dev.e2e and dev.depth: not inside a step)."""
    C = dev.depth.shape[0]
    if eq10 is None:
        eq10 = needs_eq10(dev, k)
    grid, block, shared = update_launch_shape(C, k, eq10, configs_per_block)
    launcher.numba("update", kernel() if launcher.runs_kernels else None, grid, block,
                   kernel_args(dev, Gpart, Lpart, W, clock, S, m, k, d, steps, log_every, limit,
                               do_update), shared_mem=shared)


def kernel_signatures():
    """[(label, Python function, Numba signature)] of the update kernel for float32 and float64,
    typed from the arguments CudaStep passes: for compiling it ahead of time without a GPU
    (numba.cuda.compile_ptx; benchmarks/static_evidence.py reads registers and SASS from it)."""
    import numba
    from ..config import Config
    from ..losses import Lp
    from ..plan import start_weights
    from .layout import pack
    out = []
    cfgs = [Config(depth=2, width=3), Config(depth=2, parameterization="e2e")]
    for dt in (np.float32, np.float64):
        packed = pack(cfgs, [Lp(4)] * 2, [start_weights(c, 4, 1) for c in cfgs], 4, 1, dt, 3)
        G, L, W = np.zeros((1, 2, 4), dt), np.zeros((1, 2), dt), np.zeros((2, 4), dt)
        args = kernel_args(packed, G, L, W, np.zeros(1, np.int64), 1, 5, 1, 4, 10, 5, math.inf)
        sig = tuple(numba.typeof(a) for a in args)
        out.append((f"update_kernel<{np.dtype(dt).name}>", kernel().py_func, sig))
    return out


# ---- the NumPy twin ----------------------------------------------------------------------------

def update_twin(packed: Packed, Gpart, Lpart, W, clock, S, m, k, d, steps, log_every,
                limit=math.inf, do_update=True):
    """One launch of the update kernel in float64 NumPy, with the library's own math per config
    (gpulinear.optim's update, chain.layer_gradients, e2e.end_to_end_update), as engine._Run.step
    does it.  Inputs are left unchanged; returns (new Packed with float64 float arrays, new W)."""
    f64 = {name: np.array(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f"
           else np.array(a) for name, a in packed._asdict().items()}
    out = Packed(**f64)
    W = np.array(W, dtype=np.float64)
    Gpart, Lpart = np.asarray(Gpart, np.float64), np.asarray(Lpart, np.float64)
    t = int(np.asarray(clock)[0])
    n_rec = out.log.shape[1]
    for c in range(len(out.depth)):
        rows = slice(c * k, (c + 1) * k)
        G = Gpart[:S, rows, :d].sum(axis=0) / m                       # (k, d)
        loss = Lpart[:S, rows].sum() / (out.p[c] * m)
        healthy = math.isfinite(loss) and loss <= limit and np.isfinite(W[rows, :d]).all()
        if out.alive[c] and not healthy:
            out.diverged_at[c], out.alive[c] = t, 0
        if (not math.isnan(out.target[c]) and loss <= out.target[c] and out.reached_at[c] < 0
                and out.alive[c]):
            out.reached_at[c] = t
        if t % log_every == 0 and t // log_every < n_rec:
            out.log[c, t // log_every] = loss
        if t == steps:
            out.log[c, n_rec - 1] = loss
        if out.alive[c] and t < steps and do_update:
            W[rows, :d] = _step_config(out, c, G)
            out.count[c] += 1
    return out, W


def _step_config(packed: Packed, c, G):
    """Update config c's parameters and state in `packed` (float64) in place; its new W_e."""
    opt = get_optimizer(OPTIMIZER_NAMES[packed.opt[c]])
    hyper = {name: packed.hyper[c:c + 1, HYPERPARAMETERS.index(name)] for name in opt.defaults}
    layers = [w[None] for w in unpack_params(packed, c)]               # [(1, n_j, n_{j-1})]
    if packed.e2e[c]:
        new = [end_to_end_update(layers[0], G[None], int(packed.depth[c]), hyper["lr"],
                                 hyper["weight_decay"])]
    else:
        grads = [G[None]] if len(layers) == 1 else layer_gradients(layers, G[None])
        state = opt.init(layers)._replace(
            count=packed.count[c:c + 1].copy(),
            **{f: [a[None] for a in arrs] for f, arrs in unpack_state(packed, c).items()})
        new, state = opt.update(grads, state, layers, hyper)
        for s, f in enumerate(opt.state_fields):
            start = int(packed.soff[c]) + s * int(packed.psize[c])
            packed.state[start:start + int(packed.psize[c])] = np.concatenate(
                [a.ravel() for a in getattr(state, f)])
    start = int(packed.poff[c])
    packed.theta[start:start + int(packed.psize[c])] = np.concatenate([w.ravel() for w in new])
    return chain_product(new)[0]


def precondition_eigen(We, G, depth):
    """Eq 10's P(G) for one (k, d) W_e, G through the eigendecomposition of W_e W_e^T: the route
    the kernel takes (module docstring), in float64 NumPy, to check against e2e.precondition."""
    We, G = np.asarray(We, np.float64), np.asarray(G, np.float64)
    N = int(depth)
    if N == 1:
        return G
    k, d = We.shape
    _, U = np.linalg.eigh(We @ We.T)
    s = np.linalg.norm(We.T @ U, axis=0)                     # |W^T u_b|, not sqrt(lambda_b)
    s = np.where(s > max(k, d) * np.finfo(np.float64).eps * s.max(), s, 0.0)
    a = 2.0 * (N - 1) / N
    Ht = U.T @ G @ We.T @ U
    live = s > 0
    safe = np.where(live, s, 1.0)
    M = np.zeros((k, k))
    for j in range(1, N):
        M += (s[:, None] ** (2.0 * (j - 1) / N)) * np.where(live, safe ** (2.0 * (N - j) / N - 2),
                                                            0.0)[None, :]
    return U @ np.diag(s ** a) @ U.T @ G + U @ (Ht * M) @ U.T @ We
