"""The Numba-CUDA update kernel (imported lazily by gpulinear.cuda.update; imports numba).

One warp per config, several configs per block (gpulinear.cuda.update.CONFIGS_PER_BLOCK): the
32 lanes of a warp share a config's loops, reduce through warp shuffles (`warp_sum`,
`warp_prod`: 5 butterfly steps, no shared memory, no block barrier) and order their scratch
writes with `__syncwarp` (`warp_sync`).  No block-wide barrier exists, so the warps of a block
run different depths, optimizers and parameterizations independently, and a warp whose config
does not exist (the grid's last block) just returns.
  - width-1 chains with k = 1 (every hidden width 1: the paper's Fig-3 grid) take a fast path:
    two passes over the config's d inputs, one dot product G.w (a warp reduction), the N - 1
    scalar layers one per lane, and the new chain product as a warp product; no scratch round
    trip between lanes.
  - wider chains or k > 1: suffix products, q vectors and layer gradients, each a loop shared by
    the warp's lanes, through the config's scratch `work` (global, L1/L2-resident).
  - e2e: Eq 12 (k = 1) with two warp reductions; Eq 10 (k > 1) with its k x k matrices in
    float64 dynamic shared memory (launch_update asks for it only when the call has such a
    config) and one lane running the Jacobi sweeps.
The semantics, the layout and the NumPy twin are in gpulinear.cuda.update and .layout.
Everything that names an optimizer, a state slot or a hyperparameter column is derived here
from gpulinear.optim (OPTIMIZER_NAMES, state_fields, HYPERPARAMETERS): Numba freezes these
module globals into the kernel as constants.

Precision: sums and the optimizer arithmetic run in float64 registers whatever the array dtype
(loads of float32 values promote), and are rounded once when stored.

The simulator (NUMBA_ENABLE_CUDASIM=1, read once when numba is imported) has no warp shuffles
and no __syncwarp: there, and only there, `shfl_xor` exchanges through a shared array
between two block barriers and `warp_sync` is a block barrier (the simulator releases a
barrier when every live thread of the block waits at one, so warps on different paths do not
deadlock).  The butterfly in warp_sum / warp_prod is the same code on both: the simulator tests
the reduction, tests/test_compile_ahead.py compiles the shuffle version to PTX.  Other simulator
rules kept here: every shared array on its own line; no local arrays.
"""
from __future__ import annotations

import math

from numba import config as _numba_config
from numba import cuda, float64

from ..optim import HYPERPARAMETERS, OPTIMIZER_NAMES, OPTIMIZERS

WARP = 32            # lanes per config (a whole warp: the shuffles' full mask)
FULL_MASK = 0xFFFFFFFF
MAX_THREADS = 1024   # 32 configs per block at most (launch_update checks)
EPS64 = 2.220446049250313e-16
SIM = bool(_numba_config.ENABLE_CUDASIM)


def _slot(optimizer, field):
    return OPTIMIZERS[optimizer].state_fields.index(field)


# optimizer codes and state slots, derived from gpulinear.optim
GD = OPTIMIZER_NAMES.index("gd")
MOMENTUM = OPTIMIZER_NAMES.index("momentum")
NESTEROV = OPTIMIZER_NAMES.index("nesterov")
ADAGRAD = OPTIMIZER_NAMES.index("adagrad")
ADADELTA = OPTIMIZER_NAMES.index("adadelta")
ADAM = OPTIMIZER_NAMES.index("adam")
RMSPROP = OPTIMIZER_NAMES.index("rmsprop")
SGD_BUF = _slot("momentum", "buf")
assert SGD_BUF == _slot("nesterov", "buf")
ADAGRAD_SUM = _slot("adagrad", "sum")
ADADELTA_SQ, ADADELTA_ACC = _slot("adadelta", "square_avg"), _slot("adadelta", "acc_delta")
ADAM_M, ADAM_V = _slot("adam", "exp_avg"), _slot("adam", "exp_avg_sq")
RMS_SQ, RMS_GA, RMS_BUF = (_slot("rmsprop", "square_avg"), _slot("rmsprop", "grad_avg"),
                           _slot("rmsprop", "buf"))
# hyperparameter columns
H_LR, H_WD, H_MOM = (HYPERPARAMETERS.index(n) for n in ("lr", "weight_decay", "momentum"))
H_B1, H_B2, H_EPS = (HYPERPARAMETERS.index(n) for n in ("beta1", "beta2", "eps"))
H_RHO, H_ALPHA = HYPERPARAMETERS.index("rho"), HYPERPARAMETERS.index("alpha")
H_DECAY, H_CENTERED = HYPERPARAMETERS.index("lr_decay"), HYPERPARAMETERS.index("centered")
H_A0, H_EPS_HAT = HYPERPARAMETERS.index("initial_accumulator"), HYPERPARAMETERS.index("eps_hat")
# the kernel handles exactly these codes; a new optimizer in gpulinear.optim must be added here
HANDLED = (GD, MOMENTUM, NESTEROV, ADAGRAD, ADADELTA, ADAM, RMSPROP)


def eq10_scratch(k) -> int:
    """float64 elements of Eq 10's dynamic shared scratch per warp: A, U, H, T, B (k x k), s (k)."""
    return 5 * k * k + k


# ---- warp primitives: shuffles on a GPU, a shared exchange under the simulator -----------------

if SIM:
    @cuda.jit(device=True)
    def shfl_xor(val, lane_mask):
        """val of lane (lane ^ lane_mask) of this warp (simulator: through shared memory)."""
        xch = cuda.shared.array(MAX_THREADS, float64)
        tid = cuda.threadIdx.x
        cuda.syncthreads()                 # the previous exchange's reads are done
        xch[tid] = val
        cuda.syncthreads()
        return xch[tid ^ lane_mask]

    @cuda.jit(device=True)
    def warp_sync():
        cuda.syncthreads()
else:
    @cuda.jit(device=True)
    def shfl_xor(val, lane_mask):
        """val of lane (lane ^ lane_mask) of this warp."""
        return cuda.shfl_xor_sync(FULL_MASK, val, lane_mask)

    @cuda.jit(device=True)
    def warp_sync():
        """__syncwarp(): the warp's lanes meet; their memory writes are ordered across it."""
        cuda.syncwarp(FULL_MASK)


@cuda.jit(device=True)
def warp_sum(val):
    """Sum of `val` (float64) over the warp's 32 lanes, returned to every lane: a butterfly of
    5 xor-shuffles (every lane of the warp must call it)."""
    off = WARP // 2
    while off > 0:
        val += shfl_xor(val, off)
        off //= 2
    return val


@cuda.jit(device=True)
def warp_prod(val):
    """Product of `val` over the warp's lanes, to every lane (lanes without a factor pass 1)."""
    off = WARP // 2
    while off > 0:
        val *= shfl_xor(val, off)
        off //= 2
    return val


# ---- the optimizers ----------------------------------------------------------------------------

@cuda.jit(device=True)
def opt_step(code, g, w, state, so, ps, e, hyper, c, tstep):
    """New value of one parameter w with gradient g (gpulinear.optim's formulas, torch.optim's
    semantics, TF 1's through initial_accumulator / eps_hat); updates its state entries
    state[so + slot ps + e].  tstep = count + 1."""
    lr = float64(hyper[c, H_LR])
    g = g + float64(hyper[c, H_WD]) * w                       # coupled weight decay
    if code == MOMENTUM or code == NESTEROV:
        mu = float64(hyper[c, H_MOM])
        i = so + SGD_BUF * ps + e
        buf = mu * state[i] + g
        state[i] = buf
        if code == NESTEROV:
            return w - lr * (g + mu * buf)
        return w - lr * buf
    if code == ADAGRAD:
        i = so + ADAGRAD_SUM * ps + e
        clr = lr / (1.0 + (tstep - 1) * float64(hyper[c, H_DECAY]))
        s = state[i] + g * g
        state[i] = s
        denom = math.sqrt(s + float64(hyper[c, H_A0])) + float64(hyper[c, H_EPS])
        return w - clr * g / denom
    if code == ADADELTA:
        rho, eps = float64(hyper[c, H_RHO]), float64(hyper[c, H_EPS])
        i = so + ADADELTA_SQ * ps + e
        j = so + ADADELTA_ACC * ps + e
        sq = rho * state[i] + (1.0 - rho) * (g * g)
        delta = math.sqrt(state[j] + eps) / math.sqrt(sq + eps) * g
        state[i] = sq
        state[j] = rho * state[j] + (1.0 - rho) * (delta * delta)
        return w - lr * delta
    if code == ADAM:
        b1, b2 = float64(hyper[c, H_B1]), float64(hyper[c, H_B2])
        i = so + ADAM_M * ps + e
        j = so + ADAM_V * ps + e
        m = b1 * state[i] + (1.0 - b1) * g
        v = b2 * state[j] + (1.0 - b2) * (g * g)
        state[i] = m
        state[j] = v
        step_size = lr / (1.0 - math.pow(b1, tstep))
        bc2 = math.sqrt(1.0 - math.pow(b2, tstep))
        eps = float64(hyper[c, H_EPS])
        if hyper[c, H_EPS_HAT] != 0:                          # TF 1: eps after the correction
            eps = eps / bc2
        return w - step_size * m / (math.sqrt(v) / bc2 + eps)
    if code == RMSPROP:
        alpha, mu = float64(hyper[c, H_ALPHA]), float64(hyper[c, H_MOM])
        i = so + RMS_SQ * ps + e
        j = so + RMS_GA * ps + e
        b = so + RMS_BUF * ps + e
        sq = alpha * state[i] + (1.0 - alpha) * (g * g)
        ga = alpha * state[j] + (1.0 - alpha) * g
        state[i] = sq
        state[j] = ga
        var = sq - ga * ga if hyper[c, H_CENTERED] != 0 else sq
        avg = math.sqrt(var) + float64(hyper[c, H_EPS])
        if mu > 0:
            buf = mu * state[b] + g / avg
            state[b] = buf
            return w - lr * buf
        return w - lr * g / avg
    return w - lr * g                                         # GD


# ---- deep chains -------------------------------------------------------------------------------

@cuda.jit(device=True)
def is_width1(dims, N, k):
    """k = 1 and every hidden width 1 (a chain of N - 1 scalars after W_1 (1, d))."""
    if k != 1:
        return False
    for j in range(1, N):
        if dims[j] != 1:
            return False
    return True


@cuda.jit(device=True)
def width1_update(Gpart, theta, state, hyper, code, c, tstep, P0, loff, so, ps, N, d, S, m, W,
                  work, base, lane):
    """The fast path: W_1 = w (1, d), scalars a_2..a_N, k = 1.  With P = a_2 .. a_N and
    q = G.w: dL/dW_1 = P G and dL/da_j = q prod_{i != j} a_i; the new W_e = P' w' goes to
    W[c] (k = 1: row c).  Lane l updates scalar j = l + 2 and the inputs i = l, l + 32, ..."""
    wo = P0 + loff[0]
    j = lane + 2
    P = 1.0
    rest = 1.0                                                # prod_{i != j} a_i
    for i in range(2, N + 1):
        a = float64(theta[P0 + loff[i - 1]])
        P *= a
        if i != j:
            rest *= a
    q = 0.0
    for i in range(lane, d, WARP):                            # pass 1: G into work, G.w
        acc = 0.0
        for s in range(S):
            acc += Gpart[s, c, i]
        gi = acc / m
        work[base + i] = gi                                   # read back by this lane only
        q += gi * theta[wo + i]
    q = warp_sum(q)
    warp_sync()                        # every lane has read the old scalars before any is written
    newa = 1.0
    if j <= N:
        e = loff[j - 1]
        newa = opt_step(code, q * rest, float64(theta[P0 + e]), state, so, ps, e, hyper, c,
                        tstep)
        theta[P0 + e] = newa
    Pn = warp_prod(newa)                                      # the new a_2 .. a_N
    for i in range(lane, d, WARP):                            # pass 2: w and the new W_e
        e = loff[0] + i
        wn = opt_step(code, P * float64(work[base + i]), float64(theta[P0 + e]), state, so, ps,
                      e, hyper, c, tstep)
        theta[P0 + e] = wn
        W[c, i] = Pn * wn


@cuda.jit(device=True)
def suffixes(theta, P0, loff, dims, N, k, work, sbase, lane):
    """s_{N-1} = W_N, s_{j-1} = s_j W_j (k, n_{j-1}) at work[sbase + k (n_0 + .. + n_{j-2})];
    s_0 = W_e.  The warp's lanes share each product; ends with warp_sync."""
    off = 0
    for i in range(N - 1):
        off += dims[i]
    nlast = dims[N - 1]
    for i in range(lane, k * nlast, WARP):                    # s_{N-1} = W_N (k, n_{N-1})
        work[sbase + k * off + i] = theta[P0 + loff[N - 1] + i]
    warp_sync()
    for j in range(N - 1, 0, -1):                   # layer j (1-based), W_j (n_j, n_{j-1})
        nj, nj1 = dims[j], dims[j - 1]
        src = sbase + k * off                                 # s_j (k, n_j)
        off -= nj1
        dst = sbase + k * off                                 # s_{j-1} (k, n_{j-1})
        wj = P0 + loff[j - 1]
        for i in range(lane, k * nj1, WARP):
            r = i // nj1
            b = i - r * nj1
            acc = 0.0
            for a in range(nj):
                acc += float64(work[src + r * nj + a]) * theta[wj + a * nj1 + b]
            work[dst + i] = acc
        warp_sync()


@cuda.jit(device=True)
def deep_update(theta, state, hyper, code, c, tstep, P0, loff, so, ps, dims, N, k, work, base,
                lane):
    """Layer gradients from the output side and every element's optimizer step, G at
    work[base]; then the new W_e = s_0 at work[base + k d].  Ends with warp_sync."""
    d = dims[0]
    sbase = base + k * d
    qbase = sbase
    for i in range(N):
        qbase += k * dims[i]
    suffixes(theta, P0, loff, dims, N, k, work, sbase, lane)
    # q_0 = G at base; q_j = q_{j-1} W_j^T (k, n_j) for j = 1..N-1, after q_{j-1}
    src = base
    dst = qbase
    for j in range(1, N):
        nj, nj1 = dims[j], dims[j - 1]
        wj = P0 + loff[j - 1]
        for i in range(lane, k * nj, WARP):
            r = i // nj
            a = i - r * nj
            acc = 0.0
            for b in range(nj1):
                acc += float64(work[src + r * nj1 + b]) * theta[wj + a * nj1 + b]
            work[dst + i] = acc
        warp_sync()
        src = dst
        dst += k * nj
    # every element: dL/dW_j[a, b] = sum_r s_j[r, a] q_{j-1}[r, b]  (s_N = I)
    soff_j = sbase                                            # s_j for j = 1 at sbase + k n_0
    qoff = base                                               # q_{j-1}
    for j in range(1, N + 1):
        nj, nj1 = dims[j], dims[j - 1]
        soff_j += k * nj1
        wj = loff[j - 1]
        for e in range(lane, nj * nj1, WARP):
            a = e // nj1
            b = e - a * nj1
            if j == N:
                g = float64(work[qoff + a * nj1 + b])
            else:
                g = 0.0
                for r in range(k):
                    g += float64(work[soff_j + r * nj + a]) * work[qoff + r * nj1 + b]
            idx = P0 + wj + e
            theta[idx] = opt_step(code, g, float64(theta[idx]), state, so, ps, wj + e, hyper, c,
                                  tstep)
        qoff = qbase if j == 1 else qoff + k * nj1
    warp_sync()
    suffixes(theta, P0, loff, dims, N, k, work, sbase, lane)   # s_0 of the new weights


# ---- e2e: Eq 12 and Eq 10 ----------------------------------------------------------------------

@cuda.jit(device=True)
def jacobi(sm, A, U, k):
    """One lane: sm[A ..] (k x k, symmetric, row stride k) -> diagonal by cyclic Jacobi
    rotations; sm[U ..] (same layout) accumulates them, so A_in = U diag U^T."""
    for i in range(k):
        for j in range(k):
            sm[U + i * k + j] = 1.0 if i == j else 0.0
    for _ in range(60):                                       # quadratic convergence: ~6-10 used
        rotated = False
        for p in range(k - 1):
            for q in range(p + 1, k):
                apq = sm[A + p * k + q]
                app = sm[A + p * k + p]
                aqq = sm[A + q * k + q]
                # negligible against the diagonal (relative test, keeps small eigenvalues exact)
                if abs(apq) <= EPS64 * math.sqrt(abs(app * aqq)) or apq == 0.0:
                    sm[A + p * k + q] = 0.0
                    sm[A + q * k + p] = 0.0
                    continue
                rotated = True
                tau = (aqq - app) / (2.0 * apq)
                if abs(tau) > 1e150:                          # tau^2 would overflow
                    t = 0.5 / tau
                else:
                    t = 1.0 / (abs(tau) + math.sqrt(1.0 + tau * tau))
                    if tau < 0:
                        t = -t
                cs = 1.0 / math.sqrt(1.0 + t * t)
                sn = t * cs
                for r in range(k):                            # A <- A J  (columns p, q)
                    arp = sm[A + r * k + p]
                    arq = sm[A + r * k + q]
                    sm[A + r * k + p] = cs * arp - sn * arq
                    sm[A + r * k + q] = sn * arp + cs * arq
                for r in range(k):                            # A <- J^T A  (rows p, q)
                    apr = sm[A + p * k + r]
                    aqr = sm[A + q * k + r]
                    sm[A + p * k + r] = cs * apr - sn * aqr
                    sm[A + q * k + r] = sn * apr + cs * aqr
                for r in range(k):                            # U <- U J
                    urp = sm[U + r * k + p]
                    urq = sm[U + r * k + q]
                    sm[U + r * k + p] = cs * urp - sn * urq
                    sm[U + r * k + q] = sn * urp + cs * urq
        if not rotated:
            break


@cuda.jit(device=True)
def e2e_update(theta, hyper, c, P0, N, k, d, work, base, sm, so, lane):
    """new W_e = (1 - lr wd N) W_e - lr P(G) at work[base + k d], G at work[base] (Eq 12 for
    k = 1; Eq 10 for k > 1 via the eigendecomposition of W_e W_e^T, its k x k matrices at
    sm[so ..], float64 shared memory, eq10_scratch(k) per warp).  Ends with warp_sync."""
    lr = float64(hyper[c, H_LR])
    shrink = 1.0 - lr * float64(hyper[c, H_WD]) * N
    out = base + k * d
    if N == 1:                                                # P(G) = G
        for i in range(lane, k * d, WARP):
            out_v = shrink * theta[P0 + i] - lr * float64(work[base + i])
            work[out + i] = out_v
        warp_sync()
        return
    if k == 1:                                                # Eq 12
        sq = 0.0
        gw = 0.0
        for i in range(lane, d, WARP):
            w = float64(theta[P0 + i])
            sq += w * w
            gw += float64(work[base + i]) * w
        sq = warp_sum(sq)
        gw = warp_sum(gw)
        norm = math.sqrt(sq)
        for i in range(lane, d, WARP):
            w = float64(theta[P0 + i])
            step = 0.0
            if norm > 0:
                step = math.pow(norm, 2.0 - 2.0 / N) * (
                    work[base + i] + (N - 1) * (gw / norm) * (w / norm))
            work[out + i] = shrink * w - lr * step
        warp_sync()
        return
    kk = k * k
    A = so
    U = A + kk
    H = U + kk
    T = H + kk
    B = T + kk
    sv = B + kk
    # Eq 10: A = W W^T = U diag(s^2) U^T; GWt = G W^T (k x k) into H
    for i in range(lane, kk, WARP):
        a = i // k
        b = i - a * k
        acc = 0.0
        acc2 = 0.0
        for x in range(d):
            wb = float64(theta[P0 + b * d + x])
            acc += float64(theta[P0 + a * d + x]) * wb
            acc2 += float64(work[base + a * d + x]) * wb
        sm[A + i] = acc
        sm[H + i] = acc2
    warp_sync()
    if lane == 0:
        jacobi(sm, A, U, k)
    warp_sync()
    # s_b = |W^T u_b|, not sqrt(lambda_b): forming W W^T rounds its small eigenvalues to
    # ~eps s_max^2 (s ~ 1e-8 s_max of noise), while u_b is accurate to ~eps, so |W^T u_b| is
    # accurate to ~eps s_max like an SVD's; then gpulinear.e2e's zeroing rule applies
    for b in range(lane, k, WARP):
        acc = 0.0
        for x in range(d):
            proj = 0.0
            for a in range(k):
                proj += sm[U + a * k + b] * theta[P0 + a * d + x]
            acc += proj * proj
        sm[sv + b] = math.sqrt(acc)
    warp_sync()
    if lane == 0:
        smax = 0.0
        for a in range(k):
            smax = max(smax, sm[sv + a])
        tol = max(k, d) * EPS64 * smax
        for a in range(k):
            if sm[sv + a] <= tol:
                sm[sv + a] = 0.0
    warp_sync()
    for i in range(lane, kk, WARP):                           # T = GWt U
        a = i // k
        b = i - a * k
        acc = 0.0
        for x in range(k):
            acc += sm[H + a * k + x] * sm[U + x * k + b]
        sm[T + i] = acc
    warp_sync()
    ea = 2.0 * (N - 1) / N
    for i in range(lane, kk, WARP):       # H = (U^T T) o M';  A = U diag(s^a) U^T (= B1)
        a = i // k
        b = i - a * k
        acc = 0.0
        for x in range(k):
            acc += sm[U + x * k + a] * sm[T + x * k + b]
        mab = 0.0
        if sm[sv + b] > 0:
            for j in range(1, N):
                mab += (math.pow(sm[sv + a], 2.0 * (j - 1) / N)
                        * math.pow(sm[sv + b], 2.0 * (N - j) / N - 2.0))
        sm[H + i] = acc * mab
        b1 = 0.0
        for x in range(k):
            if sm[sv + x] > 0:
                b1 += sm[U + a * k + x] * math.pow(sm[sv + x], ea) * sm[U + b * k + x]
        sm[A + i] = b1
    warp_sync()
    for i in range(lane, kk, WARP):                           # T = U (Ht o M')
        a = i // k
        b = i - a * k
        acc = 0.0
        for x in range(k):
            acc += sm[U + a * k + x] * sm[H + x * k + b]
        sm[T + i] = acc
    warp_sync()
    for i in range(lane, kk, WARP):                           # B = T U^T (= B2)
        a = i // k
        b = i - a * k
        acc = 0.0
        for x in range(k):
            acc += sm[T + a * k + x] * sm[U + b * k + x]
        sm[B + i] = acc
    warp_sync()
    for i in range(lane, k * d, WARP):                        # P = B1 G + B2 W
        r = i // d
        x = i - r * d
        acc = 0.0
        for a in range(k):
            acc += (sm[A + r * k + a] * work[base + a * d + x]
                    + sm[B + r * k + a] * theta[P0 + a * d + x])
        work[out + i] = shrink * theta[P0 + i] - lr * acc
    warp_sync()


# ---- the kernel --------------------------------------------------------------------------------

@cuda.jit
def update_kernel(Gpart, Lpart, W, theta, state, count, hyper, opt, e2e, depth, dims, poff, loff,
                  soff, woff, work, p, alive, diverged_at, reached_at, target, log, clock,
                  S, m, k, d, steps, log_every, limit, do_update):
    """One step's bookkeeping and update of config c = blockIdx.x * warps + warp, one warp each
    (see gpulinear.cuda.update).  do_update = 0: the bookkeeping only (the step's update stays
    pending: see CudaStep)."""
    sm = cuda.shared.array(0, float64)                        # Eq 10 only (dynamic: 0 B else)
    tid = cuda.threadIdx.x
    lane = tid % WARP
    wib = tid // WARP
    c = cuda.blockIdx.x * (cuda.blockDim.x // WARP) + wib
    if c >= depth.shape[0]:
        return                                                # the whole warp: no barrier waits
    t = clock[0]
    base = woff[c]
    row0 = c * k
    live = alive[c] != 0                                      # read before lane 0 writes
    reached_before = reached_at[c] >= 0
    # a. the loss; whether W_e is finite (warp reductions: every lane gets both)
    part = 0.0
    for i in range(lane, S * k, WARP):
        s = i // k
        part += Lpart[s, row0 + i - s * k]
    bad = 0.0
    for i in range(lane, k * d, WARP):
        r = i // d
        if not math.isfinite(W[row0 + r, i - r * d]):
            bad = 1.0
    total = warp_sum(part)
    bad = warp_sum(bad)
    # b-d. health, target, log: every lane decides alike, lane 0 writes
    loss = total / (float64(p[c]) * m)
    healthy = math.isfinite(loss) and loss <= limit and bad == 0.0
    tg = float64(target[c])
    n_rec = log.shape[1]
    warp_sync()                                               # every lane read alive/reached_at
    if lane == 0:
        if live and not healthy:
            diverged_at[c] = t
            alive[c] = 0
        if live and healthy and tg == tg and loss <= tg and not reached_before:
            reached_at[c] = t
        if t % log_every == 0 and t // log_every < n_rec:
            log[c, t // log_every] = loss
        if t == steps:
            log[c, n_rec - 1] = loss
    if not (live and healthy and t < steps and do_update != 0):
        return                                                # the same for the whole warp
    # e. the update
    N = depth[c]
    P0 = poff[c]
    tstep = count[c] + 1
    code = opt[c]
    ps = 0
    for j in range(N):
        ps += dims[c, j + 1] * dims[c, j]
    if e2e[c] == 0 and is_width1(dims[c], N, k):
        width1_update(Gpart, theta, state, hyper, code, c, tstep, P0, loff[c], soff[c], ps, N,
                      d, S, m, W, work, base, lane)
    else:
        # G = sum_s Gpart[s] / m into work (the warp's lanes then share it)
        for i in range(lane, k * d, WARP):
            r = i // d
            b = i - r * d
            acc = 0.0
            for s in range(S):
                acc += Gpart[s, row0 + r, b]
            work[base + i] = acc / m
        warp_sync()
        if e2e[c] != 0:
            e2e_update(theta, hyper, c, P0, N, k, d, work, base, sm, wib * (5 * k * k + k),
                       lane)
        else:
            deep_update(theta, state, hyper, code, c, tstep, P0, loff[c], soff[c], ps, dims[c],
                        N, k, work, base, lane)
        out = base + k * d
        is_e2e = e2e[c] != 0
        for i in range(lane, k * d, WARP):
            r = i // d
            v = work[out + i]
            W[row0 + r, i - r * d] = v
            if is_e2e:
                theta[P0 + i] = v
    if lane == 0:
        count[c] = tstep
