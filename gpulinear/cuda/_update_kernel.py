"""The Numba-CUDA update kernel (imported lazily by gpulinear.cuda.update; imports numba).

One block per config; the semantics, the layout and the NumPy twin are in gpulinear.cuda.update
and gpulinear.cuda.layout.  Everything that names an optimizer, a state slot or a hyperparameter
column is derived here from gpulinear.optim (OPTIMIZER_NAMES, state_fields, HYPERPARAMETERS):
Numba freezes these module globals into the kernel as constants.

Precision: sums and the optimizer arithmetic run in float64 registers whatever the array dtype
(loads of float32 values promote), and are rounded once when stored.  The update is O(k P) work
per config, small next to the X-pass, and the H200 runs FP64 at half its FP32 rate.

Simulator notes: every shared array is declared on its own line (the simulator aliases arrays
declared on one line); no local arrays; no warp shuffles; every syncthreads is reached by every
thread of the block (branches around them depend on per-config values only).
"""
from __future__ import annotations

import math

from numba import cuda, float64, int32

from ..optim import HYPERPARAMETERS, OPTIMIZER_NAMES, OPTIMIZERS
from .layout import K_MAX

MAX_THREADS = 256    # size of the reduction scratch; launch_update refuses larger blocks
KK = K_MAX * K_MAX   # a shared array's size must be a constant, not an expression
EPS64 = 2.220446049250313e-16


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
# the kernel handles exactly these codes; a new optimizer in gpulinear.optim must be added here
HANDLED = (GD, MOMENTUM, NESTEROV, ADAGRAD, ADADELTA, ADAM, RMSPROP)


@cuda.jit(device=True)
def block_sum(val, red, tid, nt):
    """Sum of `val` over the block's threads, returned to every thread (red: >= nt slots)."""
    cuda.syncthreads()           # red may still be read by the previous call's threads
    red[tid] = val
    cuda.syncthreads()
    half = 1
    while half < nt:
        half *= 2
    half //= 2
    while half > 0:              # any nt: pairs (i, i + half) with i + half < nt
        if tid < half and tid + half < nt:
            red[tid] += red[tid + half]
        cuda.syncthreads()
        half //= 2
    return red[0]


@cuda.jit(device=True)
def opt_step(code, g, w, state, so, ps, e, hyper, c, tstep):
    """New value of one parameter w with gradient g (gpulinear.optim's formulas, torch.optim's
    semantics); updates its state entries state[so + slot ps + e].  tstep = count + 1."""
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
        return w - clr * g / (math.sqrt(s) + float64(hyper[c, H_EPS]))
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
        denom = math.sqrt(v) / math.sqrt(1.0 - math.pow(b2, tstep)) + float64(hyper[c, H_EPS])
        return w - step_size * m / denom
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


@cuda.jit(device=True)
def suffixes(theta, P0, loff, dims, N, k, work, sbase, tid, nt):
    """s_{N-1} = W_N, s_{j-1} = s_j W_j (k, n_{j-1}) at work[sbase + k (n_0 + .. + n_{j-2})];
    s_0 = W_e.  Ends with a barrier."""
    off = 0
    for i in range(N - 1):
        off += dims[i]
    nlast = dims[N - 1]
    for i in range(tid, k * nlast, nt):                       # s_{N-1} = W_N (k, n_{N-1})
        work[sbase + k * off + i] = theta[P0 + loff[N - 1] + i]
    cuda.syncthreads()
    for j in range(N - 1, 0, -1):                   # layer j (1-based), W_j (n_j, n_{j-1})
        nj, nj1 = dims[j], dims[j - 1]
        src = sbase + k * off                                 # s_j (k, n_j)
        off -= nj1
        dst = sbase + k * off                                 # s_{j-1} (k, n_{j-1})
        wj = P0 + loff[j - 1]
        for i in range(tid, k * nj1, nt):
            r = i // nj1
            b = i - r * nj1
            acc = 0.0
            for a in range(nj):
                acc += float64(work[src + r * nj + a]) * theta[wj + a * nj1 + b]
            work[dst + i] = acc
        cuda.syncthreads()


@cuda.jit(device=True)
def deep_update(theta, state, hyper, code, c, tstep, P0, loff, so, dims, N, k, work, base,
                tid, nt):
    """Layer gradients from the output side and every element's optimizer step; then the new
    W_e = s_0 at work[base + k d].  Ends with a barrier."""
    d = dims[0]
    sbase = base + k * d
    qbase = sbase
    for i in range(N):
        qbase += k * dims[i]
    ps = 0
    for j in range(N):
        ps += dims[j + 1] * dims[j]
    suffixes(theta, P0, loff, dims, N, k, work, sbase, tid, nt)
    # q_0 = G at base; q_j = q_{j-1} W_j^T (k, n_j) for j = 1..N-1, after q_{j-1}
    src = base
    dst = qbase
    for j in range(1, N):
        nj, nj1 = dims[j], dims[j - 1]
        wj = P0 + loff[j - 1]
        for i in range(tid, k * nj, nt):
            r = i // nj
            a = i - r * nj
            acc = 0.0
            for b in range(nj1):
                acc += float64(work[src + r * nj1 + b]) * theta[wj + a * nj1 + b]
            work[dst + i] = acc
        cuda.syncthreads()
        src = dst
        dst += k * nj
    # every element: dL/dW_j[a, b] = sum_r s_j[r, a] q_{j-1}[r, b]  (s_N = I)
    soff_j = sbase                                            # s_j for j = 1 at sbase + k n_0
    qoff = base                                               # q_{j-1}
    for j in range(1, N + 1):
        nj, nj1 = dims[j], dims[j - 1]
        soff_j += k * nj1
        wj = loff[j - 1]
        for e in range(tid, nj * nj1, nt):
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
    cuda.syncthreads()
    suffixes(theta, P0, loff, dims, N, k, work, sbase, tid, nt)   # s_0 of the new weights


@cuda.jit(device=True)
def jacobi(A, U, k):
    """One thread: A (k x k, symmetric, row stride K_MAX) -> diagonal by cyclic Jacobi
    rotations; U (same layout) accumulates them, so A_in = U diag U^T."""
    for i in range(k):
        for j in range(k):
            U[i * K_MAX + j] = 1.0 if i == j else 0.0
    for _ in range(60):                                       # quadratic convergence: ~6-10 used
        rotated = False
        for p in range(k - 1):
            for q in range(p + 1, k):
                apq = A[p * K_MAX + q]
                app = A[p * K_MAX + p]
                aqq = A[q * K_MAX + q]
                # negligible against the diagonal (relative test, keeps small eigenvalues exact)
                if abs(apq) <= EPS64 * math.sqrt(abs(app * aqq)) or apq == 0.0:
                    A[p * K_MAX + q] = 0.0
                    A[q * K_MAX + p] = 0.0
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
                    arp = A[r * K_MAX + p]
                    arq = A[r * K_MAX + q]
                    A[r * K_MAX + p] = cs * arp - sn * arq
                    A[r * K_MAX + q] = sn * arp + cs * arq
                for r in range(k):                            # A <- J^T A  (rows p, q)
                    apr = A[p * K_MAX + r]
                    aqr = A[q * K_MAX + r]
                    A[p * K_MAX + r] = cs * apr - sn * aqr
                    A[q * K_MAX + r] = sn * apr + cs * aqr
                for r in range(k):                            # U <- U J
                    urp = U[r * K_MAX + p]
                    urq = U[r * K_MAX + q]
                    U[r * K_MAX + p] = cs * urp - sn * urq
                    U[r * K_MAX + q] = sn * urp + cs * urq
        if not rotated:
            break


@cuda.jit(device=True)
def e2e_update(theta, hyper, c, P0, N, k, d, work, base, red, A, U, H, T, B, sv, tid, nt):
    """new W_e = (1 - lr wd N) W_e - lr P(G) at work[base + k d] (Eq 12 for k = 1, Eq 10 via the
    eigendecomposition of W_e W_e^T for k > 1).  Ends with a barrier."""
    lr = float64(hyper[c, H_LR])
    shrink = 1.0 - lr * float64(hyper[c, H_WD]) * N
    out = base + k * d
    if N == 1:                                                # P(G) = G
        for i in range(tid, k * d, nt):
            out_v = shrink * theta[P0 + i] - lr * float64(work[base + i])
            work[out + i] = out_v
        cuda.syncthreads()
        return
    if k == 1:                                                # Eq 12
        sq = 0.0
        gw = 0.0
        for i in range(tid, d, nt):
            w = float64(theta[P0 + i])
            sq += w * w
        sq = block_sum(sq, red, tid, nt)
        for i in range(tid, d, nt):
            gw += float64(work[base + i]) * theta[P0 + i]
        gw = block_sum(gw, red, tid, nt)
        norm = math.sqrt(sq)
        for i in range(tid, d, nt):
            w = float64(theta[P0 + i])
            step = 0.0
            if norm > 0:
                step = math.pow(norm, 2.0 - 2.0 / N) * (
                    work[base + i] + (N - 1) * (gw / norm) * (w / norm))
            work[out + i] = shrink * w - lr * step
        cuda.syncthreads()
        return
    # Eq 10: A = W W^T = U diag(s^2) U^T; GWt = G W^T (k x k) into H
    for i in range(tid, k * k, nt):
        a = i // k
        b = i - a * k
        acc = 0.0
        acc2 = 0.0
        for x in range(d):
            wb = float64(theta[P0 + b * d + x])
            acc += float64(theta[P0 + a * d + x]) * wb
            acc2 += float64(work[base + a * d + x]) * wb
        A[a * K_MAX + b] = acc
        H[a * K_MAX + b] = acc2
    cuda.syncthreads()
    if tid == 0:
        jacobi(A, U, k)
    cuda.syncthreads()
    # s_b = |W^T u_b|, not sqrt(lambda_b): forming W W^T rounds its small eigenvalues to
    # ~eps s_max^2 (s ~ 1e-8 s_max of noise), while u_b is accurate to ~eps, so |W^T u_b| is
    # accurate to ~eps s_max like an SVD's; then gpulinear.e2e's zeroing rule applies
    for b in range(tid, k, nt):
        acc = 0.0
        for x in range(d):
            proj = 0.0
            for a in range(k):
                proj += U[a * K_MAX + b] * theta[P0 + a * d + x]
            acc += proj * proj
        sv[b] = math.sqrt(acc)
    cuda.syncthreads()
    if tid == 0:
        smax = 0.0
        for a in range(k):
            smax = max(smax, sv[a])
        tol = max(k, d) * EPS64 * smax
        for a in range(k):
            if sv[a] <= tol:
                sv[a] = 0.0
    cuda.syncthreads()
    for i in range(tid, k * k, nt):                           # T = GWt U
        a = i // k
        b = i - a * k
        acc = 0.0
        for x in range(k):
            acc += H[a * K_MAX + x] * U[x * K_MAX + b]
        T[a * K_MAX + b] = acc
    cuda.syncthreads()
    ea = 2.0 * (N - 1) / N
    for i in range(tid, k * k, nt):       # H = (U^T T) o M';  A = U diag(s^a) U^T (= B1)
        a = i // k
        b = i - a * k
        acc = 0.0
        for x in range(k):
            acc += U[x * K_MAX + a] * T[x * K_MAX + b]
        mab = 0.0
        if sv[b] > 0:
            for j in range(1, N):
                mab += math.pow(sv[a], 2.0 * (j - 1) / N) * math.pow(sv[b], 2.0 * (N - j) / N - 2.0)
        H[a * K_MAX + b] = acc * mab
        b1 = 0.0
        for x in range(k):
            if sv[x] > 0:
                b1 += U[a * K_MAX + x] * math.pow(sv[x], ea) * U[b * K_MAX + x]
        A[a * K_MAX + b] = b1
    cuda.syncthreads()
    for i in range(tid, k * k, nt):                           # T = U (Ht o M')
        a = i // k
        b = i - a * k
        acc = 0.0
        for x in range(k):
            acc += U[a * K_MAX + x] * H[x * K_MAX + b]
        T[a * K_MAX + b] = acc
    cuda.syncthreads()
    for i in range(tid, k * k, nt):                           # B = T U^T (= B2)
        a = i // k
        b = i - a * k
        acc = 0.0
        for x in range(k):
            acc += T[a * K_MAX + x] * U[b * K_MAX + x]
        B[a * K_MAX + b] = acc
    cuda.syncthreads()
    for i in range(tid, k * d, nt):                           # P = B1 G + B2 W
        r = i // d
        x = i - r * d
        acc = 0.0
        for a in range(k):
            acc += (A[r * K_MAX + a] * work[base + a * d + x]
                    + B[r * K_MAX + a] * theta[P0 + a * d + x])
        work[out + i] = shrink * theta[P0 + i] - lr * acc
    cuda.syncthreads()


@cuda.jit
def update_kernel(Gpart, Lpart, W, theta, state, count, hyper, opt, e2e, depth, dims, poff, loff,
                  soff, woff, work, p, alive, diverged_at, reached_at, target, log, clock,
                  S, m, k, d, steps, log_every, limit, do_update):
    """One step's bookkeeping and update of config c = blockIdx.x (see gpulinear.cuda.update).
    do_update = 0: the bookkeeping only (the step's update stays pending: see CudaStep)."""
    red = cuda.shared.array(MAX_THREADS, float64)
    flag = cuda.shared.array(2, int32)
    A = cuda.shared.array(KK, float64)
    U = cuda.shared.array(KK, float64)
    H = cuda.shared.array(KK, float64)
    T = cuda.shared.array(KK, float64)
    B = cuda.shared.array(KK, float64)
    sv = cuda.shared.array(K_MAX, float64)
    c = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    t = clock[0]
    base = woff[c]
    row0 = c * k
    # a. G = sum_s Gpart[s] / m into work; the loss; whether W_e is finite
    for i in range(tid, k * d, nt):
        r = i // d
        b = i - r * d
        acc = 0.0
        for s in range(S):
            acc += Gpart[s, row0 + r, b]
        work[base + i] = acc / m
    part = 0.0
    for i in range(tid, S * k, nt):
        s = i // k
        part += Lpart[s, row0 + i - s * k]
    total = block_sum(part, red, tid, nt)
    if tid == 0:
        flag[0] = 1
    cuda.syncthreads()
    for i in range(tid, k * d, nt):
        r = i // d
        if not math.isfinite(W[row0 + r, i - r * d]):
            flag[0] = 0                                       # every writer writes 0: no race
    cuda.syncthreads()
    # b-d. health, target, log (one thread); flag[1]: whether this config takes a step
    if tid == 0:
        loss = total / (float64(p[c]) * m)
        live = alive[c] != 0
        if live and not (math.isfinite(loss) and loss <= limit and flag[0] == 1):
            diverged_at[c] = t
            alive[c] = 0
            live = False
        tg = float64(target[c])
        if live and tg == tg and loss <= tg and reached_at[c] < 0:
            reached_at[c] = t
        n_rec = log.shape[1]
        if t % log_every == 0 and t // log_every < n_rec:
            log[c, t // log_every] = loss
        if t == steps:
            log[c, n_rec - 1] = loss
        flag[1] = 1 if (live and t < steps and do_update != 0) else 0
    cuda.syncthreads()
    if flag[1] == 0:                                          # the same for the whole block
        return
    # e. the update; the new W_e lands in work[base + k d .. base + 2 k d)
    N = depth[c]
    P0 = poff[c]
    tstep = count[c] + 1                                      # read before thread 0 writes it
    if e2e[c] != 0:
        e2e_update(theta, hyper, c, P0, N, k, d, work, base, red, A, U, H, T, B, sv, tid, nt)
    else:
        deep_update(theta, state, hyper, opt[c], c, tstep, P0, loff[c], soff[c], dims[c], N, k,
                    work, base, tid, nt)
    out = base + k * d
    is_e2e = e2e[c] != 0
    for i in range(tid, k * d, nt):
        r = i // d
        v = work[out + i]
        W[row0 + r, i - r * d] = v
        if is_e2e:
            theta[P0 + i] = v
    if tid == 0:
        count[c] = tstep
