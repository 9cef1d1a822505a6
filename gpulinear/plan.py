"""What train() decides before any step: which configs share stacked arrays, where they start,
and which steps are recorded.  Below both backends: the NumPy step, the CUDA step and the engine
import from here, never from each other."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chain import chain_product
from .config import Config
from .inits import init_weights
from .losses import config_loss
from .optim import get_optimizer


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
    step_hyper: dict = None    # what the NumPy step passes to the optimizer (gpulinear.step)


def bucket_key(cfg: Config, default_loss) -> tuple:
    """What must be equal for two configs to share stacked arrays."""
    loss = config_loss(cfg, default_loss)
    return (cfg.depth, cfg.widths, loss, cfg.optimizer, cfg.parameterization)


def plan_buckets(configs, default_loss, last=None) -> list[list[int]]:
    """Config positions grouped by bucket_key; buckets of one loss are adjacent (so the loss
    pass runs once per loss over contiguous rows), otherwise in order of first appearance,
    except that losses for which last(loss) is true come after all others (the NumPy step's
    Gram-path rows: one contiguous block)."""
    groups: dict = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(bucket_key(cfg, default_loss), []).append(i)
    first_of_loss: dict = {}
    for key in groups:
        first_of_loss.setdefault(key[2], len(first_of_loss))
    def order(key):
        return (last is not None and bool(last(key[2])), first_of_loss[key[2]])
    return [groups[key] for key in sorted(groups, key=order)]


def start_weights(cfg: Config, d: int, k: int) -> list:
    """The float64 parameters config `cfg` starts from: its factors [W_1..W_N]
    (gl.init_weights), or [W_e] = their product for the e2e parameterization."""
    layers = init_weights(cfg, d, k)
    if cfg.parameterization == "e2e":
        return [chain_product([w[None] for w in layers])[0]]
    return layers


def build_buckets(configs, default_loss, d, k, dt, xp, hyper_arrays, last=None):
    """The Buckets of plan_buckets (with `last`) with their stacked start weights and optimizer
    state on xp.  hyper_arrays: gpulinear.optim.hyper_arrays (passed in so this module stays
    import-light)."""
    buckets, start = [], 0
    memo: dict = {}

    def cached_start(c):
        """Configs that differ only in lr, optimizer or loss start from the same weights (they
        come from the seed alone): drawn once (a 1024-config lr sweep at width 100, depth 8
        spent seconds drawing the same numbers again)."""
        key = (c.seed, c.init, c.init_scale, c.depth, c.widths, c.parameterization)
        if key not in memo:
            memo[key] = start_weights(c, d, k)
        return memo[key]

    for positions in plan_buckets(configs, default_loss, last):
        cfgs = [configs[i] for i in positions]
        first = cfgs[0]
        starts = [cached_start(c) for c in cfgs]
        params = [xp.asarray(np.stack([w[j] for w in starts]), dtype=dt)
                  for j in range(len(starts[0]))]
        opt = get_optimizer(first.optimizer)
        B = len(cfgs)
        buckets.append(Bucket(
            index=np.asarray(positions), rows=slice(start, start + B), depth=first.depth,
            loss=config_loss(first, default_loss), optimizer=opt,
            e2e=first.parameterization == "e2e", params=params, state=opt.init(params),
            hyper=hyper_arrays(first.optimizer, [c.hyper() for c in cfgs], dt, xp)))
        start += B
    return buckets


def record_steps(steps: int, log_every: int) -> np.ndarray:
    """The steps whose loss is recorded: 0, log_every, 2 log_every, ..., and the last step."""
    rec = list(range(0, steps + 1, log_every))
    if rec[-1] != steps:
        rec.append(steps)
    return np.asarray(rec, dtype=np.int64)


def segment_ends(start: int, steps: int, log_every: int, checkpoint_every=None) -> list[int]:
    """The steps after whose evaluation the host looks at a run that continues from step
    `start`: every record step >= start and, with checkpoints, every j*checkpoint_every - 1 (so
    that applying that step's update leaves exactly j*checkpoint_every updates taken).  Between
    two ends the device runs without the host: one CUDA-graph replay."""
    ends = {int(s) for s in record_steps(steps, log_every) if s >= start}
    if checkpoint_every:
        ends.update(j - 1 for j in range(checkpoint_every, steps + 1, checkpoint_every)
                    if j - 1 >= start)
    return sorted(ends)
