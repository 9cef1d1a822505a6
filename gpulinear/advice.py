"""Warnings where a default or a choice changes the science, not the code's correctness.

Each is a `ScienceWarning` (a UserWarning: `warnings.filterwarnings("ignore",
category=gl.ScienceWarning)` silences them) that names what happens and the fix:
    identity_init(configs, d, k)           identity init whose hidden widths are below the input
                                           size: the product of "identities" keeps only the first
                                           r input features, W_e starts as ones on features 0..r-1
    unreachable_target(targets, configs, loss, X, Y)   an absolute target below L*
    feature_scales(X)                      feature standard deviations spanning > SCALE_WARN
    lr_at_edge(result, chosen, group)      the best lr of a group is the largest (or smallest)
                                           of its grid: the optimum may lie outside it
"""
from __future__ import annotations

import warnings

import numpy as np


class ScienceWarning(UserWarning):
    """A setting that may change a study's conclusion (gpulinear.advice)."""


def _warn(message, stacklevel=4):
    warnings.warn(message, ScienceWarning, stacklevel=stacklevel)


SCALE_WARN = 1e3     # feature standard deviations spanning more than this factor


def feature_scales(X):
    """Warn when the features' standard deviations span more than SCALE_WARN: one lr for all
    of them is then set by the largest, and the small ones barely move (the depth comparison
    measures the scaling as much as the depth)."""
    std = np.asarray(X, dtype=np.float64).std(axis=0)
    std = std[std > 0]
    if len(std) < 2 or std.max() <= SCALE_WARN * std.min():
        return
    _warn(f"the features' standard deviations span {std.max() / std.min():.2g}x ({std.min():.3g} "
          f"to {std.max():.3g}): one learning rate must suit the largest, and conclusions about "
          "depth then depend on the scaling; standardize them (gl.datasets.load_csv(..., "
          "preprocess='zscore'), `gpulinear train --preprocess zscore`) or say why not")


def identity_init(configs, d, k):
    """Warn once per call for identity-initialised configs with a hidden width below d."""
    narrow = sorted({(c.depth, min(c.widths)) for c in configs
                     if c.init == "identity" and c.depth > 1 and min(c.widths) < d})
    if not narrow:
        return
    depth, w = narrow[0]
    r = min(w, k)
    more = f" (and {len(narrow) - 1} more depth/width pairs)" if len(narrow) > 1 else ""
    kept = "feature 0" if r == 1 else f"features 0..{r - 1}"
    _warn(f"identity init at depth {depth} with hidden width {w} < {d} inputs{more}: the product "
          f"of the layers' 'identities' passes only input {kept}, so W_e starts as a 1 on "
          f"{kept} plus noise, not as an identity map, and the result depends on the column "
          "order of X; use a width >= the number of inputs, or init='normal' / 'balanced'")


def unreachable_target(targets, configs, loss, X, Y):
    """Warn when an absolute target lies below L* of a config's loss (no run can reach it)."""
    if targets is None:
        return
    from .losses import Lp, config_loss
    from .optimum import optimal_loss
    lstar = {}
    low = []
    for i, cfg in enumerate(configs):
        lo = config_loss(cfg, loss)
        if not isinstance(lo, Lp):          # xent: L* is an infimum, often 0; not checked
            continue
        if lo.name not in lstar:
            try:      # a warning never stops a run: no L*, no check (e.g. a singular Hessian)
                lstar[lo.name] = optimal_loss(X, Y, lo)
            except (np.linalg.LinAlgError, ValueError, FloatingPointError, ArithmeticError):
                lstar[lo.name] = -np.inf
        if targets[i] < lstar[lo.name] * (1 - 1e-12):
            low.append((i, lo.name))
    if low:
        i, name = low[0]
        _warn(f"target {targets[i]:.6g} is below L* = {lstar[name]:.6g} of {name} for "
              f"{len(low)} of {len(configs)} configs: no config can reach it (steps_to_target "
              "will be never); give a target above L*, e.g. relative to it")


def lr_at_edge(result, chosen, group):
    """Warn when a group's chosen lr is the largest or smallest lr that group tried (at least
    three tried, the chosen one not diverged)."""
    from .result import _hashable
    members = {}
    for i, cfg in enumerate(result.configs):
        members.setdefault(tuple(_hashable(getattr(cfg, g)) for g in group), []).append(i)
    top, bottom = [], []
    for i in chosen:
        cfg = result.configs[i]
        key = tuple(_hashable(getattr(cfg, g)) for g in group)
        lrs = sorted({result.configs[j].lr for j in members[key]})
        if len(lrs) < 3 or result.diverged[i]:
            continue
        if cfg.lr == lrs[-1]:
            top.append(cfg)
        elif cfg.lr == lrs[0]:
            bottom.append(cfg)
    for cfgs, word, way in ((top, "largest", "upward"), (bottom, "smallest", "downward")):
        if cfgs:
            more = f" (and {len(cfgs) - 1} more groups)" if len(cfgs) > 1 else ""
            _warn(f"best lr {cfgs[0].lr:g} of {cfgs[0].describe()!r}{more} is the {word} tried: "
                  f"the best may lie outside the grid; extend the grid {way}", stacklevel=5)
