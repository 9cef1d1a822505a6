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

import numpy as np

from .backend import array_namespace, resolve_backend, resolve_dtype, to_numpy
from .chain import layer_gradients, prefix_products
from .config import Config
from .data import check_data
from .e2e import end_to_end_update
from .inits import init_weights
from .losses import get_loss
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
    loss = get_loss(cfg.loss if cfg.loss is not None else default_loss)
    return (cfg.depth, cfg.widths, loss, cfg.optimizer, cfg.parameterization)


def plan_buckets(configs, default_loss) -> list[list[int]]:
    """Config positions grouped by bucket_key, buckets in order of first appearance."""
    groups: dict = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(bucket_key(cfg, default_loss), []).append(i)
    return list(groups.values())


def record_steps(steps: int, log_every: int) -> np.ndarray:
    """The steps whose loss is recorded: 0, log_every, 2 log_every, ..., and the last step."""
    rec = list(range(0, steps + 1, log_every))
    if rec[-1] != steps:
        rec.append(steps)
    return np.asarray(rec, dtype=np.int64)


def train(X, y, configs, loss="l2", steps=1000, log_every=100, backend="auto", dtype="float64",
          target=None, stop_at_target=False, diverge_above=None, progress=None) -> Result:
    """Train every config on (X, y) for `steps` full-batch steps; return a Result.

    X (m, d); y (m,) or (m, k); configs: a Config or a list of them (gl.grid); loss: "l2", "l4",
    "l<p>", gl.Lp(p) or "xent" (a Config's own `loss` wins); backend "auto" | "numpy" | "cuda";
    dtype "float64" | "float32".  The loss is recorded at step 0, every `log_every` steps and at
    the last step.  A config whose loss or weights become non-finite, or whose loss exceeds
    `diverge_above`, is flagged, frozen at its last weights and never touches another config.
    `target` (a float, or one per config) gives `steps_to_target`, the first step whose loss is
    <= target; with stop_at_target=True training ends at the first log point where every live
    config has reached it.
    """
    configs = _check_configs(configs)
    steps = _check_count("steps", steps, 0)
    log_every = _check_count("log_every", log_every, 1)
    loss = get_loss(loss)
    for cfg in configs:
        if cfg.loss is None and loss is None:
            raise ValueError("loss: give train(loss=...) or set Config.loss")
    dt = resolve_dtype(dtype)
    which = resolve_backend(backend)
    X64, Y64 = check_data(X, y)
    if diverge_above is not None and not (diverge_above > 0):
        raise ValueError(f"diverge_above must be > 0 (a loss level), got {diverge_above!r}")
    targets = _check_target(target, len(configs))

    if which == "cuda":
        import cupy as xp
    else:
        xp = np
    m, d = X64.shape
    k = Y64.shape[1]
    C = len(configs)
    Xa = xp.asarray(np.hstack([X64, Y64]), dtype=dt)            # (m, d + k): [X, Y]
    Yt = xp.ascontiguousarray(xp.asarray(Y64, dtype=dt).T)      # (k, m), for xent only

    buckets = _build_buckets(configs, loss, d, k, dt, xp)
    Wa = xp.zeros((C, k, d + k), dtype=dt)                      # [We, -I] per config
    We = Wa[:, :, :d]                                           # (C, k, d) view
    for b in buckets:
        if b.loss.residual:
            Wa[b.rows, :, d:] = -xp.eye(k, dtype=dt)
    Z = xp.empty((C, k, m), dtype=dt)
    D = xp.empty_like(Z)
    work = xp.empty_like(Z)
    Ga = xp.empty((C, k, d + k), dtype=dt)
    G = Ga[:, :, :d]                                            # (C, k, d) view: dL/dW_e
    values = xp.empty(C, dtype=dt)
    rows_of = np.concatenate([b.index for b in buckets])        # buffer row -> config position
    rec_steps = record_steps(steps, log_every)
    log = xp.full((C, len(rec_steps)), np.nan, dtype=dt)
    alive = xp.ones(C, dtype=bool)
    diverged_at = xp.full(C, -1, dtype=np.int64)
    target_dev = None if targets is None else xp.asarray(targets[rows_of], dtype=dt)
    reached_at = xp.full(C, -1, dtype=np.int64)
    limit = math.inf if diverge_above is None else float(diverge_above)
    bar = _Progress(steps, progress)

    n_rec = 0
    t = 0
    errstate = np.errstate(over="ignore", invalid="ignore", divide="ignore")  # divergence is handled
    errstate.__enter__()
    while True:
        prefixes = _forward(buckets, We)
        xp.matmul(Wa.reshape(C * k, d + k), Xa.T, out=Z.reshape(C * k, m))
        for b in buckets:
            values[b.rows] = b.loss.value_and_grad(Z[b.rows], None if b.loss.residual else Yt,
                                                   D[b.rows], work[b.rows])
        xp.matmul(D.reshape(C * k, m), Xa, out=Ga.reshape(C * k, d + k))
        G *= 1.0 / m

        healthy = xp.isfinite(values) & (values <= limit) & xp.isfinite(We).all(axis=(1, 2))
        newly_dead = alive & ~healthy
        diverged_at[newly_dead] = t
        alive &= healthy
        if target_dev is not None:
            hit = (values <= target_dev) & (reached_at < 0) & alive
            reached_at[hit] = t
        if n_rec < len(rec_steps) and t == rec_steps[n_rec]:
            log[:, n_rec] = values
            n_rec += 1
            if stop_at_target and target_dev is not None and t < steps \
                    and bool(((reached_at >= 0) | ~alive).all()):   # the one host sync: at log points
                rec_steps = rec_steps[:n_rec]
                break
        if t % 256 == 0:
            bar.update(t)
        if t == steps:
            break
        all_alive = xp is np and bool(alive.all())   # NumPy: skip the masking; CuPy: never sync
        for b in buckets:
            _update(b, G[b.rows], prefixes[id(b)], None if all_alive else alive[b.rows])
        t += 1
    errstate.__exit__(None, None, None)
    bar.close()

    order = np.argsort(rows_of)                                   # buffer rows -> user order
    return Result(
        configs=configs,
        steps=rec_steps.copy(),
        loss=to_numpy(log[:, :len(rec_steps)]).astype(np.float64)[order],
        diverged_at=to_numpy(diverged_at)[order],
        end_to_end=to_numpy(We).astype(np.float64)[order],
        steps_to_target=None if targets is None else to_numpy(reached_at)[order],
        target=targets,
        meta={"loss": loss.name, "backend": which, "dtype": dt.name, "m": m, "d": d, "k": k,
              "log_every": log_every, "steps_requested": steps,
              "diverge_above": diverge_above},
    )


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
            loss=get_loss(first.loss if first.loss is not None else default_loss),
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


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


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
    """A one-line progress bar on stderr, only for a TTY (or progress=True) and long runs."""

    def __init__(self, total, enabled):
        self.total = total
        if enabled is None:
            enabled = sys.stderr.isatty() and total >= 1000
        self.enabled = bool(enabled) and total > 0
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, t):
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.2 and t < self.total:
            return
        self.last = now
        frac = t / self.total
        bar = "#" * int(30 * frac)
        rate = t / max(now - self.start, 1e-9)
        sys.stderr.write(f"\r[{bar:<30}] {t}/{self.total} steps {rate:,.0f} steps/s")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            self.update(self.total)
            sys.stderr.write("\n")
