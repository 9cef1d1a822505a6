"""Result of train(): loss curves, divergence, final end-to-end matrices, and what to do with them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Config

_FORMAT = "gpulinear.Result/1"
# Config fields that name a model; best() picks the lr (and other hyperparameters) within each.
MODEL_FIELDS = ("depth", "width", "init", "init_scale", "parameterization", "optimizer", "loss",
                "weight_decay", "seed")


@dataclass
class Result:
    """configs: list[Config] (n); steps (r,) recorded steps; loss (n, r) training loss there;
    diverged_at (n,) step of divergence or -1; end_to_end (n, k, d) final W_e (frozen ones: at
    divergence); steps_to_target (n,) first step with loss <= target, -1 if never (None without
    a target)."""

    configs: list
    steps: np.ndarray
    loss: np.ndarray
    diverged_at: np.ndarray
    end_to_end: np.ndarray
    steps_to_target: np.ndarray | None = None
    target: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def diverged(self) -> np.ndarray:
        """(n,) bool: the config was flagged and frozen."""
        return self.diverged_at >= 0

    @property
    def final_loss(self) -> np.ndarray:
        """(n,) loss at the last recorded step (inf for diverged configs)."""
        return np.where(self.diverged, np.inf, self.loss[:, -1])

    @property
    def best_loss(self) -> np.ndarray:
        """(n,) lowest finite recorded loss."""
        return np.nanmin(np.where(np.isfinite(self.loss), self.loss, np.nan), axis=1,
                         initial=np.inf, where=np.isfinite(self.loss))

    def records(self) -> list[dict]:
        """One dict per config: its fields plus final/best loss, diverged_at, steps_to_target."""
        rows = []
        for i, cfg in enumerate(self.configs):
            row = cfg.to_dict()
            row.update(final_loss=float(self.final_loss[i]), best_loss=float(self.best_loss[i]),
                       diverged=bool(self.diverged[i]), diverged_at=int(self.diverged_at[i]))
            if self.steps_to_target is not None:
                row["steps_to_target"] = int(self.steps_to_target[i])
            rows.append(row)
        return rows

    def table(self):
        """records() as a pandas DataFrame when pandas is installed, else the list of dicts."""
        try:
            import pandas as pd
        except ImportError:
            return self.records()
        return pd.DataFrame(self.records())

    def subset(self, indices) -> "Result":
        """A Result holding only the configs at `indices` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Result(configs=[self.configs[i] for i in idx], steps=self.steps.copy(),
                      loss=self.loss[idx], diverged_at=self.diverged_at[idx],
                      end_to_end=self.end_to_end[idx],
                      steps_to_target=None if self.steps_to_target is None
                      else self.steps_to_target[idx],
                      target=None if self.target is None else self.target[idx], meta=dict(self.meta))

    @classmethod
    def concat(cls, parts, n) -> "Result":
        """One Result from [(config positions, Result of those configs)] covering range(n), in
        position order (chunks of one grid, or shards run elsewhere).  Every part must have
        recorded the same steps."""
        if not parts:
            raise ValueError("concat: no parts")
        order = np.concatenate([np.asarray(idx, dtype=np.int64) for idx, _ in parts])
        if sorted(order.tolist()) != list(range(n)):
            raise ValueError(f"parts must cover configs 0..{n - 1} exactly once")
        results = [r for _, r in parts]
        for idx, r in parts:
            if len(r.configs) != len(idx) or r.loss.shape[0] != len(idx):
                raise ValueError(f"concat: a part lists {len(idx)} positions but its Result "
                                 f"holds {len(r.configs)} configs")
        if len({r.steps_to_target is None for r in results}) > 1:
            raise ValueError("concat: some parts have a target and some do not")
        steps = results[0].steps
        for r in results[1:]:
            if not np.array_equal(r.steps, steps):
                raise ValueError("parts recorded different steps (stop_at_target stops each part "
                                 "on its own); run them without stop_at_target")
        inverse = np.argsort(order)

        def cat(name):
            arrays = [getattr(r, name) for r in results]
            return None if arrays[0] is None else np.concatenate(arrays)[inverse]

        configs = [c for r in results for c in r.configs]
        return cls(configs=[configs[i] for i in inverse], steps=steps.copy(), loss=cat("loss"),
                   diverged_at=cat("diverged_at"), end_to_end=cat("end_to_end"),
                   steps_to_target=cat("steps_to_target"), target=cat("target"),
                   meta=dict(results[0].meta, parts=len(parts)))

    def best(self, by="final_loss", group=None, optimal=0.0) -> "Result":
        """The best config of each model: the paper's per-model "fastest convergence" lr choice.

        group: Config fields that name a model (default: MODEL_FIELDS, i.e. everything but lr and
        the optimizer hyperparameters); by: "final_loss", "best_loss", "auc" (mean log10 loss over
        the records, rewards being low early as well as late) or "steps_to_target" (ties broken by
        final loss).  Diverged configs are chosen only when nothing else is left in a group.
        optimal: L* (a number or one per config) subtracted before "auc" takes the log.
        """
        return self.subset(self.best_indices(by, group, optimal))

    def best_indices(self, by="final_loss", group=None, optimal=0.0) -> list[int]:
        """Positions of the configs best() picks, in increasing order."""
        group = MODEL_FIELDS if group is None else tuple(group)
        known = set(Config.__dataclass_fields__)
        bad = [g for g in group if g not in known]
        if bad:
            raise ValueError(f"group: unknown Config field(s) {bad}")
        score = self._score(by, optimal)
        chosen: dict = {}
        for i, cfg in enumerate(self.configs):
            key = tuple(_hashable(getattr(cfg, g)) for g in group)
            if key not in chosen or score[i] < score[chosen[key]]:
                chosen[key] = i
        return sorted(chosen.values())

    def _score(self, by, optimal=0.0):
        """Sort keys per config, lower is better; a diverged config sorts after every live one."""
        if by == "final_loss":
            return [(bool(a), float(b)) for a, b in zip(self.diverged, self.loss[:, -1])]
        if by == "best_loss":
            return [(bool(a), float(b)) for a, b in zip(self.diverged, self.best_loss)]
        if by == "auc":
            opt = np.reshape(np.asarray(optimal, dtype=float), (-1, 1))
            # a gap at or below 0 is L* reached up to rounding: clamp it, never drop it (dropping
            # would raise the mean of exactly the curves that converged fastest)
            floor = np.finfo(float).eps * np.maximum(np.abs(opt), 1.0)
            gap = np.maximum(self.loss - opt, floor)
            with np.errstate(invalid="ignore"):
                auc = np.nanmean(np.where(np.isfinite(gap), np.log10(gap), np.nan), axis=1)
            auc = np.where(np.isnan(auc), np.inf, auc)
            return [(bool(a), float(b)) for a, b in zip(self.diverged, auc)]
        if by == "steps_to_target":
            if self.steps_to_target is None:
                raise ValueError("by='steps_to_target' needs train(..., target=...)")
            never = self.steps_to_target < 0
            reach = np.where(never, np.inf, self.steps_to_target)
            return [(bool(a), float(s), float(f))
                    for a, s, f in zip(self.diverged, reach, self.loss[:, -1])]
        raise ValueError(f"by: unknown {by!r}; use 'final_loss', 'best_loss', 'auc' or "
                         "'steps_to_target'")

    # -- persistence: npz for arrays, json for configs and metadata, never pickle -------------
    def save(self, path) -> Path:
        """Write `path`.npz (arrays) and `path`.json (configs, meta); returns the .npz path."""
        base = _base(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"steps": self.steps, "loss": self.loss, "diverged_at": self.diverged_at,
                  "end_to_end": self.end_to_end}
        if self.steps_to_target is not None:
            arrays["steps_to_target"] = self.steps_to_target
            arrays["target"] = self.target
        np.savez_compressed(_with(base, ".npz"), **arrays)
        doc = {"format": _FORMAT, "configs": [c.to_dict() for c in self.configs],
               "meta": self.meta}
        _with(base, ".json").write_text(json.dumps(doc, indent=1, default=json_default))
        return _with(base, ".npz")

    @classmethod
    def load(cls, path) -> "Result":
        base = _base(path)
        doc = json.loads(_with(base, ".json").read_text())
        if doc.get("format") != _FORMAT:
            raise ValueError(f"{_with(base, '.json')} is not a saved gpulinear Result")
        with np.load(_with(base, ".npz"), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        return cls(configs=[Config.from_dict(c) for c in doc["configs"]], meta=doc["meta"],
                   **arrays)

    def plot(self, ax=None, optimal=0.0, labels=None, title=None, path=None):
        """Loss - L* on a log axis against iteration, one curve per config (like the paper's
        figures); diverged configs end at their divergence step with an x.  Returns the Axes."""
        from .plot import plot_curves
        return plot_curves(self, ax=ax, optimal=optimal, labels=labels, title=title, path=path)


def _base(path) -> Path:
    """The path without a trailing .npz/.json; other dots stay ("runs/lr_0.01" is a name)."""
    base = Path(path)
    return base.with_name(base.name[:-len(base.suffix)]) if base.suffix in (".npz", ".json") \
        else base


def _with(base: Path, suffix: str) -> Path:
    return base.with_name(base.name + suffix)


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def json_default(obj):
    """json.dumps(default=...) for NumPy scalars and arrays and paths."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
