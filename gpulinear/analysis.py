"""Measures and verdict rules on loss curves: the one place where "faster", "best lr",
"agrees", "escaped", "stalled" and "diverged" are decided.

Everything here is a pure function of recorded curves (NumPy in, NumPy out): no training, no
rendering.  The experiments, `gpulinear reproduce`'s report and users' own analyses call the same
functions, so a verdict in REPORT.md and a number in a notebook come from one rule.

Shapes: ``steps`` (r,) recorded step numbers, increasing; ``gaps`` (n, r) or (r,) curves of
L - L* at those steps (n configs).  A diverged curve is +inf from its divergence on (it never
counts as having reached a level).  "Never" is NaN in every returned float array.

Rules, fixed before the paper-length runs they judge (issue 16, 2026-12-07):
  * divergence: the engine's flag, or a finite loss above DIVERGE_FACTOR x the config's initial
    loss (a curve at 1e199 is not "converging slowly");
  * steps_to(level): the first recorded step with gap <= level; with stay=True the first step
    after which the curve stays <= level to the end of the run (reach-and-stay);
  * best lr per model by a named rule (RULES), lower score wins, ties to the smaller lr;
  * speed-up of a model over a baseline: baseline steps / model steps to the gaps the baseline
    reaches at LEVEL_FRACTIONS of the run; the claim reads the median over levels;
  * agreement of two curves (Fig 2): compared after both have escaped (ratio of steps to reach
    each level below the escape, one record of slack) and where both are past their drop;
  * stall (Fig 5-left): first visible progress = the escape step (gap below ESCAPE of start);
  * robust verdict: "holds" / "does not hold" only where every variant agrees, else
    "depends on <axis>".
"""
from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["DIVERGE_FACTOR", "ESCAPE", "LEVEL_FRACTIONS", "RULES", "FASTER", "SIGNIFICANT",
           "gap_curves", "steps_to", "escape_steps", "mean_log_gap", "rule_scores", "best_by",
           "refine_lrs", "lr_resolution", "speedup", "baseline_levels", "speedups",
           "median_speedup", "speedup_direction", "level_step_ratios", "agreement_after_drop",
           "robust_verdict",
           "HOLDS", "NOT_HOLD", "PARTLY", "NOT_TESTABLE", "verdict"]

DIVERGE_FACTOR = 1e6        # a finite loss above this x its initial loss counts as diverged
ESCAPE = 0.9                # "visible progress": L - L* below 90 % of its start
LEVEL_FRACTIONS = (0.10, 0.25, 0.50, 1.00)
FASTER = 1.1                # "faster", "improves speed": median speed-up above this
SIGNIFICANT = 1.5           # "significant / considerable acceleration": at least this
RULES = ("mean_log_gap", "final", "steps_to", "reach_and_stay")

HOLDS, NOT_HOLD, PARTLY = "holds", "does not hold", "partly"
NOT_TESTABLE = "not testable at this length"


def verdict(holds: bool, partly: bool = False) -> str:
    return HOLDS if holds else (PARTLY if partly else NOT_HOLD)


# -- curves ------------------------------------------------------------------------------------

def gap_curves(loss, optimal=0.0, diverged_at=None, steps=None, factor=DIVERGE_FACTOR):
    """(n, r) L - L* with +inf from each config's divergence on.

    loss (n, r) recorded losses; optimal L* (scalar or (n,)); diverged_at (n,) the engine's
    divergence step (-1 = never) with `steps` (r,); factor: a finite loss above factor x the
    config's initial loss (its first record) also counts as diverged from that record on
    (None or inf: only the engine's flag and non-finite values)."""
    loss = np.atleast_2d(np.asarray(loss, dtype=float))
    opt = np.reshape(np.asarray(optimal, dtype=float), (-1, 1))
    dead = ~np.isfinite(loss)
    if factor is not None and np.isfinite(factor):
        # relative to the config's own start; a config that starts at loss 0 has no relative
        # ceiling (as in the engine: nothing is "far above" zero in ratio)
        start = np.abs(loss[:, :1])
        with np.errstate(invalid="ignore", over="ignore"):
            dead |= (start > 0) & (loss > factor * start)
    if diverged_at is not None:
        at = np.asarray(diverged_at)
        dead |= (at[:, None] >= 0) & (np.asarray(steps)[None, :] >= at[:, None])
    dead = np.logical_or.accumulate(dead, axis=1)     # once dead, dead for the rest of the run
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(dead, np.inf, loss - opt)


def steps_to(steps, gaps, level, stay=False):
    """Steps for each curve to reach gap <= level.  NaN = never.

    level: a scalar -> (n,); a list of L levels shared by every curve -> (n, L); an (n, L) array
    -> one row of levels per curve, (n, L).
    stay=False: the first record at or below the level ("first touched").
    stay=True: the first record from which the curve stays at or below the level through the
    last record ("reach and stay"), so a curve that touches it and bounces back is not counted.
    """
    steps = np.asarray(steps)
    g = np.atleast_2d(np.asarray(gaps, dtype=float))
    lv = np.asarray(level, dtype=float)
    table = np.broadcast_to(lv.reshape(1, -1) if lv.ndim < 2 else lv, (len(g), lv.size if
                                                                        lv.ndim < 2 else lv.shape[1]))
    out = np.full(table.shape, np.nan)
    for j in range(table.shape[1]):
        with np.errstate(invalid="ignore"):
            below = np.isfinite(g) & (g <= table[:, j:j + 1])
        if stay:     # below from here to the end: a reversed running AND
            below = np.flip(np.logical_and.accumulate(np.flip(below, 1), axis=1), 1)
        first = np.argmax(below, axis=1)
        out[:, j] = np.where(below.any(axis=1), steps[first], np.nan)
    return out[:, 0] if lv.ndim == 0 else out


def escape_steps(steps, gaps, fraction=ESCAPE):
    """(n,) first recorded step with gap below `fraction` x its initial gap (NaN = never)."""
    g = np.atleast_2d(np.asarray(gaps, dtype=float))
    return steps_to(steps, g, (fraction * g[:, 0])[:, None])[:, 0]


def mean_log_gap(gaps, optimal_scale=1.0):
    """(n,) mean of log10(L - L*) over the records; +inf for a curve that diverged.  A gap at or
    below 0 (L* reached up to rounding) is clamped to eps x max(|L*|, 1), never dropped."""
    g = np.atleast_2d(np.asarray(gaps, dtype=float))
    floor = np.finfo(float).eps * max(abs(float(optimal_scale)), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.log10(np.maximum(g, floor))
    return np.where(np.isinf(g).any(axis=1), np.inf, logs.mean(axis=1))


# -- best lr per model ---------------------------------------------------------------------------

def rule_scores(steps, gaps, rule, level=None):
    """(n, 2) sort keys per curve, lower is better: rule's number, then the final gap.

    rules: "mean_log_gap" (lowest mean log10 gap over the run: rewards being low early and late),
    "final" (lowest final gap), "steps_to" (fewest steps to `level`, a gap or one per curve (n,);
    curves that never reach it rank after, by final gap), "reach_and_stay" (the same, the curve must stay below it).
    A diverged curve ranks after every live one."""
    g = np.atleast_2d(np.asarray(gaps, dtype=float))
    final = np.where(np.isfinite(g[:, -1]), g[:, -1], np.inf)
    if rule == "mean_log_gap":
        key = mean_log_gap(g)
    elif rule == "final":
        key = final
    elif rule in ("steps_to", "reach_and_stay"):
        if level is None:
            raise ValueError(f"rule {rule!r} needs level= (a gap L - L*)")
        lv = np.asarray(level, dtype=float)      # one level, or one per curve (n,)
        key = steps_to(steps, g, lv if lv.ndim == 0 else lv.reshape(-1, 1),
                       stay=rule == "reach_and_stay")
        key = np.where(np.isnan(key), np.inf, key).reshape(len(g))
    else:
        raise ValueError(f"rule: unknown {rule!r}; choose one of {RULES}")
    dead = np.isinf(g).any(axis=1)
    return np.stack([np.where(dead, np.inf, key), np.where(dead, np.inf, final)], axis=1)


def best_by(keys, lrs, scores):
    """{model key: index} of the best curve per model: lowest scores (n, 2), ties to the smaller
    lr.  keys: (n,) hashable model keys; lrs: (n,)."""
    best: dict = {}
    for i, key in enumerate(keys):
        s = (tuple(scores[i]), lrs[i])
        if key not in best or s < best[key][0]:
            best[key] = (s, i)
    return {k: v[1] for k, v in best.items()}


def lr_resolution(lrs, best_lr):
    """Half the log-spacing around `best_lr` on the lr list, as a factor: the best lr is known to
    within this factor (the true optimum of a unimodal score lies between the neighbours)."""
    grid = np.unique(np.asarray(lrs, dtype=float))
    i = int(np.argmin(np.abs(np.log(grid / best_lr))))
    lo = grid[i] / grid[i - 1] if i > 0 else np.inf
    hi = grid[i + 1] / grid[i] if i + 1 < len(grid) else np.inf
    return float(np.sqrt(max(lo, hi)))


def refine_lrs(lrs, best_lr, per_decade=9):
    """Lrs to add around `best_lr` so that it is known to within 10^(1/(2 per_decade)) (9 per
    decade: a factor 1.137, inside the issue's 15 %): a log grid between its neighbours on `lrs`
    (the optimum of a unimodal score lies there).  When the next lr up diverged, the divergence
    edge lies in that interval too, so it is resolved as finely.  Returns the new lrs (sorted,
    none already in `lrs`)."""
    grid = np.unique(np.asarray(lrs, dtype=float))
    i = int(np.argmin(np.abs(np.log(grid / best_lr))))
    lo = grid[i - 1] if i > 0 else grid[i] / 10
    hi = grid[i + 1] if i + 1 < len(grid) else grid[i] * 10
    n = max(2, int(math.ceil(per_decade * math.log10(hi / lo))) + 1)
    new = np.geomspace(lo, hi, n)
    keep = [float(f"{x:.6g}") for x in new
            if np.min(np.abs(np.log(grid / x))) > 1e-3]
    return sorted(set(keep))


# -- speed-ups: "faster / accelerates / slower" judged as time to reach a loss -----------------

def speedup(baseline_step, model_step, run_length):
    """The speed-up of a model over a baseline at one level of L - L*: the ONE rule.

    baseline_step, model_step: first step at which each curve is <= the level (NaN or < 0 =
    never); run_length: the last step of the run.  Returns (value, kind):
      both reached        -> (baseline / model, "exact"); a step 0 counts as step 1;
      only the baseline   -> (baseline / run_length, "upper"): printed "<0.4x";
      only the model      -> (run_length / model, "lower"): printed ">2.1x";
      neither             -> (nan, "none")."""
    def never(s):
        return s is None or (isinstance(s, float) and math.isnan(s)) or s < 0
    b_never, m_never = never(baseline_step), never(model_step)
    if b_never and m_never:
        return float("nan"), "none"
    b = 1 if b_never else max(int(baseline_step), 1)
    m = 1 if m_never else max(int(model_step), 1)
    if m_never:
        return b / run_length, "upper"
    if b_never:
        return run_length / m, "lower"
    return b / m, "exact"


def baseline_levels(steps, baseline_gap, fractions=LEVEL_FRACTIONS):
    """(len(fractions),) the gaps the baseline (r,) has reached at those fractions of the run:
    its running minimum at the record nearest each fraction of steps[-1] (inf when diverged)."""
    gap = np.where(np.isfinite(baseline_gap), baseline_gap, np.inf)
    best = np.minimum.accumulate(gap)
    idx = [int(np.argmin(np.abs(np.asarray(steps) - f * steps[-1]))) for f in fractions]
    return best[idx]


def fmt_speedup(value, kind) -> str:
    """'2.5x', '>2.1x' (lower bound), '<0.4x' (upper bound) or 'n/a' (neither reached)."""
    if kind == "none" or not np.isfinite(value):
        return "n/a"
    return {"exact": "", "lower": ">", "upper": "<"}[kind] + f"{value:.2g}x"


def speedups(steps, baseline_gap, model_gap, levels=None, stay=False):
    """Speed-up of a model curve over a baseline curve (both (r,) gaps at `steps`) at each level
    (default: baseline_levels).  One dict per level: level, both first steps (NaN = never),
    value, kind (see speedup) and text."""
    levels = baseline_levels(steps, baseline_gap) if levels is None else np.asarray(levels)
    reach = steps_to(steps, np.stack([baseline_gap, model_gap]), list(levels), stay=stay)
    rows = []
    for j, level in enumerate(levels):
        value, kind = speedup(reach[0, j], reach[1, j], int(steps[-1]))
        rows.append({"level": float(level), "baseline_step": float(reach[0, j]),
                     "model_step": float(reach[1, j]), "speedup": value, "kind": kind,
                     "text": fmt_speedup(value, kind)})
    return rows


def median_speedup(rows) -> float:
    """Median speed-up over levels; bounds count at their bound value (a '>2x' counts as 2, which
    only understates it), levels neither curve reached are left out (nan if none is left)."""
    vals = [r["speedup"] for r in rows if r["kind"] != "none"]
    return float(np.median(vals)) if vals else float("nan")


def speedup_direction(value) -> str:
    """'faster' (above FASTER), 'slower' (below 1 / FASTER), 'neither' (between), or
    'no progress' (nan: neither curve reached a level): the word a speed-up map reads."""
    if value is None or not np.isfinite(value):
        return "no progress"
    return "faster" if value > FASTER else "slower" if value < 1 / FASTER else "neither"


# -- agreement of two curves (Fig 2) -------------------------------------------------------------

def level_step_ratios(steps, a, b, n_levels=8, fraction=ESCAPE):
    """Ratio of the steps two curves (r,) take to reach each of `n_levels` log-spaced gaps from
    below both escapes (`fraction` x the larger start) down to the larger of their final gaps.

    The ratio is max/min of the two first steps, less one record interval of slack (two
    curves one record apart during a steep drop agree: the records cannot tell them apart).
    Returns (levels, ratios); a level only one curve reaches gives ratio inf."""
    steps = np.asarray(steps, dtype=float)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    top = fraction * max(a[0], b[0])
    bottom = max(np.nanmin(np.where(np.isfinite(a), a, np.nan)),
                 np.nanmin(np.where(np.isfinite(b), b, np.nan)))
    if not (top > bottom > 0):
        return np.array([]), np.array([])
    levels = np.geomspace(top, bottom, n_levels)
    reach = steps_to(steps, np.stack([a, b]), list(levels))
    dt = float(np.max(np.diff(steps))) if len(steps) > 1 else 0.0
    lo, hi = np.fmin(reach[0], reach[1]), np.fmax(reach[0], reach[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = 1.0 + np.maximum(hi - lo - dt, 0.0) / np.maximum(lo, 1.0)
    ratio = np.where(np.isnan(reach).any(axis=0) & ~np.isnan(reach).all(axis=0), np.inf, ratio)
    return levels, ratio


def agreement_after_drop(a, b, knee=2.0, fraction=ESCAPE):
    """How far two curves (r,) differ after their escapes: each is shifted to its own escape
    (first record below `fraction` x its start, so an escape-time difference is not counted
    here: it is reported apart), then the largest relative difference |a - b| / min(a, b) is
    taken over the aligned records where BOTH are past their drop (within `knee` x their own
    final gap, from there on).  Excluding the drop makes a sub-record offset during a steep fall
    read as agreement.  inf if either curve never escaped or diverged.  Records must be evenly
    spaced (train()'s log_every; the last, possibly off-spacing record is left out)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not (np.isfinite(a[-1]) and np.isfinite(b[-1])):
        return float("inf")
    esc = []
    for c in (a, b):
        hit = c < fraction * c[0]
        if not hit.any():
            return float("inf")
        esc.append(int(np.argmax(hit)))
    n = min(len(a) - 1 - esc[0], len(b) - 1 - esc[1])
    if n <= 0:
        return float("inf")
    sa, sb = a[esc[0]:esc[0] + n], b[esc[1]:esc[1] + n]
    past = (sa <= knee * a[-1]) & (sb <= knee * b[-1])
    past = np.flip(np.logical_and.accumulate(np.flip(past)))   # from there to the end
    if not past.any():
        return float("inf")
    lo = np.minimum(sa[past], sb[past])
    return float(np.max(np.abs(sa[past] - sb[past]) / np.maximum(lo, np.finfo(float).tiny)))


# -- robust verdicts over the readings the paper leaves open -------------------------------------

def robust_verdict(per_variant: dict, axes: tuple):
    """Headline verdict over variants.

    per_variant: {variant tuple (one value per axis): verdict string}; axes: the axis names.
    Returns (headline, reason): "holds" / "does not hold" (or the one shared verdict) where every
    variant agrees; otherwise "depends on <axis>" naming the axes whose value alone decides the
    verdict (or the smallest set of axes that together do), and the reason gives the verdict
    under each value of those axes, e.g. "12 of 18 variants hold; data=zscore, y x1: holds;
    data=maxabs, y x1: does not hold; ... (whatever the rule, semantics)"."""
    values = list(per_variant.values())
    if not values:
        return NOT_TESTABLE, "no variant ran"
    if len(set(values)) == 1:
        return values[0], f"all {len(values)} variants agree"
    varying = [j for j in range(len(axes)) if len({k[j] for k in per_variant}) > 1]

    def decides(combo):
        groups: dict = {}
        for k, v in per_variant.items():
            groups.setdefault(tuple(k[j] for j in combo), set()).add(v)
        return all(len(s) == 1 for s in groups.values())

    # the smallest set of axes whose values alone decide the verdict (all varying ones if none)
    combo = next((c for r in range(1, len(varying) + 1)
                  for c in itertools.combinations(varying, r) if decides(c)), tuple(varying))
    singles = [j for j in varying if decides((j,))]
    deciding = [axes[j] for j in singles] if singles else [" x ".join(axes[j] for j in combo)]
    if len(combo) > 1 and len(combo) == len(varying) and len(per_variant) > 6:
        # only every axis together decides: a list of many variants says little, so give the
        # verdict counts under each value of the axis that sorts them best
        combo = (min(varying, key=lambda j: len({(k[j], v) for k, v in per_variant.items()})),)
    by: dict = {}
    for k, v in per_variant.items():
        by.setdefault("/".join(f"{axes[j]}={k[j]}" for j in combo), []).append(v)

    def word(vs):
        if len(set(vs)) == 1:
            return vs[0]
        return ", ".join(f"{w} {vs.count(w)}" for w in sorted(set(vs), key=vs.index))
    rest = [axes[j] for j in varying if j not in combo]
    mixed = any(len(set(vs)) > 1 for vs in by.values())
    return "depends on " + " or ".join(deciding), (
        f"{sum(v == HOLDS for v in values)} of {len(values)} variants hold; "
        + "; ".join(f"{g}: {word(vs)}" for g, vs in by.items())
        + (f" (whatever the {', '.join(rest)})" if rest and not mixed else
           f" (counts over the {', '.join(rest)})" if rest else ""))
