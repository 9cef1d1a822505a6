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
    R = [We, -I] [X, Y]^T  (C*k, m)      G = l'(R) [X, Y] / m  (C*k, d + k; the first d used)
The targets ride along as k extra columns of X, so the residual R = We X^T - Y comes out of the
GEMM (lp losses; xent gets 0 there and sees the logits).
"""
from __future__ import annotations

import numpy as np

from .backend import array_namespace, to_numpy
from .chain import layer_gradients, prefix_products
from .e2e import end_to_end_update
from .optim import hyper_arrays
from .plan import build_buckets


class ArrayStep:
    kind = "array"

    def __init__(self, xp, X64, Y64, configs, loss, dt, rec_steps, targets, limit, rows_of=None):
        m, d = X64.shape
        k = Y64.shape[1]
        C = len(configs)
        self.xp, self.m, self.d, self.k, self.C, self.limit = xp, m, d, k, C, limit
        self.Xa = xp.asarray(np.hstack([X64, Y64]), dtype=dt)            # (m, d + k): [X, Y]
        self.Yt = xp.ascontiguousarray(xp.asarray(Y64, dtype=dt).T)      # (k, m), for xent only
        self.buckets = build_buckets(configs, loss, d, k, dt, xp, hyper_arrays)
        self.Wa = xp.zeros((C, k, d + k), dtype=dt)                      # [We, -I] per config
        self.We = self.Wa[:, :, :d]                                      # (C, k, d) view
        for b in self.buckets:
            if b.loss.residual:
                self.Wa[b.rows, :, d:] = -xp.eye(k, dtype=dt)
        self.Z = xp.empty((C, k, m), dtype=dt)
        self.D = xp.empty_like(self.Z)
        self.work = xp.empty_like(self.Z)
        # NumPy keeps G transposed, (d + k, C k): on OpenBLAS the backward GEMM in that
        # orientation (X^T D^T, X^T contiguous) ran at 44 GFLOP/s against 32 for D X (2 cores,
        # C = 64, Ethanol shapes, 2026-11-30).
        self.transposed_G = xp is np
        if self.transposed_G:
            self.XaT = xp.ascontiguousarray(self.Xa.T)                   # (d + k, m)
            self.GaT = xp.empty((d + k, C * k), dtype=dt)
            self.G = self.GaT.T.reshape(C, k, d + k)[:, :, :d]           # (C, k, d): dL/dW_e
        else:
            self.Ga = xp.empty((C * k, d + k), dtype=dt)
            self.G = self.Ga.reshape(C, k, d + k)[:, :, :d]
        self.values = xp.empty(C, dtype=dt)
        self.segments = []                                               # [(loss, rows)]
        for b in self.buckets:
            if self.segments and self.segments[-1][0] == b.loss:
                self.segments[-1] = (b.loss, slice(self.segments[-1][1].start, b.rows.stop))
            else:
                self.segments.append((b.loss, b.rows))
        self.rows_of = np.concatenate([b.index for b in self.buckets])   # buffer row -> config
        self.rec_steps = rec_steps
        self.log = xp.full((C, len(rec_steps)), np.nan, dtype=dt)
        self.alive = xp.ones(C, dtype=bool)
        self.diverged_at = xp.full(C, -1, dtype=np.int64)
        self.target = None if targets is None else xp.asarray(targets[self.rows_of], dtype=dt)
        self.reached_at = xp.full(C, -1, dtype=np.int64)
        self.t = 0                   # updates applied = the step being evaluated
        self.evaluated = False       # step t's loss and gradient are in place (its update pending)
        self.pending = None          # the prefix products that update needs
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
            b.params = [xp.asarray(z[f"b{i}_param{j}"]) for j in range(len(b.params))]
            b.state = _unflatten(b.state, lambda name, i=i: xp.asarray(z[f"b{i}_state_{name}"]))
        self.t, self.evaluated, self.pending = t, False, None

    # -- one step ----------------------------------------------------------------------------
    def _evaluate(self, t):
        """Loss and gradient at the current weights (step t), health, target, log; returns the
        prefix products the update will need."""
        xp, C, k, d, m = self.xp, self.C, self.k, self.d, self.m
        prefixes = _forward(self.buckets, self.We)
        xp.matmul(self.Wa.reshape(C * k, d + k), self.Xa.T, out=self.Z.reshape(C * k, m))
        for loss, rows in self.segments:             # the loss pass: once per loss, any depth
            Yb = None if loss.residual else self.Yt
            self.values[rows] = loss.value_and_grad(self.Z[rows], Yb, self.D[rows], self.work[rows])
        if self.transposed_G:
            xp.matmul(self.XaT, self.D.reshape(C * k, m).T, out=self.GaT)
        else:
            xp.matmul(self.D.reshape(C * k, m), self.Xa, out=self.Ga)
        self.G *= 1.0 / m
        values, alive = self.values, self.alive
        healthy = xp.isfinite(values) & (values <= self.limit) & xp.isfinite(self.We).all(axis=(1, 2))
        # copyto(where=) rather than a[mask] = t: CuPy's mask assignment syncs with the host
        xp.copyto(self.diverged_at, t, where=alive & ~healthy)
        alive &= healthy
        if self.target is not None:
            xp.copyto(self.reached_at, t,
                      where=(values <= self.target) & (self.reached_at < 0) & alive)
        idx = int(np.searchsorted(self.rec_steps, t))
        if idx < len(self.rec_steps) and self.rec_steps[idx] == t:
            self.log[:, idx] = values
        return prefixes

    def _apply(self, prefixes):
        all_alive = self.xp is np and bool(self.alive.all())   # NumPy: skip the masking
        for b in self.buckets:
            _update(b, self.G[b.rows], prefixes[id(b)], None if all_alive else self.alive[b.rows])


def _forward(buckets, We):
    """Write each bucket's W_e into its rows of We; return its prefix products by bucket id."""
    prefixes = {}
    for b in buckets:
        if b.e2e or b.depth == 1:
            We[b.rows] = b.params[0]
            prefixes[id(b)] = None
        else:
            pre = prefix_products(b.params)
            We[b.rows] = pre[-1]
            prefixes[id(b)] = pre
    return prefixes


def _update(b, G, prefixes, alive):
    """One optimizer step of bucket b from dL/dW_e = G; frozen configs keep params and state."""
    if b.e2e:
        new_params = [end_to_end_update(b.params[0], G, b.depth, b.hyper["lr"],
                                        b.hyper["weight_decay"])]
        new_state = b.state
    else:
        grads = [G] if b.depth == 1 else layer_gradients(b.params, G, prefixes)
        new_params, new_state = b.optimizer.update(grads, b.state, b.params, b.hyper)
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
