"""The array step: every config of a call stepped as stacked arrays on NumPy (the reference and
the CPU backend) or, for what the fused CUDA step does not take (softmax cross-entropy), CuPy.

It is one of the two implementations of the engine's step interface (the other is
gpulinear.cuda.step.CudaStep):
    t                      updates applied so far (the step whose loss is evaluated next, or
                           was evaluated last when its update is pending)
    advance_to(end, steps) evaluate steps t..end (loss and gradient, health, target, log) with
                           the update after each, except after `end` (left pending) and `steps`
    flush(steps)           apply a pending update (a checkpoint holds t updates, none pending;
                           re-evaluating step t after a resume changes nothing: idempotent)
    all_reached()          every live config reached its target (a host sync; log points only)
    host_arrays()          log (C, n_rec), diverged_at, reached_at (C,), We (C, k, d) as NumPy
                           float64/int64 arrays in buffer-row order
    state_arrays() / load_state(z)   everything a checkpoint holds
Rows: all buckets write their end-to-end matrices into ONE buffer We (C, k, d), so each of the two
passes over X is one GEMM over every config of the call, whatever its depth:
    R^T = [X, Y] [We, -I]^T  (m, Cd k)      G^T = [X, Y]^T l'(R)^T / m  (d + k, Cd k; first d used)
The targets ride along as k extra columns of X, so the residual R = We X^T - Y comes out of the
GEMM (lp losses; xent gets 0 there and sees the logits), and the lp loss is read off G's last
k columns.  l2 configs (with gram on, gpulinear.gram) take the last rows [Cd, C) and skip the
data: their gradient is (We - W*) Sigma.  Layers and their gradients: gpulinear.chain, on its
cheaper side; gd without weight decay updates the layers in place (_gd_in_place).
"""
from __future__ import annotations

import numpy as np

from .backend import array_namespace, to_numpy
from .chain import forward, layer_gradients, output_side_factors, times
from .e2e import end_to_end_update
from .gram import GramL2, use_gram
from .optim import hyper_arrays
from .plan import build_buckets


class ArrayStep:
    kind = "array"
    exact_ceiling = True     # applies diverge_factor at every step (set by the engine)
    diverge_factor = None    # ceiling = this x each config's loss at step 0, with `limit`

    def __init__(self, xp, X64, Y64, configs, loss, dt, rec_steps, targets, limit, gram=None):
        m, d = X64.shape
        k = Y64.shape[1]
        C = len(configs)
        self.xp, self.m, self.d, self.k, self.C, self.limit = xp, m, d, k, C, limit
        gram_on = use_gram(gram, m, d)
        self.buckets = build_buckets(configs, loss, d, k, dt, xp, hyper_arrays,
                                     last=_is_l2 if gram_on else None)
        for b in self.buckets:       # no weight decay anywhere in a bucket: optim skips its passes
            b.step_hyper = {name: v for name, v in b.hyper.items()
                            if name != "weight_decay" or bool(v.any())}
        # rows [0, Cd) take the data path, rows [Cd, C) (l2 with gram on) the Gram path
        Cd = sum(b.rows.stop - b.rows.start for b in self.buckets
                 if not (gram_on and _is_l2(b.loss)))
        self.Cd = Cd
        self.gram = None
        if Cd < C:
            self.gram = GramL2.from_data(X64, Y64)
            self.sigma = xp.asarray(self.gram.sigma, dtype=dt)                    # (d, d)
            self.w_star = xp.asarray(self.gram.w_star, dtype=dt)                  # (k, d)
            self.Gg = xp.empty((C - Cd, k, d), dtype=dt)
            self.kind = "array+gram"     # its numbers differ in rounding: a checkpoint says so
        self.Xa = xp.asarray(np.hstack([X64, Y64]), dtype=dt)            # (m, d + k): [X, Y]
        self.XaT = xp.ascontiguousarray(self.Xa.T)                       # (d + k, m)
        self.Yt = xp.ascontiguousarray(xp.asarray(Y64, dtype=dt).T)      # (k, m), for xent only
        self.Wa = xp.zeros((C, k, d + k), dtype=dt)                      # [We, -I] per config
        self.We = self.Wa[:, :, :d]                                      # (C, k, d) view
        for b in self.buckets:
            if b.loss.residual:
                self.Wa[b.rows, :, d:] = -xp.eye(k, dtype=dt)
        # Residuals and l'(R) live examples-major, (m, Cd k), seen as (Cd, k, m) views: both
        # GEMMs then read their big operand plainly, R^T = [X, Y] [We, -I]^T and
        # G^T = [X, Y]^T l'(R)^T (X^T contiguous).  Against (Cd k, m) buffers this ran at +3 %
        # float64, +15-30 % float32 (OpenBLAS SkylakeX kernels, 2 cores, C 64 / 1024, Ethanol,
        # 2026-12-01); G stays transposed, (d + k, Cd k), as that GEMM writes it.
        self.RT = xp.empty((m, Cd * k), dtype=dt)
        self.Z = _rows_view(self.RT, Cd, k)                              # (Cd, k, m) view
        self.GaT = xp.empty((d + k, Cd * k), dtype=dt)
        self.Ga = self.GaT.T.reshape(Cd, k, d + k)                       # (Cd, k, d + k) view
        self.values = xp.empty(C, dtype=dt)
        self.segments = []                                               # [(loss, rows)]
        for b in self.buckets:
            if b.rows.start >= Cd:
                continue
            if self.segments and self.segments[-1][0] == b.loss:
                self.segments[-1] = (b.loss, slice(self.segments[-1][1].start, b.rows.stop))
            else:
                self.segments.append((b.loss, b.rows))
        self.d_is_r = all(_is_l2(loss) for loss, _ in self.segments)
        self.DT = None if self.d_is_r else xp.empty_like(self.RT)
        self.D = None if self.d_is_r else _rows_view(self.DT, Cd, k)
        self.work = None if all(loss.residual for loss, _ in self.segments) \
            else _rows_view(xp.empty_like(self.RT), Cd, k)               # xent's scratch
        self.rows_of = np.concatenate([b.index for b in self.buckets])   # buffer row -> config
        self.rec_steps = rec_steps
        self.log = xp.full((C, len(rec_steps)), np.nan, dtype=dt)
        self.alive = xp.ones(C, dtype=bool)
        self.diverged_at = xp.full(C, -1, dtype=np.int64)
        self.target = None if targets is None else xp.asarray(targets[self.rows_of], dtype=dt)
        self.reached_at = xp.full(C, -1, dtype=np.int64)
        self.t = 0                   # updates applied = the step being evaluated
        self.evaluated = False       # step t's loss and gradient are in place (its update pending)
        self.pending = None          # what the chain saved for that update
        if xp is not np:
            from .cuda import full_fp32_matmul
            full_fp32_matmul()       # before the first GEMM of step 0 (no TF32: see there)

    # -- the interface ---------------------------------------------------------------------
    def advance_to(self, end, steps):
        while True:
            if not self.evaluated:
                self.pending = self._evaluate(self.t)
                self.evaluated = True
            if self.t >= min(end, steps):
                return
            self._apply(self.pending)
            self.t += 1
            self.evaluated = False

    def flush(self, steps):
        if self.evaluated and self.t < steps:
            self._apply(self.pending)
            self.t += 1
            self.evaluated = False

    def all_reached(self) -> bool:
        return bool(((self.reached_at >= 0) | ~self.alive).all())

    def host_arrays(self) -> dict:
        with np.errstate(over="ignore", invalid="ignore"):   # diverged configs may overflow
            _forward(self.buckets, self.We)        # W_e of the final weights (also after resume)
        return {"log": to_numpy(self.log).astype(np.float64),
                "diverged_at": to_numpy(self.diverged_at), "reached_at": to_numpy(self.reached_at),
                "We": to_numpy(self.We).astype(np.float64)}

    def state_arrays(self) -> dict:
        arrays = {"log": self.log, "alive": self.alive, "diverged_at": self.diverged_at,
                  "reached_at": self.reached_at}
        for i, b in enumerate(self.buckets):
            for j, p in enumerate(b.params):
                arrays[f"b{i}_param{j}"] = p
            for name, value in _flatten(b.state):
                arrays[f"b{i}_state_{name}"] = value
        return {name: to_numpy(a) for name, a in arrays.items()}

    def load_state(self, z, t):
        xp = self.xp
        for name in ("log", "alive", "diverged_at", "reached_at"):
            getattr(self, name)[...] = xp.asarray(z[name])
        for i, b in enumerate(self.buckets):
            # copies: the in-place gd writes into them
            b.params = [xp.array(z[f"b{i}_param{j}"]) for j in range(len(b.params))]
            b.state = _unflatten(b.state, lambda name, i=i: xp.asarray(z[f"b{i}_state_{name}"]))
        self.t, self.evaluated, self.pending = t, False, None
        if self.diverge_factor is not None and t > 0:      # step 0 is not evaluated again
            self._set_ceiling(self.log[:, 0])

    def _set_ceiling(self, initial):
        """limit: the smaller of the absolute one and diverge_factor x the step-0 loss (C,)."""
        from .engine import relative_ceiling
        xp = self.xp
        self.limit = xp.minimum(relative_ceiling(initial, self.diverge_factor, xp), self.limit)

    # -- one step ----------------------------------------------------------------------------
    def _evaluate(self, t):
        """Loss and gradient at the current weights (step t), health, target, log; returns what
        the chain saved for the update."""
        xp, values = self.xp, self.values
        saved = _forward(self.buckets, self.We)
        if self.Cd:
            self._data_pass()
        if self.gram is not None:
            values[self.Cd:] = self.gram.value_and_grad(self.We[self.Cd:], self.Gg, self.sigma,
                                                        self.w_star)
        alive = self.alive
        if t == 0 and self.diverge_factor is not None:
            self._set_ceiling(values)
        # non-finite weights make their sum non-finite (and a sum that overflows holds weights
        # near 1e308: diverged too): one reduction instead of a (C, k, d) boolean pass
        healthy = (xp.isfinite(values) & (values <= self.limit)
                   & xp.isfinite(self.We.sum(axis=(1, 2))))
        # copyto(where=) rather than a[mask] = t: CuPy's mask assignment syncs with the host
        xp.copyto(self.diverged_at, t, where=alive & ~healthy)
        alive &= healthy
        if self.target is not None:
            xp.copyto(self.reached_at, t,
                      where=(values <= self.target) & (self.reached_at < 0) & alive)
        idx = int(np.searchsorted(self.rec_steps, t))
        if idx < len(self.rec_steps) and self.rec_steps[idx] == t:
            self.log[:, idx] = values
        return saved

    def _data_pass(self):
        """The two passes over [X, Y] for rows [0, Cd):  R = [We, -I] [X, Y]^T,
        D = l'(R),  Ga = D [X, Y].  For lp the loss needs no pass of its own:
        sum_i |r_i|^p = sum_i l'(r_i) r_i = <[We, -I], D [X, Y]> (r_i = [We, -I] [x_i, y_i]), a
        (Cd, k, d + k) dot on Ga, which the gradient GEMM computes anyway (its last k columns)."""
        xp, Cd, k, d, m = self.xp, self.Cd, self.k, self.d, self.m
        Wa = self.Wa[:Cd]
        xp.matmul(self.Xa, Wa.reshape(Cd * k, d + k).T, out=self.RT)
        DT = self.RT if self.d_is_r else self.DT    # l2 only: l'(R) = R, no pass at all
        for loss, rows in self.segments:             # the loss pass: once per loss, any depth
            if not loss.residual:
                self.values[rows] = loss.value_and_grad(self.Z[rows], self.Yt, self.D[rows],
                                                        self.work[rows])
            elif DT is self.DT:
                loss.grad_into(self.Z[rows], out=self.D[rows])
        xp.matmul(self.XaT, DT, out=self.GaT)
        for loss, rows in self.segments:
            if not loss.residual:
                continue
            inner = xp.einsum("ckj,ckj->c", Wa[rows], self.Ga[rows])
            self.values[rows] = inner * (1.0 / (loss.p * m))
        self.Ga[:, :, :d] *= 1.0 / m

    def _grad_of(self, b):
        """dL/dW_e (B, k, d) of bucket b's rows."""
        if b.rows.start >= self.Cd:
            return self.Gg[b.rows.start - self.Cd:b.rows.stop - self.Cd]
        return self.Ga[b.rows, :, :self.d]

    def _apply(self, saved):
        all_alive = self.xp is np and bool(self.alive.all())   # NumPy: skip the masking
        for b in self.buckets:
            if all_alive and _gd_in_place_applies(b, saved[id(b)]):
                _gd_in_place(b, self._grad_of(b), saved[id(b)])
            else:
                _update(b, self._grad_of(b), saved[id(b)], None if all_alive else self.alive[b.rows])


def _rows_view(AT, C, k):
    """The (C, k, m) view of an examples-major (m, C k) buffer."""
    return AT.reshape(AT.shape[0], C, k).transpose(1, 2, 0)


def _is_l2(loss) -> bool:
    return getattr(loss, "p", None) == 2.0


def _forward(buckets, We):
    """Write each bucket's W_e into its rows of We; return what the chain saved, by bucket id."""
    saved = {}
    for b in buckets:
        if b.e2e or b.depth == 1:
            We[b.rows] = b.params[0]
            saved[id(b)] = None
        else:
            We[b.rows], saved[id(b)] = forward(b.params)
    return saved


_BLOCK_BYTES = 256 * 1024    # a block of gradients stays in L2 (1 MiB here) across its 3 passes


def _gd_in_place_applies(b, saved) -> bool:
    """gd, no weight decay, factors on the output side (or depth 1); the caller checks NumPy
    and that every config is alive (a frozen config's layers must not be written)."""
    return (b.optimizer.name == "gd" and "weight_decay" not in b.step_hyper and not b.e2e
            and (saved is None or saved[0] == "output"))


def _gd_in_place(b, G, saved):
    """optim's gd, p <- p - lr * g, written into the layers in place: each layer's gradient
    T^T Q (gpulinear.chain.output_side_factors) is formed a block of configs at a time in a
    cache-sized buffer, scaled by lr and subtracted, the same operations in the same order as
    the pure update (bitwise its result, tested) without its new layers and temporaries: at
    width 100 those passes over memory cost more than the two GEMMs over the data."""
    lr = b.step_hyper["lr"].astype(G.dtype, copy=False)[:, None, None]
    factors = [(None, G)] if saved is None else output_side_factors(b.params, G, saved[1])
    for W, (T_t, Q) in zip(b.params, factors):      # bottom up: Q and T were formed before
        if W.nbytes <= _BLOCK_BYTES:   # small layers: the loop below as one block, without its
            # slicing and buffer (~1.5 us a layer; depth-8 width-1 steps are that overhead)
            g = Q.copy() if T_t is None else times(np, T_t, Q)
            g *= lr
            np.subtract(W, g, out=W)
            continue
        B = W.shape[0]
        rows = max(1, _BLOCK_BYTES // W[0].nbytes)
        buf = np.empty((min(rows, B),) + W.shape[1:], W.dtype)
        for s in range(0, B, rows):
            e = min(s + rows, B)
            g = buf[:e - s]
            if T_t is None:
                g[...] = Q[s:e]
            else:
                times(np, T_t[s:e], Q[s:e], out=g)
            g *= lr[s:e]
            np.subtract(W[s:e], g, out=W[s:e])
    b.state = b.state._replace(count=b.state.count + 1)


def _update(b, G, saved, alive):
    """One optimizer step of bucket b from dL/dW_e = G; frozen configs keep params and state."""
    if b.e2e:
        new_params = [end_to_end_update(b.params[0], G, b.depth, b.hyper["lr"],
                                        b.hyper["weight_decay"])]
        new_state = b.state
    else:
        grads = [G] if b.depth == 1 else layer_gradients(b.params, G, saved)
        new_params, new_state = b.optimizer.update(grads, b.state, b.params, b.step_hyper)
    if alive is None:       # every config of the call is alive
        b.params, b.state = new_params, new_state
    else:
        b.params = _select(alive, new_params, b.params)
        b.state = _select(alive, new_state, b.state)


def _select(alive, new, old):
    """new where the config is alive, old where it is frozen; maps over lists and NamedTuples."""
    if isinstance(new, (list, tuple)):
        items = [_select(alive, n, o) for n, o in zip(new, old)]
        return type(new)(*items) if hasattr(new, "_fields") else type(new)(items)
    if new is old or new is None:
        return new
    xp = array_namespace(new)
    mask = alive.reshape(alive.shape + (1,) * (new.ndim - 1))
    return xp.where(mask, new, old)


def _flatten(state, prefix=""):
    """(name, array) pairs of a NamedTuple of arrays / lists of arrays."""
    for field in state._fields:
        value = getattr(state, field)
        if isinstance(value, (list, tuple)):
            for j, v in enumerate(value):
                yield f"{prefix}{field}{j}", v
        else:
            yield f"{prefix}{field}", value


def _unflatten(state, read):
    """A state like `state` whose arrays come from read(name) (names as _flatten's)."""
    values = []
    for field in state._fields:
        value = getattr(state, field)
        if isinstance(value, (list, tuple)):
            values.append(type(value)(read(f"{field}{j}") for j in range(len(value))))
        else:
            values.append(read(field))
    return type(state)(*values)
