"""train(): step every configuration of a grid together.

Plan: configs are grouped into buckets of identical shapes (depth, widths, loss, optimizer,
parameterization); each bucket holds its weights stacked as (B, n_j, n_{j-1}).  All buckets write
their end-to-end matrices into ONE buffer We (C, k, d) (C = all configs of the call), so each of
the two passes over X is one GEMM over every config of the call, whatever its depth:
    R = [We, -I] [X, Y]^T  (C*k, m)      G = l'(R) [X, Y] / m  (C*k, d + k; the first d used)
The targets ride along as k extra columns of X, so the residual R = We X^T - Y comes out of the
GEMM and no separate pass over (C, k, m) subtracts Y (lp losses; xent gets 0 there and sees the
logits).  Everything else per step is O(C k d) work on small arrays.  Buffers are allocated once; the loop
never syncs with the host except at log points (on the CUDA backend the log, the divergence flags
and steps-to-target all stay on the device).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from . import interrupt, memory
from .backend import array_namespace, resolve_backend, resolve_dtype, to_numpy
from .chain import layer_gradients, prefix_products
from .config import Config, check_int
from .data import check_data
from .e2e import end_to_end_update
from .inits import init_weights
from .losses import check_targets_for, config_loss, get_loss
from .optim import get_optimizer, hyper_arrays
from .result import Result


@dataclass
class Bucket:
    """Configs of one shape, stepped as stacked arrays; `index` are their positions in the call."""
    index: np.ndarray          # (B,) positions in the user's config list
    rows: slice                # their rows in the shared We / Z / G buffers
    depth: int
    loss: object
    optimizer: object
    e2e: bool
    params: list               # [W_1..W_N] each (B, n_j, n_{j-1}); [We] (B, k, d) for e2e
    state: object              # optimizer state
    hyper: dict                # name -> (B,) per-config hyperparameters


def bucket_key(cfg: Config, default_loss) -> tuple:
    """What must be equal for two configs to share stacked arrays."""
    loss = config_loss(cfg, default_loss)
    return (cfg.depth, cfg.widths, loss, cfg.optimizer, cfg.parameterization)


def plan_buckets(configs, default_loss) -> list[list[int]]:
    """Config positions grouped by bucket_key; buckets of one loss are adjacent (so the loss
    pass runs once per loss over contiguous rows), otherwise in order of first appearance."""
    groups: dict = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(bucket_key(cfg, default_loss), []).append(i)
    first_of_loss: dict = {}
    for key in groups:
        first_of_loss.setdefault(key[2], len(first_of_loss))
    return [groups[key] for key in sorted(groups, key=lambda key: first_of_loss[key[2]])]


def record_steps(steps: int, log_every: int) -> np.ndarray:
    """The steps whose loss is recorded: 0, log_every, 2 log_every, ..., and the last step."""
    rec = list(range(0, steps + 1, log_every))
    if rec[-1] != steps:
        rec.append(steps)
    return np.asarray(rec, dtype=np.int64)


def train(X, y, configs, loss="l2", steps=1000, log_every=100, backend="auto", dtype="float64",
          target=None, stop_at_target=False, diverge_above=None, progress=None,
          checkpoint=None, checkpoint_every=1000, resume=False, fused=None,
          overwrite=False) -> Result:
    """Train every config on (X, y) for `steps` full-batch steps; return a Result.

    X (m, d); y (m,) or (m, k); configs: a Config or a list of them (gl.grid); loss: "l2", "l4",
    "l<p>", gl.Lp(p) or "xent" (a Config's own `loss` wins); backend "auto" | "numpy" | "cuda";
    dtype "float64" | "float32".  The loss is recorded at step 0, every `log_every` steps and at
    the last step.  A config whose loss or weights become non-finite, or whose loss exceeds
    `diverge_above`, is flagged and frozen at the step where that is seen (its weights there,
    which may already be non-finite), and never touches another config.
    `target` (a float, or one per config) gives `steps_to_target`, the first step whose loss is
    <= target; with stop_at_target=True training ends at the first log point where every live
    config has reached it.  checkpoint: a file path; the whole state is written there (atomically)
    every `checkpoint_every` steps and at the end, and resume=True continues from it (on the
    NumPy backend a resumed run equals an uninterrupted one exactly), also to more steps than a
    finished run had; an existing checkpoint is replaced only with overwrite=True, and one
    written by another live process is refused (gpulinear.checkpoint).  Ctrl-C stops between two
    steps, writes the checkpoint and raises gpulinear.interrupt.TrainingInterrupted carrying
    the partial Result.  On NumPy a grid larger than the available memory runs in chunks
    (gpulinear.memory).  fused: on CUDA, a grid of
    width-1 gd chains on lp losses with k = 1, no target and no checkpoint runs in the Numba
    kernel that keeps each config's whole loop on the device (None or True: whenever eligible;
    when the kernel cannot run there, None falls back to the plain CUDA step and True raises;
    False: never).
    """
    configs = _check_configs(configs)
    steps = check_int("steps", steps, 0)
    log_every = check_int("log_every", log_every, 1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    n_rec = memory.check_schedule(steps, log_every)   # before anything of that size is built
    loss = get_loss(loss)
    dt = resolve_dtype(dtype)
    which = resolve_backend(backend)
    X64, Y64 = check_data(X, y)
    if diverge_above is not None and not (diverge_above > 0):
        raise ValueError(f"diverge_above must be > 0 (a loss level), got {diverge_above!r}")
    targets = _check_target(target, len(configs))
    for cfg in configs:
        check_targets_for(config_loss(cfg, loss), Y64)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path>")
    if checkpoint is not None:       # fail now, not after the training that it would lose
        ckpt.check_writable(checkpoint)
    if which == "cuda":
        import cupy as xp
        if fused is not False and checkpoint is None and _width1_eligible(configs, loss, Y64,
                                                                          targets):
            try:
                return _train_fused_width1(X64, Y64, configs, loss, dt, steps, log_every,
                                           diverge_above, which)
            except (ImportError, ValueError) as exc:   # no numba-cuda, or d too large for it
                if fused:
                    raise
                print(f"gpulinear: fused width-1 kernel not used ({exc}); plain CUDA step",
                      file=sys.stderr)
        chunks = _device_chunks(configs, loss, X64.shape, Y64.shape[1], dt, steps, log_every)
        if len(chunks) > 1:
            if checkpoint is not None:
                raise ValueError("checkpoint= with a grid larger than the device: use smaller "
                                 "grids (gpulinear.distributed: a smaller shard_size)")
            # each chunk runs all `steps`: stopping at the target is a decision over the whole grid
            stop_at_target = False
            parts = [(list(range(c.start, c.stop)),
                      train(X64, Y64, configs[c], loss=loss, steps=steps, log_every=log_every,
                            backend=backend, dtype=dtype,
                            target=None if targets is None else targets[c],
                            stop_at_target=stop_at_target, diverge_above=diverge_above,
                            progress=progress)) for c in chunks]
            return Result.concat(parts, len(configs))
    else:
        xp = np
        per, shared = memory.grid_bytes(configs, Y64.shape[1], X64.shape[1], X64.shape[0], dt, n_rec)
        plan = memory.plan_chunks(len(configs), per, memory.available_host_bytes(), shared,
                                  where="host")
        if len(plan.chunks) > 1:
            if checkpoint is not None:
                raise MemoryError(plan.message.replace("gpulinear: ", "") + "; checkpoint= needs "
                                  "one chunk: use smaller grids (gpulinear.distributed)")
            print(plan.message, file=sys.stderr)
            # each chunk runs all `steps`: stopping at the target is a decision over the whole grid
            return Result.concat([(list(range(c.start, c.stop)), train(
                X64, Y64, configs[c], loss=loss, steps=steps, log_every=log_every,
                backend=backend, dtype=dtype, target=None if targets is None else targets[c],
                diverge_above=diverge_above, progress=progress)) for c in plan.chunks],
                len(configs))
    lock = None if checkpoint is None else ckpt.CheckpointLock(checkpoint)
    try:
        return _train_run(xp, X64, Y64, configs, loss, dt, steps, log_every, targets,
                          diverge_above, stop_at_target, progress, which, checkpoint,
                          checkpoint_every, resume, overwrite)
    finally:
        if lock is not None:
            lock.release()


def _train_run(xp, X64, Y64, configs, loss, dt, steps, log_every, targets, diverge_above,
               stop_at_target, progress, which, checkpoint, checkpoint_every, resume,
               overwrite) -> Result:
    """train() after its checks, with the checkpoint's lock held: the step loop, its
    checkpoints and the answer to Ctrl-C."""
    run = _Run(xp, X64, Y64, configs, loss, dt, record_steps(steps, log_every), targets,
               math.inf if diverge_above is None else float(diverge_above))
    meta = {"loss": loss.name, "backend": which, "dtype": dt.name, "m": X64.shape[0],
            "d": X64.shape[1], "k": Y64.shape[1], "log_every": log_every, "steps_requested": steps,
            "diverge_above": diverge_above}
    fingerprint = None
    if checkpoint is not None:
        fingerprint = ckpt.run_fingerprint(X64, Y64, configs, loss, dt, log_every, targets,
                                           diverge_above, stop_at_target)
        saved = ckpt.open_run(checkpoint, fingerprint, steps, resume, overwrite)
        if saved is not None:
            run.load(saved)

    def save():
        return ckpt.save_or_rescue(lambda path: run.save(path, fingerprint, steps), checkpoint)

    bar = _Progress(steps, progress)
    with interrupt.deferred_sigint() as stop:
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # handled
                while True:
                    if checkpoint is not None and run.t % checkpoint_every == 0 \
                            and run.t > run.started:
                        save()
                    done = run.step(steps, stop_at_target)
                    if run.t % 256 == 0 or done:
                        bar.update(run.t)
                    if done:
                        break
                    if stop.requested:     # Ctrl-C, seen between two steps: the state is whole
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            bar.close(done=False)
            if not stop.requested:         # raised inside a step: the last checkpoint stands
                raise
            written = None if checkpoint is None else save()
            rec_steps, run.rec_steps = run.rec_steps, run.rec_steps[:run.n_rec]
            partial = run.result(configs, targets, dict(meta, interrupted_at=run.t))
            run.rec_steps = rec_steps
            raise interrupt.TrainingInterrupted(partial, run.t, steps, written) from None
    bar.close()
    if checkpoint is not None:
        written = save()
        if written != Path(checkpoint):
            meta["checkpoint_rescued_to"] = str(written)
    return run.result(configs, targets, meta)


def _width1_eligible(configs, default_loss, Y64, targets) -> bool:
    """Whether the fused width-1 kernel computes exactly what _Run would for this call."""
    losses = {config_loss(c, default_loss) for c in configs}
    return (Y64.shape[1] == 1 and targets is None and all(loss.residual for loss in losses)
            and all(c.optimizer == "gd" and c.parameterization == "deep"
                    and set(c.widths) <= {1} for c in configs))


def _train_fused_width1(X64, Y64, configs, default_loss, dt, steps, log_every, diverge_above,
                        backend) -> Result:
    """train() through gpulinear.cuda.train_width1_fused, one launch sequence per lp loss."""
    groups: dict = {}
    for i, c in enumerate(configs):
        groups.setdefault(config_loss(c, default_loss), []).append(i)
    parts = [(idx, _fused_width1_one_loss(X64, Y64, [configs[i] for i in idx], loss, dt, steps,
                                          log_every, diverge_above, backend))
             for loss, idx in groups.items()]
    return parts[0][1] if len(parts) == 1 else Result.concat(parts, len(configs))


def _fused_width1_one_loss(X64, Y64, configs, loss, dt, steps, log_every, diverge_above,
                           backend) -> Result:
    """Configs of one lp loss: W_1 (B, d) and the scalars w_2..w_N in the fused kernel."""
    from .cuda import width1_start
    from .cuda.fused import train_width1_fused
    d = X64.shape[1]
    W1, wrest, depth = width1_start(configs, d)                         # (B, d), (B, L), (B,)
    out = train_width1_fused(
        X64.astype(dt), Y64[:, 0].astype(dt), W1.astype(dt), wrest.astype(dt),
        np.array([c.lr for c in configs], dtype=dt), loss.p, steps, log_every,
        math.inf if diverge_above is None else float(diverge_above), depth=depth,
        weight_decay=np.array([c.weight_decay for c in configs], dtype=dt))
    scal = to_numpy(out.wrest).astype(np.float64)
    s = np.array([np.prod(scal[i, :depth[i] - 1]) for i in range(len(configs))])
    We = (s[:, None] * to_numpy(out.W1).astype(np.float64))[:, None, :]
    return Result(configs=configs, steps=np.asarray(out.steps), loss=to_numpy(out.loss).astype(
        np.float64), diverged_at=to_numpy(out.diverged_at), end_to_end=We,
        meta={"loss": loss.name, "backend": backend, "dtype": dt.name, "m": X64.shape[0],
              "d": d, "k": 1, "log_every": log_every, "steps_requested": steps,
              "diverge_above": diverge_above, "fused": "width1"})


def _device_chunks(configs, loss, x_shape, k, dt, steps, log_every) -> list:
    """Slices of `configs` that each fit in the GPU's free memory (one slice when all do)."""
    from .cuda import free_device_bytes, memory_per_config, plan_chunks
    m, d = x_shape
    n_rec = len(record_steps(steps, log_every))
    per = max(memory_per_config(c.depth, c.widths, k, d, m, dt, c.optimizer, n_rec,
                                e2e=c.parameterization == "e2e") for c in configs)
    plan = plan_chunks(len(configs), per, free_device_bytes(),   # [X, Y], its transpose, Y^T
                       shared_bytes=(2 * m * (d + k) + k * m) * dt.itemsize)
    if plan.message:
        print(plan.message, file=sys.stderr)
    return plan.chunks


class _Run:
    """The device state of one train() call and its step; everything a checkpoint holds."""

    def __init__(self, xp, X64, Y64, configs, loss, dt, rec_steps, targets, limit):
        m, d = X64.shape
        k = Y64.shape[1]
        C = len(configs)
        self.xp, self.m, self.d, self.k, self.C, self.limit = xp, m, d, k, C, limit
        self.Xa = xp.asarray(np.hstack([X64, Y64]), dtype=dt)            # (m, d + k): [X, Y]
        self.Yt = xp.ascontiguousarray(xp.asarray(Y64, dtype=dt).T)      # (k, m), for xent only
        self.buckets = _build_buckets(configs, loss, d, k, dt, xp)
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
        # C = 64, Ethanol shapes, 2026-11-30).  CuPy keeps (C k, d + k) rows: the CUDA kernels
        # read each config's gradient row with unit stride (coalesced).
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
        self.t = self.n_rec = self.started = 0
        self.cuda_ops = None
        if xp is not np:   # fused kernels for the lp pass, the e2e rule and the optimizers
            from .cuda import full_fp32_matmul
            from .cuda import ops as cuda_ops
            full_fp32_matmul()   # before the first GEMM of step 0, not at the first update
            self.cuda_ops = cuda_ops

    def step(self, steps, stop_at_target) -> bool:
        """Loss and gradient at step t, health, log; then the update to t + 1.  True when done."""
        xp, C, k, d, m = self.xp, self.C, self.k, self.d, self.m
        t = self.t
        if self.n_rec == len(self.rec_steps):   # resumed from the checkpoint of a finished run
            return True
        prefixes = _forward(self.buckets, self.We)
        xp.matmul(self.Wa.reshape(C * k, d + k), self.Xa.T, out=self.Z.reshape(C * k, m))
        for loss, rows in self.segments:             # the loss pass: once per loss, any depth
            Yb = None if loss.residual else self.Yt
            if self.cuda_ops is not None and loss.p is not None:
                self.cuda_ops.lp_value_and_grad(self.Z[rows], Yb, self.D[rows], self.work[rows],
                                                loss.p, values=self.values[rows])
            else:
                self.values[rows] = loss.value_and_grad(self.Z[rows], Yb, self.D[rows],
                                                        self.work[rows])
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
        if self.n_rec < len(self.rec_steps) and t == self.rec_steps[self.n_rec]:
            self.log[:, self.n_rec] = values
            self.n_rec += 1
            if stop_at_target and self.target is not None and t < steps \
                    and bool(((self.reached_at >= 0) | ~alive).all()):  # host sync: log points only
                self.rec_steps = self.rec_steps[:self.n_rec]
                return True
        if t == steps:
            return True
        all_alive = xp is np and bool(alive.all())   # NumPy: skip the masking; CuPy: never sync
        for b in self.buckets:
            rows_alive = None if all_alive else alive[b.rows]
            if self.cuda_ops is None or not self.cuda_ops.fused_update(
                    b, self.G[b.rows], prefixes[id(b)], rows_alive):
                _update(b, self.G[b.rows], prefixes[id(b)], rows_alive)
        self.t += 1
        return False

    def result(self, configs, targets, meta) -> Result:
        with np.errstate(over="ignore", invalid="ignore"):   # diverged configs may overflow
            _forward(self.buckets, self.We)        # W_e of the final weights (also after resume)
        order = np.argsort(self.rows_of)                              # buffer rows -> user order
        n = len(self.rec_steps)
        return Result(
            configs=configs, steps=self.rec_steps.copy(),
            loss=to_numpy(self.log[:, :n]).astype(np.float64)[order],
            diverged_at=to_numpy(self.diverged_at)[order],
            end_to_end=to_numpy(self.We).astype(np.float64)[order],
            steps_to_target=None if targets is None else to_numpy(self.reached_at)[order],
            target=targets, meta=meta)

    # -- checkpoints: thin calls into gpulinear.checkpoint (atomic, content-checked) ---------
    def _arrays(self) -> dict:
        arrays = {"t": np.int64(self.t), "n_rec": np.int64(self.n_rec),
                  "rec_steps": self.rec_steps, "log": self.log, "alive": self.alive,
                  "diverged_at": self.diverged_at, "reached_at": self.reached_at}
        for i, b in enumerate(self.buckets):
            for j, p in enumerate(b.params):
                arrays[f"b{i}_param{j}"] = p
            for name, value in _flatten(b.state):
                arrays[f"b{i}_state_{name}"] = value
        return {name: to_numpy(a) for name, a in arrays.items()}

    def save(self, path, fingerprint, steps):
        ckpt.save(path, fingerprint, self._arrays(), steps)

    def load(self, saved: dict):
        """Continue from a checkpoint's arrays (gpulinear.checkpoint.open_run), under this call's
        record schedule: a longer one when a finished run is extended."""
        xp = self.xp
        self.t = self.started = int(saved["t"])
        self.rec_steps, self.n_rec = ckpt.align_records(saved, self.rec_steps)
        self.log[:, :self.n_rec] = xp.asarray(saved["log"][:, :self.n_rec])
        for name in ("alive", "diverged_at", "reached_at"):
            getattr(self, name)[...] = xp.asarray(saved[name])
        for i, b in enumerate(self.buckets):
            b.params = [xp.asarray(saved[f"b{i}_param{j}"]) for j in range(len(b.params))]
            b.state = _unflatten(b.state, lambda name, i=i: xp.asarray(saved[f"b{i}_state_{name}"]))


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


def _build_buckets(configs, default_loss, d, k, dt, xp):
    buckets, start = [], 0
    for positions in plan_buckets(configs, default_loss):
        cfgs = [configs[i] for i in positions]
        first = cfgs[0]
        inits = [init_weights(c, d, k) for c in cfgs]
        layers = [xp.asarray(np.stack([w[j] for w in inits]), dtype=dt) for j in range(first.depth)]
        e2e = first.parameterization == "e2e"
        if e2e:  # train W_e itself, from the product of the same initial factors
            layers = [prefix_products(layers)[-1]]
        opt = get_optimizer(first.optimizer)
        B = len(cfgs)
        buckets.append(Bucket(
            index=np.asarray(positions), rows=slice(start, start + B), depth=first.depth,
            loss=config_loss(first, default_loss),
            optimizer=opt, e2e=e2e, params=layers, state=opt.init(layers),
            hyper=hyper_arrays(first.optimizer, [c.hyper() for c in cfgs], dt, xp)))
        start += B
    return buckets


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


def _update(b: Bucket, G, prefixes, alive):
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


def _check_configs(configs):
    if isinstance(configs, Config):
        configs = [configs]
    try:
        configs = list(configs)
    except TypeError:
        raise TypeError(f"configs must be a Config or a list of Config (see gl.grid), "
                        f"got {type(configs).__name__}") from None
    if not configs:
        raise ValueError("configs is empty: give at least one Config (e.g. gl.grid(depth=[1, 2]))")
    for c in configs:
        if not isinstance(c, Config):
            raise TypeError(f"configs must hold Config objects, got {type(c).__name__}")
    return configs


def _check_target(target, n):
    if target is None:
        return None
    arr = np.broadcast_to(np.asarray(target, dtype=np.float64), (n,)) if np.ndim(target) == 0 \
        else np.asarray(target, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"target must be a number or one per config ({n}), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("target must be finite")
    return arr.copy()


class _Progress:
    """A one-line progress bar with rate and ETA on stderr, only for a TTY (or progress=True)
    and long runs."""

    def __init__(self, total, enabled):
        self.total = total
        if enabled is None:
            enabled = sys.stderr.isatty() and total >= 1000
        self.enabled = bool(enabled) and total > 0
        self.start = time.perf_counter()
        self.first = None          # the step of the first update: a resumed run starts late
        self.last = 0.0

    def update(self, t):
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first, self.start = t, now
        if now - self.last < 0.2 and t < self.total:
            return
        self.last = now
        bar = "#" * int(30 * t / self.total)
        rate = (t - self.first) / max(now - self.start, 1e-9)
        eta = "" if rate <= 0 or t >= self.total else f", ETA {_clock((self.total - t) / rate)}"
        sys.stderr.write(f"\r[{bar:<30}] {t}/{self.total} steps {rate:,.0f} steps/s{eta}   ")
        sys.stderr.flush()

    def close(self, done=True):
        """End the line; done=False (interrupted) leaves the bar where it stopped."""
        if self.enabled:
            if done:
                self.update(self.total)
            sys.stderr.write("\n")
            self.enabled = False


def _clock(seconds) -> str:
    """h:mm:ss, or m:ss under an hour."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
