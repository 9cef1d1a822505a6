"""Best learning rate per model with a stated resolution and a named selection rule.

The paper picks, "for each model separately, the configuration giving fastest convergence" from
a grid that steps by factors of 2 and 5.  Where a model's best lr sits near its divergence edge
such a grid can hand it an lr up to ~2.5x below its best, and which lr is "fastest" depends on
the rule.  `lr_search` therefore runs three training calls on the same data:

  1. grid     every model x the given lrs (the paper's grid), seed seeds[0];
  2. refine   around each model's best grid lr under EVERY rule, a log grid of `per_decade` lrs
              per decade between its grid neighbours (analysis.refine_lrs), so the best lr is
              known to within 10^(1/(2 per_decade)) (9: 14 %), the divergence edge included when
              the next grid lr diverged; all models' new lrs in one call;
  3. seeds    each distinct (model, lr) chosen by any rule at either resolution, rerun with
              seeds[1:] (the lr is chosen on the first seed, so the spread measures the
              initialization, not the search).

Rules (analysis.RULES): "mean_log_gap", "final", "steps_to" (fewest steps to `level`, by
default the lowest final gap any of the baseline model's lrs reaches: "the level the baseline
reaches at the end"), "reach_and_stay".
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import analysis
from .config import Config

PAPER_RULE = "mean_log_gap"      # the published runs' rule (issue 10), reading (a)
DEFAULT_RULES = ("mean_log_gap", "final", "steps_to")
RESOLUTIONS = ("grid", "refined")


@dataclasses.dataclass
class LRSearch:
    """What lr_search found.  models: {key: Config fields}; steps (r,);
    choice[(resolution, rule, key)] = {"lr", "resolution" (factor), "gaps": [(r,) per seed]};
    results: the three Results; level[resolution][key]: the steps_to level used."""
    models: dict
    steps: np.ndarray
    choice: dict
    results: dict
    level: dict
    lrs: dict          # {key: sorted lrs tried (grid and refined)}
    curves: dict       # {(key, lr): (r,) gap curve of seed 0}

    def all_gaps(self, key):
        """(lrs, (n_lrs, r) gaps) of every lr tried for model `key` on the first seed."""
        lrs = self.lrs[key]
        return lrs, np.stack([self.curves[(key, lr)] for lr in lrs])

    def gaps(self, resolution, rule, key):
        return self.choice[(resolution, rule, key)]["gaps"]

    def lr(self, resolution, rule, key):
        return self.choice[(resolution, rule, key)]["lr"]

    def summary(self) -> dict:
        """JSON-ready: per model, the lr each rule picks at each resolution, with its resolution
        factor and the lrs tried."""
        out = {}
        for (res, rule, key), c in self.choice.items():
            out.setdefault(_name(key), {}).setdefault(res, {})[rule] = {
                "lr": c["lr"], "known_within": c["resolution"],
                "final_gap_seed0": float(c["gaps"][0][-1])}
        for key, lrs in self.lrs.items():
            out[_name(key)]["lrs_tried"] = lrs
        return out


def _name(key) -> str:
    return key if isinstance(key, str) else " ".join(map(str, key))


def lr_search(X, y, models: dict, lrs, steps: int, optimal, *, train=None, baseline=None,
              rules=DEFAULT_RULES, seeds=(0,), refine=True, per_decade=9, level=None,
              label="lr search", **train_kw) -> LRSearch:
    """Best lr per model at the grid's and at a refined resolution, under each rule.

    models: {key: dict of Config fields (no lr, no seed)}; lrs: the grid (a list, or
    {key: list} per model); optimal: Config -> L*; train: the training function
    (default gpulinear.train; the experiments pass report.timed_train's partial);
    baseline: the model key whose end level the "steps_to" rule uses (required for it), or a
    dict {key: its baseline's key} (e.g. depth 1 of the same loss).
    Extra keyword arguments go to train()."""
    if train is None:
        from .engine import train as _train

        def train(label_, X_, y_, cfgs, steps_, **kw):
            return _train(X_, y_, cfgs, steps=steps_, **kw)
    if "steps_to" in rules and baseline is None and level is None:
        raise ValueError("rules: 'steps_to' needs baseline= (the model whose end level it uses) "
                         "or level=")
    grid_lrs = {k: sorted(float(x) for x in (lrs[k] if isinstance(lrs, dict) else lrs))
                for k in models}

    def configs(pairs, seed):
        return [Config(**models[k], lr=lr, seed=seed) for k, lr in pairs]

    pairs = [(k, lr) for k in models for lr in grid_lrs[k]]
    first = train(f"{label} grid", X, y, configs(pairs, seeds[0]), steps, **train_kw)
    curves = {p: _gap(first, i, optimal) for i, p in enumerate(pairs)}
    found = {"grid": _choose(first.steps, curves, models, grid_lrs, rules, baseline, level)}
    tried = {k: list(v) for k, v in grid_lrs.items()}
    results = {"grid": first}
    if refine:
        extra = {k: sorted({x for rule in rules
                            for x in analysis.refine_lrs(grid_lrs[k], found["grid"][0][(rule, k)])})
                 for k in models}
        more = [(k, lr) for k in models for lr in extra[k]]
        if more:
            second = train(f"{label} refine", X, y, configs(more, seeds[0]), steps, **train_kw)
            curves.update({p: _gap(second, i, optimal) for i, p in enumerate(more)})
            results["refined"] = second
        tried = {k: sorted(set(grid_lrs[k]) | set(extra[k])) for k in models}
        found["refined"] = _choose(first.steps, curves, models, tried, rules, baseline, level)
    choice = {}
    for res, (best, lv) in found.items():
        for (rule, k), lr in best.items():
            choice[(res, rule, k)] = {"lr": lr, "resolution": analysis.lr_resolution(tried[k]
                                      if res == "refined" else grid_lrs[k], lr),
                                      "gaps": [curves[(k, lr)]]}
    level_used = {res: lv for res, (best, lv) in found.items()}
    chosen = sorted({(k, c["lr"]) for (res, rule, k), c in choice.items()}, key=str)
    if len(seeds) > 1 and chosen:
        cfgs = [Config(**models[k], lr=lr, seed=s) for k, lr in chosen for s in seeds[1:]]
        third = train(f"{label} seeds {list(seeds[1:])}", X, y, cfgs, steps, **train_kw)
        results["seeds"] = third
        per = {}
        for i, (k, lr) in enumerate(p for p in chosen for _ in seeds[1:]):
            per.setdefault((k, lr), []).append(_gap(third, i, optimal))
        for (res, rule, k), c in choice.items():
            c["gaps"] = c["gaps"] + per[(k, c["lr"])]
    return LRSearch(models, np.asarray(first.steps), choice, results, level_used, tried,
                    curves)


def _gap(result, i, optimal):
    return analysis.gap_curves(result.loss[i:i + 1], optimal(result.configs[i]),
                               result.diverged_at[i:i + 1], result.steps)[0]


def _end_level(curves, lrs, key):
    """The lowest final gap any lr of model `key` reaches (None if all diverged)."""
    finite = [curves[(key, lr)][-1] for lr in lrs[key] if np.isfinite(curves[(key, lr)][-1])]
    return float(min(finite)) if finite else None


def _choose(steps, curves, models, lrs, rules, baseline, level):
    """({(rule, key): best lr}, {key: steps_to level}) over the lrs tried so far."""
    base = {k: baseline.get(k) if isinstance(baseline, dict) else baseline for k in models}
    levels = {k: level if level is not None else
              (_end_level(curves, lrs, base[k]) if base[k] is not None else None) for k in models}
    best = {}
    for k in models:
        g = np.stack([curves[(k, lr)] for lr in lrs[k]])
        for rule in rules:
            lv = levels[k] if rule in ("steps_to", "reach_and_stay") else None
            if lv is None and rule in ("steps_to", "reach_and_stay"):
                lv = float(np.nanmin(np.where(np.isfinite(g[:, -1]), g[:, -1], np.nan)))
            scores = analysis.rule_scores(steps, g, rule, level=lv)
            best[(rule, k)] = lrs[k][analysis.best_by([k] * len(g), lrs[k], scores)[k]]
    return best, levels
