"""Result of train(): loss curves, divergence, final end-to-end matrices, and what to do with them."""
from __future__ import annotations

import hashlib
import json
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Config

# 1: a .npz of arrays + a .json; 2: the pair shares a content hash; 3: one .npz holding both
_FORMAT = "gpulinear.Result/3"
_FORMATS = ("gpulinear.Result/1", "gpulinear.Result/2", _FORMAT)
_DOC = "document"         # the .npz member holding the JSON document (UTF-8 bytes, uint8)
# Config fields that name a model; best() picks the lr (and other hyperparameters) within each.
MODEL_FIELDS = ("depth", "width", "init", "init_scale", "parameterization", "optimizer", "loss",
                "weight_decay", "seed")


@dataclass(repr=False)
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
        """One dict per config: its fields (loss: the one it trained with) plus final/best loss,
        diverged, diverged_at and, with a target, target, steps_to_target (first step at or
        below it), reached, steps_to_target_stay (first record from which it stays at or below
        it: analysis.steps_to(stay=True)); None where a step never came."""
        rows = []
        if self.steps_to_target is not None:
            from .export import config_columns
            stay = config_columns(self)["steps_to_target_stay"]
        for i, cfg in enumerate(self.configs):
            row = cfg.to_dict()
            if row.get("loss") is None:
                row["loss"] = self.meta.get("loss")
            row.update(final_loss=float(self.final_loss[i]), best_loss=float(self.best_loss[i]),
                       diverged=bool(self.diverged[i]),
                       diverged_at=int(self.diverged_at[i]) if self.diverged[i] else None)
            if self.steps_to_target is not None:
                reached = bool(self.steps_to_target[i] >= 0)
                row.update(target=None if self.target is None else float(self.target[i]),
                           steps_to_target=int(self.steps_to_target[i]) if reached else None,
                           reached=reached, steps_to_target_stay=None if np.isnan(stay[i])
                           else int(stay[i]))
            rows.append(row)
        return rows

    def table(self):
        """One row per config as a pandas DataFrame, always (pandas: the `table` extra; without
        it an ImportError says so; records() is the same without pandas).  Columns: every
        Config field, label, final_loss, best_loss, diverged, diverged_at and, with a target,
        target, steps_to_target, reached; "never" is NaN."""
        from .export import to_pandas
        return to_pandas(self)

    def to_pandas(self, long=False):
        """table(), or long=True one row per (config, recorded step): the swept fields, step,
        loss, gap (L - L* where meta["optimal_loss"] has it) and diverged — for seaborn."""
        from .export import to_pandas
        return to_pandas(self, long=long)

    def to_xarray(self, unstack=False):
        """An xarray.Dataset: loss(config, step) with every swept Config field a coordinate;
        diverged, diverged_at / steps_to_target (NaN: never), final/best loss, target and the
        end-to-end matrices as variables; meta as attrs.  unstack=True: one dimension per swept
        field, loss(depth, lr, ..., step).  Writes to netCDF (ds.to_netcdf) and zarr as is.
        Needs the `xarray` extra."""
        from .export import to_xarray
        return to_xarray(self, unstack=unstack)

    def __repr__(self) -> str:
        from .export import summary
        return summary(self)

    def _repr_html_(self) -> str:
        from .export import html
        return html(self)

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

    def best(self, by="final_loss", group=None, optimal=None, level=None) -> "Result":
        """The best config of each model: the paper's per-model "fastest convergence" lr choice.

        group: Config fields that name a model (default: MODEL_FIELDS, i.e. everything but lr and
        the optimizer hyperparameters); by: a rule of gpulinear.analysis (one implementation with
        the experiments; ties to the smaller lr) — "final" (lowest final gap), "mean_log_gap"
        (mean log10 gap over the run: low early and late), "steps_to" (fewest steps to first
        touch `level`), "reach_and_stay" (fewest steps to reach `level` and stay below it to the
        end) — or the older "final_loss", "best_loss", "auc", "steps_to_target" (first touched).
        Diverged configs are chosen only when nothing else is left in a group.
        optimal: L* (a number or one per config; None: meta["optimal_loss"], else 0).
        level: a gap L - L* (a number, one per config, or gl.rel(0.01)); None: the target.
        """
        return self.subset(self.best_indices(by, group, optimal, level=level))

    def best_indices(self, by="final_loss", group=None, optimal=None, warn=True,
                     level=None) -> list[int]:
        """Positions of the configs best() picks, in increasing order.  warn: a ScienceWarning
        when a group's best lr is the largest or smallest of its grid (gpulinear.advice)."""
        group = MODEL_FIELDS if group is None else tuple(group)
        known = set(Config.__dataclass_fields__)
        bad = [g for g in group if g not in known]
        if bad:
            raise ValueError(f"group: unknown Config field(s) {bad}")
        if optimal is None:
            from .export import optimal_per_config
            optimal = optimal_per_config(self)
            optimal = 0.0 if optimal is None else optimal
        from .analysis import RULES
        chosen: dict = {}
        if by in RULES:
            from . import measures
            for i in measures.best_indices(self, by, group, level, optimal):
                chosen[tuple(_hashable(getattr(self.configs[i], g)) for g in group)] = i
        else:
            score = self._score(by, optimal)
            for i, cfg in enumerate(self.configs):
                key = tuple(_hashable(getattr(cfg, g)) for g in group)
                if key not in chosen or score[i] < score[chosen[key]]:
                    chosen[key] = i
        if warn:
            from .advice import lr_at_edge
            lr_at_edge(self, chosen.values(), group)
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
        raise ValueError(f"by: unknown {by!r}; use one of gpulinear.analysis.RULES ('final', "
                         "'mean_log_gap', 'steps_to', 'reach_and_stay') or 'final_loss', "
                         "'best_loss', 'auc', 'steps_to_target'")

    # -- measures: gpulinear.analysis on these curves (gpulinear.measures) ----------------------
    def gaps(self, optimal=None) -> np.ndarray:
        """(n, r) L - L* at the recorded steps, +inf from each config's divergence on.
        optimal: L* (a number or one per config); None: meta["optimal_loss"]."""
        from . import measures
        return measures.gaps(self, optimal)

    def steps_to(self, level=None, stay=True, optimal=None) -> np.ndarray:
        """(n,) the first recorded step from which L - L* <= level and stays there to the end
        (stay=False: first touched); NaN = never.  level: a gap (a number, one per config, or
        gl.rel(0.01)); None: each config's target."""
        from . import measures
        return measures.steps_to(self, level, stay, optimal)

    def escape_steps(self, optimal=None, fraction=None) -> np.ndarray:
        """(n,) first recorded step with L - L* below `fraction` (analysis.ESCAPE, 0.9) of its
        start: the end of a near-zero init's plateau.  NaN = never."""
        from . import analysis, measures
        return measures.escape_steps(self, optimal, analysis.ESCAPE if fraction is None
                                     else fraction)

    def speedups(self, baseline=None, by="reach_and_stay", level=None, optimal=None):
        """A DataFrame, one row per model at its best lr (`by`): steps to the level, its
        baseline's (default baseline={"depth": 1}: the same model at depth 1, at its own best
        lr) and the speed-up = baseline steps / steps (">2x" / "<0.5x" where one never got
        there).  level None: the target, without one "run"; "run": the gaps the baseline
        reaches at 10/25/50/100 % of the run (median speed-up over them); a gap or gl.rel(g).
        gpulinear.analysis.speedups decides."""
        from . import measures
        from .export import _need
        if optimal is None:
            from .export import optimal_per_config
            optimal = optimal_per_config(self)
            optimal = 0.0 if optimal is None else optimal
        rows = measures.speedups(self, baseline, by, level, optimal)
        return _need("pandas", "table").DataFrame(rows)

    # -- persistence: one .npz (arrays + the JSON document), never pickle ------------------------
    def save(self, path) -> Path:
        """Write the Result to `path`.npz, one file renamed into place in one step (a kill -9, a
        full disk or a concurrent save leaves the old result or the new one, complete), and a
        readable copy of its configs and meta to `path`.json; returns the .npz path.

        The .npz alone is the Result: it holds the arrays and the JSON document (configs, meta,
        content hash); load() never reads the .json, which is written after the .npz and may be
        missing or one save behind after a crash.  A meta value JSON cannot hold fails before
        anything is written.  Leftovers of killed saves to the path are removed."""
        base = _base(path)
        arrays = {"steps": self.steps, "loss": self.loss, "diverged_at": self.diverged_at,
                  "end_to_end": self.end_to_end}
        if self.steps_to_target is not None:
            arrays["steps_to_target"] = self.steps_to_target
            arrays["target"] = self.target
        arrays = {name: np.asarray(a) for name, a in arrays.items()}
        configs = [c.to_dict() for c in self.configs]
        try:
            meta = json.loads(json.dumps(self.meta, default=json_default))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"Result.save: meta cannot be written as JSON ({exc}); nothing was "
                            "written") from None
        digest = _content_hash(arrays, configs, meta)
        doc = {"format": _FORMAT, "content_hash": digest, "configs": configs, "meta": meta}
        text = json.dumps(doc, indent=1)
        arrays[_DOC] = np.frombuffer(text.encode(), dtype=np.uint8)
        arrays["content_hash"] = np.array(digest)
        from .checkpoint import atomic_write
        npath = _with(base, ".npz")
        atomic_write(npath, lambda fh: np.savez_compressed(fh, **arrays))
        jpath = _with(base, ".json")
        try:
            atomic_write(jpath, lambda fh: fh.write(text.encode()))
        except OSError as exc:   # the Result is saved (the .npz); only its readable copy is not
            try:
                jpath.unlink(missing_ok=True)        # rather none than one of an older save
            except OSError:
                pass
            print(f"gpulinear: {npath} is saved, but its readable copy {jpath.name} is not "
                  f"({exc.strerror or exc})", file=sys.stderr)
        return npath

    @classmethod
    def load(cls, path) -> "Result":
        """Read a Result written by save(); one ValueError naming the file for anything that is
        not one intact save (foreign, truncated, edited or mixed files).  Results of older
        versions (a .npz of arrays beside a .json of configs) still load, checked the same way:
        the content hash whenever the .npz carries one, whatever the .json says."""
        base = _base(path)
        jpath, npath = _with(base, ".json"), _with(base, ".npz")
        if not npath.exists():
            raise FileNotFoundError(f"Result.load: {npath} does not exist (a saved Result is a "
                                    ".npz file, written by Result.save)")
        try:
            with open(npath, "rb") as fh:
                head = fh.read(2)
        except OSError as exc:
            raise ValueError(f"{npath} cannot be read ({exc.strerror or exc})") from None
        if head != b"PK":
            raise ValueError(f"{npath} is not a saved gpulinear Result (not an .npz file)")
        try:
            with np.load(npath, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{npath} is damaged or truncated ({type(exc).__name__}: {exc})") \
                from None
        stored = arrays.pop("content_hash", None)
        stored = None if stored is None else str(stored)
        if _DOC in arrays:
            where = npath
            try:
                doc = json.loads(arrays.pop(_DOC).tobytes().decode())
            except (UnicodeDecodeError, ValueError) as exc:
                raise ValueError(f"{npath} is damaged (its document is not JSON: {exc})") \
                    from None
        else:                               # gpulinear <= 0.1.0: the document is the .json
            where = jpath
            if not jpath.exists():
                raise FileNotFoundError(f"Result.load: {npath} was written by an older "
                                        f"gpulinear and needs {jpath} beside it, which does "
                                        "not exist")
            try:
                doc = json.loads(jpath.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ValueError(f"{jpath} is not a saved gpulinear Result (not JSON: {exc})") \
                    from None
        if not isinstance(doc, dict) or doc.get("format") not in _FORMATS \
                or not isinstance(doc.get("configs"), list) or not isinstance(doc.get("meta"),
                                                                               dict):
            raise ValueError(f"{where} is not a saved gpulinear Result (no gpulinear format, "
                             "configs and meta)")
        # the hash is checked whenever the .npz carries one: a .json that claims the old format
        # (which had none) does not switch the check off
        if stored is not None or doc["format"] != "gpulinear.Result/1":
            if stored != doc.get("content_hash"):
                raise ValueError(f"{npath} and {where.name} come from different saves (their "
                                 "content hashes differ); save the Result again")
            try:
                ok = stored == _content_hash(arrays, doc["configs"], doc["meta"])
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{npath} was changed after saving (the content check fails); "
                                 "save the Result again")
        try:
            configs = [Config.from_dict(c) for c in doc["configs"]]
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{where}: a config cannot be read ({exc})") from None
        _check_shapes(npath, len(configs), arrays)
        return cls(configs=configs, meta=doc["meta"], **arrays)

    def plot(self, ax=None, optimal=None, labels=None, title=None, path=None):
        """Loss - L* on a log axis against iteration, one curve per config (like the paper's
        figures); diverged configs end at their divergence step with an x.  optimal: L* (None:
        meta["optimal_loss"] where train() or the CLI recorded it, else 0).  Returns the Axes."""
        from .plot import plot_curves
        if optimal is None:
            from .export import optimal_per_config
            optimal = optimal_per_config(self)
            optimal = 0.0 if optimal is None else optimal
        return plot_curves(self, ax=ax, optimal=optimal, labels=labels, title=title, path=path)


def _base(path) -> Path:
    """The path without a trailing .npz/.json; other dots stay ("runs/lr_0.01" is a name).  A
    folder holding result.npz (what `gpulinear train --out DIR` writes) means DIR/result."""
    base = Path(path)
    if base.is_dir() and (base / "result.npz").exists():
        return base / "result"
    return base.with_name(base.name[:-len(base.suffix)]) if base.suffix in (".npz", ".json") \
        else base


def _with(base: Path, suffix: str) -> Path:
    return base.with_name(base.name + suffix)


def _content_hash(arrays, configs, meta) -> str:
    """sha256 of the arrays (name, dtype, shape, bytes) and the canonical JSON of configs and
    meta: equal in both files of one save, different for anything else."""
    from .checkpoint import content_hash
    h = hashlib.sha256(content_hash(arrays).encode())
    h.update(json.dumps([configs, meta], sort_keys=True).encode())
    return h.hexdigest()


def _check_shapes(path, n, arrays):
    """Every array must agree with the n configs and the r recorded steps; else a ValueError."""
    need = {"steps", "loss", "diverged_at", "end_to_end"}
    missing = sorted(need - set(arrays))
    if missing:
        raise ValueError(f"{path} lacks {missing}: not a saved gpulinear Result")
    extra = sorted(set(arrays) - need - {"steps_to_target", "target"})
    if extra:
        raise ValueError(f"{path} holds arrays {extra} that a saved gpulinear Result does not "
                         "have")
    r = arrays["steps"].shape[0] if arrays["steps"].ndim == 1 else -1
    want = {"loss": (n, r), "diverged_at": (n,), "steps_to_target": (n,), "target": (n,)}
    for name, shape in want.items():
        if name in arrays and arrays[name].shape != shape:
            raise ValueError(f"{path}: {name} has shape {arrays[name].shape} but the {n} configs "
                             f"and {r} recorded steps need {shape}")
    if arrays["end_to_end"].ndim != 3 or arrays["end_to_end"].shape[0] != n:
        raise ValueError(f"{path}: end_to_end has shape {arrays['end_to_end'].shape}, not "
                         f"({n}, k, d) for the {n} configs")


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
