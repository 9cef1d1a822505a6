"""The Result's measures: gpulinear.analysis applied to a Result's curves, with its L* and target.

Result.gaps(), .steps_to(), .escape_steps(), .best(by=<analysis rule>), .speedups() call these;
every number comes from gpulinear.analysis (one implementation with the experiments).

L* (`optimal`): a number, one per config, or None = Result.meta["optimal_loss"] ({loss: L*},
written by train() for a relative target and by the CLI), else an error saying how to give it.
A level is a gap L - L*: a number, one per config, gl.rel(g) (g |L*| of each config's loss), or
None = each config's target minus its L* (train(target=...)).
"""
from __future__ import annotations

import numpy as np

from . import analysis
from .targets import rel


def optimal_of(result, optimal=None):
    """(n,) L* per config."""
    n = len(result.configs)
    if optimal is not None:
        return np.broadcast_to(np.asarray(optimal, dtype=float), (n,)).copy()
    from .export import optimal_per_config
    opt = optimal_per_config(result)
    if opt is None:
        raise ValueError("this needs L*: pass optimal=gl.optimal_loss(X, y, loss) (a number or "
                         "one per config), or train with target=gl.rel(...), which records it")
    return opt


def factor_of(result):
    """The divergence factor the run used (analysis.DIVERGE_FACTOR unless told otherwise)."""
    f = result.meta.get("diverge_factor", analysis.DIVERGE_FACTOR)
    return analysis.DIVERGE_FACTOR if f is None and result.meta.get("diverge_above") is None \
        else f


def gaps(result, optimal=None):
    """(n, r) L - L*, +inf from each config's divergence on (analysis.gap_curves)."""
    return analysis.gap_curves(result.loss, optimal_of(result, optimal), result.diverged_at,
                               result.steps, factor=factor_of(result))


def levels_of(result, level=None, optimal=None):
    """(n,) the gap level per config (module docstring)."""
    n = len(result.configs)
    if level is None:
        if result.target is None:
            raise ValueError("level: give a gap L - L* (a number, or gl.rel(0.01)), or train "
                             "with target=...")
        return np.asarray(result.target, dtype=float) - optimal_of(result, optimal)
    if isinstance(level, rel):
        return level.gap * np.abs(optimal_of(result, optimal))
    return np.broadcast_to(np.asarray(level, dtype=float), (n,)).copy()


def steps_to(result, level=None, stay=True, optimal=None):
    """(n,) first recorded step from which gap <= level (stay=True: and stays there to the end;
    False: first touched).  NaN = never."""
    g = gaps(result, optimal)
    lv = levels_of(result, level, optimal)
    return analysis.steps_to(result.steps, g, lv[:, None], stay=stay)[:, 0]


def escape_steps(result, optimal=None, fraction=analysis.ESCAPE):
    """(n,) first recorded step with gap below `fraction` x its initial gap.  NaN = never."""
    return analysis.escape_steps(result.steps, gaps(result, optimal), fraction)


def scores(result, rule, level=None, optimal=None):
    """(n, 2) analysis.rule_scores of every config (each config with its own level)."""
    g = gaps(result, optimal)
    if rule not in ("steps_to", "reach_and_stay"):
        return analysis.rule_scores(result.steps, g, rule)
    return analysis.rule_scores(result.steps, g, rule,
                                level=np.asarray(levels_of(result, level, optimal), dtype=float))


def best_indices(result, rule, group, level=None, optimal=None):
    """Positions of the best config per group by an analysis rule (ties to the smaller lr)."""
    from .result import _hashable
    keys = [tuple(_hashable(getattr(c, f)) for f in group) for c in result.configs]
    lrs = [c.lr for c in result.configs]
    chosen = analysis.best_by(keys, lrs, scores(result, rule, level, optimal))
    return sorted(chosen.values())


def speedups(result, baseline=None, by="reach_and_stay", level=None, optimal=None, group=None):
    """One row per model (best lr by `by`) against its baseline model's best: the steps each
    needs to reach the level(s) and the speed-up (analysis.speedups / median_speedup).

    baseline: {field: value} that turns a model into its baseline (default {"depth": 1}: each
    depth against depth 1 with everything else equal).  level: the gap compared at — None: the
    target (with train(target=...)), else "run"; "run": analysis.baseline_levels (the gaps the
    baseline reaches at 10/25/50/100 % of the run, the median speed-up over them); a number or
    gl.rel(g).
    Returns a list of dicts (Result.speedups() makes it a DataFrame)."""
    from .result import MODEL_FIELDS, _hashable
    from .export import field_value, swept_fields
    baseline = {"depth": 1} if baseline is None else dict(baseline)
    group = MODEL_FIELDS if group is None else tuple(group)
    unknown = [k for k in baseline if k not in group]
    if unknown:
        raise ValueError(f"baseline: {unknown} are not model fields ({list(group)})")
    run_levels = level == "run" or (level is None and result.target is None)
    if run_levels:
        level = None
    if run_levels and result.target is None and by in ("steps_to", "reach_and_stay"):
        by = "mean_log_gap"          # no level to reach: rank by the whole curve
    idx = best_indices(result, by, group, level, optimal)
    g = gaps(result, optimal)
    fixed_levels = None if run_levels else levels_of(result, level, optimal)
    key_of = {tuple(_hashable(getattr(result.configs[i], f)) for f in group): i for i in idx}
    shown = [f for f in swept_fields(result) if f in group]
    rows = []
    stay = by != "steps_to"
    for i in idx:
        cfg = result.configs[i]
        bkey = tuple(_hashable(baseline.get(f, getattr(cfg, f))) for f in group)
        b = key_of.get(bkey)
        row = {f: field_value(result, cfg, f) for f in shown}
        row.update(lr=cfg.lr, baseline_lr=None if b is None else result.configs[b].lr)
        if b is None:
            row.update(level=np.nan, steps=np.nan, baseline_steps=np.nan, speedup=np.nan,
                       text="no baseline")
            rows.append(row)
            continue
        lv = [fixed_levels[i]] if fixed_levels is not None else \
            list(analysis.baseline_levels(result.steps, g[b]))
        per = analysis.speedups(result.steps, g[b], g[i], levels=lv, stay=stay)
        if len(per) == 1:
            p = per[0]
            row.update(level=p["level"], steps=p["model_step"], baseline_steps=p["baseline_step"],
                       speedup=p["speedup"], text=p["text"])
        else:
            row.update(level=np.nan, steps=np.nan, baseline_steps=np.nan,
                       speedup=analysis.median_speedup(per),
                       text=" ".join(p["text"] for p in per) + " (median over levels)")
        rows.append(row)
    return rows
