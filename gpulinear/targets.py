"""Loss targets relative to L*: `gl.rel(0.01)` is "within 1 % of L*", for each config's own loss.

    train(..., target=gl.rel(0.01))            every config: L*(its loss) + 0.01 |L*|
    train(..., target={"l2": gl.rel(0.01), "l3": 0.25})   per loss: relative or absolute
    train(..., target=0.25) / one per config   absolute levels, as before
train() computes L* (gl.optimal_loss) once per loss of the call when a target needs it, and
records {loss: L*} in Result.meta["optimal_loss"] (what the Result's gap measures subtract)
and the rule in meta["target_rule"].  On the command line: `--target-gap 0.01` or
`target_gap = 0.01` in a sweep's [train] table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class rel:                      # noqa: N801 - used like a function: gl.rel(0.01)
    """A target `gap` above L*, relative to it: level = L* + gap |L*| (gap 0.01: within 1 %)."""

    gap: float

    def __post_init__(self):
        try:
            ok = math.isfinite(float(self.gap)) and float(self.gap) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok or isinstance(self.gap, bool):
            raise ValueError(f"gl.rel(gap): gap must be a number > 0 (0.01 = within 1 % of L*), "
                             f"got {self.gap!r}")

    def level(self, lstar: float) -> float:
        return float(lstar) + float(self.gap) * abs(float(lstar))

    def __str__(self):
        return f"rel({float(self.gap):g})"


def needs_optimum(target) -> bool:
    if isinstance(target, rel):
        return True
    if isinstance(target, dict):
        return any(isinstance(v, rel) for v in target.values())
    return False


def resolve(target, configs, loss, X64, Y64):
    """(targets (n,) float64 or None, {loss name: L*} or None, rule text or None)."""
    from .losses import config_loss, get_loss
    from .optimum import optimal_loss
    if target is None:
        return None, None, None
    if not (isinstance(target, (rel, dict))):
        return target, None, None          # absolute: checked by the engine as before
    names = [config_loss(c, loss).name for c in configs]
    if isinstance(target, dict):
        known = set(names)
        keys = {get_loss(k).name if isinstance(k, str) else k: v for k, v in target.items()}
        missing = sorted(known - set(keys))
        if missing:
            raise ValueError(f"target: no entry for loss(es) {missing} of this call; give one "
                             f"per loss, e.g. {{{', '.join(repr(m) for m in sorted(known))}: "
                             "gl.rel(0.01)}")
        rule = {k: keys[k] for k in sorted(known)}
    else:
        rule = {name: target for name in set(names)}
    for name, v in rule.items():
        if not isinstance(v, rel) and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"target[{name!r}] must be a number or gl.rel(gap), got {v!r}")
    lstars = {name: optimal_loss(X64, Y64, name) for name, v in rule.items()
              if isinstance(v, rel)}
    levels = {name: v.level(lstars[name]) if isinstance(v, rel) else float(v)
              for name, v in rule.items()}
    text = ", ".join(f"{name}: {v}" for name, v in sorted(rule.items()))
    return np.array([levels[n] for n in names], dtype=np.float64), lstars, text
