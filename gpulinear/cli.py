"""Command line: `gpulinear info | train | reproduce`."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

TRAIN_KEYS = ("loss", "steps", "log_every", "backend", "dtype", "target", "target_gap",
              "diverge_above", "diverge_factor", "gram")
DATA_KEYS = ("data", "preprocess", "target_column")    # [train] keys about the data, not train()
GRAM_FLAG = {"auto": None, "on": True, "off": False}


class UsageError(SystemExit):
    """A bad flag, sweep file or path: main() prints its one line to stderr and exits 2."""

    def __init__(self, message):
        super().__init__(2)
        self.message = message

    def __str__(self):
        return self.message


def main(argv=None) -> int:
    """The `gpulinear` command; every usage error is one line on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return _main(argv)
    except UsageError as exc:
        print(f"gpulinear: {exc}", file=sys.stderr)
        raise
    except KeyboardInterrupt as exc:    # outside training, or a second signal: one line, 128+N
        import signal

        from .interrupt import exit_status, signal_name
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"gpulinear: interrupted by {signal_name(signum)}; what was not written yet is "
              "lost", file=sys.stderr)
        return exit_status(signum)


def _main(argv) -> int:
    parser = argparse.ArgumentParser(prog="gpulinear", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("info", help="versions, backends, and whether a GPU is usable (or why not)")

    tr = sub.add_parser("train", help="train a grid on the bundled Ethanol data (or a CSV)",
                        description="Train a grid of deep linear networks; every list flag is "
                                    "swept (cartesian product). Writes result.npz/.json, "
                                    "table.csv and loss.png to --out.")
    tr.add_argument("--depth", type=int, nargs="+", default=[1, 2, 3])
    tr.add_argument("--width", type=int, nargs="+", default=[1])
    tr.add_argument("--lr", type=float, nargs="+", default=[1e-3])
    tr.add_argument("--optimizer", nargs="+", default=["gd"])
    tr.add_argument("--init", nargs="+", default=["normal"])
    tr.add_argument("--init-scale", type=float, nargs="+", default=[0.01])
    tr.add_argument("--parameterization", nargs="+", default=["deep"])
    tr.add_argument("--seed", type=int, nargs="+", default=[0])
    tr.add_argument("--loss", default="l4")
    tr.add_argument("--steps", type=int, default=5000)
    tr.add_argument("--log-every", type=int, default=50)
    tr.add_argument("--target", type=float, default=None, metavar="LOSS",
                    help="a loss level: steps_to_target per config, and the summary and "
                         "loss.png rank by it")
    tr.add_argument("--target-gap", type=float, default=None, metavar="GAP",
                    help="the target relative to L* of each config's loss: L* + GAP |L*| (0.01: "
                         "within 1 %%); the summary and loss.png rank by reach-and-stay")
    tr.add_argument("--diverge-above", type=float, default=None, metavar="LOSS",
                    help="an absolute divergence ceiling (inf: none) instead of the default "
                         "1e6 x each config's initial loss")
    tr.add_argument("--diverge-factor", type=float, default=None, metavar="X",
                    help="the divergence ceiling as X times each config's initial loss")
    tr.add_argument("--backend", default="auto")
    tr.add_argument("--dtype", default="float64")
    tr.add_argument("--gram", choices=sorted(GRAM_FLAG), default="auto",
                    help="l2 through the Gram matrix: auto (where d < m), on, off (data path)")
    tr.add_argument("--data", default="ethanol",
                    help="'ethanol' (bundled) or a CSV file (a header row is recognised; the "
                         "target is --target, default the last column)")
    tr.add_argument("--target-column", default=None, metavar="COLUMN",
                    help="a CSV's target column: a header name or a position (default: last)")
    tr.add_argument("--preprocess", default=None,
                    help="Ethanol: one of gpulinear.datasets.ETHANOL_PREPROCESSINGS (default "
                         "zscore); a CSV: none (default, the numbers as given) or zscore "
                         "(features)")
    tr.add_argument("--sweep", help="a TOML file with [grid] (Config fields) and [train] tables; "
                                    "its values replace the flags")
    tr.add_argument("--out", default="runs/train")
    tr.add_argument("--no-progress", action="store_true")
    tr.add_argument("--checkpoint", metavar="FILE",
                    help="write the run state to FILE (.npz) every --checkpoint-every steps, at "
                         "the end and on Ctrl-C, SIGTERM or SIGHUP, so that --resume can "
                         "continue it")
    tr.add_argument("--checkpoint-every", type=int, default=1000, metavar="N")
    tr.add_argument("--resume", action="store_true",
                    help="continue --checkpoint, which must exist (also to more --steps than "
                         "it had)")
    tr.add_argument("--resume-or-start", action="store_true",
                    help="continue --checkpoint if it exists, else start it (for a job script "
                         "that a scheduler may requeue)")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace an existing --checkpoint, and a result already in --out")
    tr.add_argument("--break-lock", action="store_true",
                    help="take over --checkpoint's lock from a process known to be gone (one "
                         "that ran on a machine that was lost)")
    where = tr.add_mutually_exclusive_group()   # either one: run the grid in shards on Dask
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="train on the Dask cluster at ADDRESS (tcp://host:8786), in shards")
    where.add_argument("--workers", type=int, metavar="N",
                       help="train in shards on N local Dask worker processes (or GPUs)")

    rp = sub.add_parser("reproduce", help="run the paper's experiments and write REPORT.md")
    rp.add_argument("names", nargs="*", help="experiments to run (default: all)")
    rp.add_argument("--quick", action="store_true", help="short runs (default on a CPU)")
    rp.add_argument("--full", action="store_true", help="paper-length runs (default on a GPU)")
    rp.add_argument("--out", default="runs/reproduce")
    rp.add_argument("--backend", default="auto")
    rp.add_argument("--tiny", action="store_true", help="seconds-long smoke runs (CI)")
    rp.add_argument("--list", action="store_true", help="list the experiments and exit")
    rp.add_argument("--jobs", type=int, default=None, metavar="N",
                    help="run experiments in N processes, one BLAS thread each (default: one "
                         "per CPU core on the numpy backend, 1 on a GPU or with --tiny; the "
                         "results are the same)")

    args = parser.parse_args(argv)
    import warnings
    warnings.formatwarning = _one_line_warning
    if args.command == "info":
        return _info()
    if args.command == "train":
        return _train(args, argv)
    from .report import reproduce_main
    return reproduce_main(args)


def _one_line_warning(message, category, filename, lineno, line=None):
    """Warnings on the command line: one line naming the category, no source excerpt."""
    return f"gpulinear: {category.__name__}: {message}\n"


def _info() -> int:
    import numpy
    import scipy

    from . import __version__
    from .backend import cuda_status
    print(f"gpulinear {__version__}")
    print(f"python {platform.python_version()} on {platform.machine()} ({platform.system()})")
    print(f"numpy {numpy.__version__}, scipy {scipy.__version__}")
    for name in ("matplotlib", "cupy", "numba", "torch", "jax", "dask", "pandas"):
        try:
            mod = __import__(name)
            print(f"{name} {getattr(mod, '__version__', '?')}")
        except Exception:
            print(f"{name}: not installed")
    ok, why = cuda_status()
    print("backends: numpy (float64 reference, CPU)" + (", cuda" if ok else ""))
    try:
        from .cuda import format_device_info
        print(format_device_info())
    except Exception as exc:  # the CUDA module reports details; fall back to the reason
        print(f"CUDA: {'available' if ok else 'unavailable'} - {why} ({exc})")
    return 0


def _load_data(args):
    """X, y from --data, and args.preprocess set to what was really done to them."""
    from . import datasets
    if args.data == "ethanol":
        args.preprocess = args.preprocess or "zscore"
        if args.preprocess not in datasets.ETHANOL_PREPROCESSINGS:
            raise UsageError(f"--preprocess: unknown {args.preprocess!r} for Ethanol; choose one "
                             f"of {list(datasets.ETHANOL_PREPROCESSINGS)}")
        return datasets.ethanol(**datasets.ETHANOL_PREPROCESSINGS[args.preprocess])
    args.preprocess = args.preprocess or "none"
    if args.preprocess not in datasets.CSV_PREPROCESSINGS:
        raise UsageError(f"--preprocess: unknown {args.preprocess!r} for a CSV file; choose one "
                         f"of {list(datasets.CSV_PREPROCESSINGS)}")
    path = Path(args.data)
    if not path.exists():
        raise UsageError(f"--data: {path} does not exist; give 'ethanol' or a CSV file")
    target = -1 if args.target_column is None else args.target_column
    if isinstance(target, str) and target.lstrip("-").isdigit():
        target = int(target)
    try:
        return datasets.load_csv(path, target=target, preprocess=args.preprocess)
    except (ValueError, TypeError) as exc:
        if str(exc).startswith("target"):
            raise UsageError(f"--target-column: {exc}") from None
        text = str(exc)           # "<path>: what is wrong" (or "<path>, line n: ...")
        raise UsageError(f"--data {text}" if text.startswith(str(path))
                         else f"--data {path}: {text}") from None


def _train(args, argv) -> int:
    from . import grid
    fields = {"depth": args.depth, "width": args.width, "lr": args.lr,
              "optimizer": args.optimizer, "init": args.init, "init_scale": args.init_scale,
              "parameterization": args.parameterization, "seed": args.seed}
    options = {"loss": args.loss, "steps": args.steps, "log_every": args.log_every,
               "backend": args.backend, "dtype": args.dtype, "gram": GRAM_FLAG[args.gram]}
    flags = ("target", "target_gap", "diverge_above", "diverge_factor")
    options.update({k: getattr(args, k) for k in flags if getattr(args, k) is not None})
    if args.sweep:
        sweep = _read_toml(args.sweep)
        for table in ("grid", "train"):
            if not isinstance(sweep.get(table, {}), dict):
                raise UsageError(f"--sweep: [{table}] must be a table in {args.sweep}")
        unknown_tables = set(sweep) - {"grid", "train"}
        if unknown_tables:
            raise UsageError(f"--sweep: unknown tables {sorted(unknown_tables)} in {args.sweep}; "
                             "known: [grid], [train]")
        table = sweep.get("grid", {})     # its fields first, in the order written (last fastest)
        fields = {**table, **{k: v for k, v in fields.items() if k not in table}}
        extra = set(sweep.get("train", {})) - set(TRAIN_KEYS) - set(DATA_KEYS)
        if extra:
            raise UsageError(f"--sweep: unknown [train] keys {sorted(extra)}; known: "
                             f"{TRAIN_KEYS + DATA_KEYS}")
        for key in DATA_KEYS:
            if key in sweep.get("train", {}):
                setattr(args, key, sweep["train"].pop(key))
        options.update(sweep.get("train", {}))
    _check_options(options, args)
    # hidden-width tuples arrive as nested lists (TOML: width = [[4, 2], 8]); a one-element list
    # is a fixed value, not a sweep axis
    if isinstance(fields["width"], list):
        fields["width"] = [tuple(w) if isinstance(w, list) else w for w in fields["width"]]
    fields = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in fields.items()}
    try:
        configs = grid(**fields)
    except (ValueError, TypeError) as exc:
        where = f"--sweep {args.sweep} [grid]" if args.sweep else "train"
        raise UsageError(f"{where}: {exc}") from None
    X, y = _load_data(args)
    _check_run(X, y, configs, options, args)
    out = Path(args.out)
    from .checkpoint import check_writable
    try:     # fail before training, not after it
        check_writable(out / "result.npz", "--out")
        if args.checkpoint:
            check_writable(args.checkpoint, "--checkpoint")
    except OSError as exc:
        raise UsageError(str(exc)) from None
    from .interrupt import deferred_signals, exit_status
    try:
        res, wall = _run_training(X, y, configs, options, args)
    except KeyboardInterrupt as exc:
        return _interrupted(exc, X, y, configs, options, args, argv)
    except OSError as exc:     # NotWritten: the checkpoint could be written nowhere
        res = getattr(exc, "result", None)
        if res is None:
            raise
        print(f"gpulinear train: {exc}", file=sys.stderr)
        wall = 0.0
    # a SIGTERM while the results are written waits for them (they are what it would lose)
    with deferred_signals() as stop:
        _finish(res, wall, X, y, configs, options, args)
    return exit_status(stop.signum) if stop.requested else 0


# the files `train` writes into --out
OUT_FILES = ("result.npz", "result.json", "table.csv", "loss.png")


def _check_run(X, y, configs, options, args):
    """What can be refused before training: the data, the numbers of the sweep file, results
    that --out would overwrite, a --checkpoint that is one of them, a --resume of nothing."""
    from . import checkpoint as ckpt
    from .config import check_real
    from .data import check_data
    try:
        check_data(X, y)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--data {args.data}: {exc}") from None
    for key in ("target",):      # diverge_above: _check_options (check_ceiling; inf allowed)
        value = options.get(key)
        try:
            if isinstance(value, list):
                if len(value) != len(configs):
                    raise ValueError(f"{key}: a list needs one value per config ({len(configs)}), "
                                     f"got {len(value)}")
                for v in value:
                    check_real(key, v)
            elif value is not None:
                check_real(key, value)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"train [train] {exc}") from None
    out = Path(args.out)
    ck = Path(args.checkpoint).resolve() if args.checkpoint else None
    if ck is not None and ck.parent == out.resolve() and ck.name in OUT_FILES:
        raise UsageError(f"--checkpoint {args.checkpoint} is the {ck.name} that train writes "
                         "into --out at the end (a resume would find a result, not a "
                         "checkpoint); give another file, e.g. "
                         f"{out / 'checkpoint.npz'}")
    if args.resume and args.resume_or_start:
        raise UsageError("train: give --resume (the checkpoint must exist) or --resume-or-start "
                         "(continue it if it exists), not both")
    if args.resume_or_start and not args.checkpoint:
        raise UsageError("train --resume-or-start needs --checkpoint FILE")
    if args.resume and not ckpt.checkpoint_exists(args.checkpoint):
        raise UsageError(f"train --resume: {args.checkpoint} does not exist, so there is nothing "
                         "to resume; check the path, or use --resume-or-start to start it when "
                         "it is missing")
    args.resume = args.resume or (args.resume_or_start and ckpt.checkpoint_exists(
        args.checkpoint))
    existing = [name for name in OUT_FILES if (out / name).exists()]
    if existing and not args.overwrite and not _same_run(out, args):
        raise UsageError(f"--out {out} already holds {', '.join(existing)} of another run; give "
                         "another --out, or --overwrite to replace them")
    if args.break_lock:            # last: only a run that will start breaks a lock
        if not args.checkpoint:
            raise UsageError("train --break-lock needs --checkpoint FILE")
        gone = ckpt.break_lock(args.checkpoint)
        if gone:
            print(f"gpulinear train: removed the lock of {args.checkpoint} (it said: {gone})",
                  file=sys.stderr)


def _same_run(out, args) -> bool:
    """Whether --out holds the result of the run that --resume continues (written by it when
    it was interrupted or finished): its meta names the same checkpoint file."""
    if not args.resume:
        return False
    from .result import Result
    try:
        meta = Result.load(out / "result").meta
    except (OSError, ValueError):
        return False
    named = meta.get("checkpoint")
    return named is not None and Path(named).resolve() == Path(args.checkpoint).resolve()


def _check_options(options, args):
    """Each train() option and flag checked before any work, as one line naming the flag."""
    from .backend import resolve_backend, resolve_dtype
    from .config import check_int
    from .engine import check_ceiling
    from .gram import use_gram
    from .losses import get_loss
    from .memory import check_schedule
    checks = [("--steps", lambda: check_int("steps", options["steps"], 0)),
              ("--log-every", lambda: check_int("log_every", options["log_every"], 1)),
              ("--steps", lambda: check_schedule(options["steps"], options["log_every"])),
              ("--checkpoint-every", lambda: check_int("checkpoint_every",
                                                       args.checkpoint_every, 1)),
              ("--loss", lambda: get_loss(options["loss"])),
              ("--dtype", lambda: resolve_dtype(options["dtype"])),
              ("--backend", lambda: resolve_backend(options["backend"])),
              ("--gram", lambda: use_gram(options["gram"], 2, 1)),
              ("--diverge-above", lambda: check_ceiling(options.get("diverge_above"),
                                                        options.get("diverge_factor"))),
              ("--target", lambda: _check_target_option(options))]
    for flag, check in checks:
        try:
            check()
        except (ValueError, TypeError, RuntimeError) as exc:
            raise UsageError(f"train {flag}: {exc}") from None
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"train --workers: must be >= 1, got {args.workers} (leave it out to "
                         "train in this process)")
    if args.resume and not args.checkpoint:
        raise UsageError("train --resume needs --checkpoint FILE")
    if args.checkpoint and (args.scheduler or args.workers):
        raise UsageError("train --checkpoint is for runs in this process; with --scheduler / "
                         "--workers use gpulinear.distributed.train(checkpoint_dir=...)")


def _check_target_option(options):
    """[train] target / --target: a loss level (a number); target_gap / --target-gap: relative
    to L*, made gl.rel(gap) here (train() resolves it per loss)."""
    from .targets import rel
    value = options.get("target")
    if value is not None and not isinstance(value, list) \
            and (isinstance(value, bool) or not isinstance(value, (int, float))):
        hint = "; for a target relative to L* use target_gap = 0.01 (--target-gap 0.01: " \
               "within 1 %)" if isinstance(value, str) else ""
        raise ValueError(f"target must be a number (a loss level), got {value!r}{hint}")
    gap = options.pop("target_gap", None)
    if gap is not None:
        if value is not None:
            raise ValueError("give target (a loss level) or target_gap (relative to L*), "
                             "not both")
        options["target"] = rel(gap)           # a ValueError naming gl.rel's rule if bad


def _run_training(X, y, configs, options, args):
    from . import train
    start = time.perf_counter()
    progress = None if not args.no_progress else False
    if args.scheduler or args.workers:
        from .distributed import train as train_sharded
        try:
            res = train_sharded(X, y, configs, scheduler=args.scheduler, workers=args.workers,
                                progress=progress, **options)
        except RuntimeError as exc:   # unreachable scheduler, a shard that kept failing
            raise SystemExit(f"gpulinear train: {exc}") from None
    else:
        try:
            res = train(X, y, configs, progress=progress, checkpoint=args.checkpoint,
                        checkpoint_every=args.checkpoint_every, resume=args.resume,
                        overwrite=args.overwrite, **options)
        except (ValueError, RuntimeError, MemoryError) as exc:
            # the checks above passed, so these are about the checkpoint (exists, another run,
            # damaged, locked) or the memory: the message names the file or the numbers
            raise SystemExit(f"gpulinear train: {exc}") from None
    return res, time.perf_counter() - start


def _interrupted(exc, X, y, configs, options, args, argv) -> int:
    """Ctrl-C, SIGTERM or SIGHUP: save the partial result, say in one line where it is and how
    to resume; exit status 128 + the signal (130, 143, 129)."""
    import shlex
    import signal

    from .interrupt import TrainingInterrupted, deferred_signals, exit_status, signal_name
    signum = getattr(exc, "signum", signal.SIGINT)
    if not isinstance(exc, TrainingInterrupted):    # before training, or a second signal
        print(f"gpulinear train: interrupted by {signal_name(signum)}; nothing was written",
              file=sys.stderr)
        return exit_status(signum)
    with deferred_signals():       # the partial result is what a signal now would lose
        try:
            wrote, _ = _save_outputs(exc.result, X, y, configs, options, args, 0.0, plot=False)
        except OSError as err:
            wrote = f"nowhere ({err})"
    if exc.checkpoint is not None:
        drop = ("--resume", "--resume-or-start", "--overwrite", "--break-lock")
        again = [a for a in argv if a not in drop] + ["--resume"]
        how = f"checkpoint {exc.checkpoint}; resume with: gpulinear {shlex.join(again)}"
    elif exc.not_written is not None:
        how = f"the checkpoint could not be written ({exc.not_written})"
    else:
        how = "no --checkpoint was given, so a rerun starts over (add --checkpoint FILE)"
    print(f"gpulinear train: interrupted at step {exc.step} of {exc.steps} by "
          f"{signal_name(signum)}; partial result in {wrote}; {how}", file=sys.stderr)
    return exit_status(signum)


def _save_outputs(res, X, y, configs, options, args, wall, plot=True):
    """result.npz/.json, table.csv (and loss.png) in --out, or in the fallback folder when --out
    cannot be written any more; returns (the folder written, L* per config (n,))."""
    import numpy as np

    from .checkpoint import save_or_rescue
    from .losses import config_loss
    from .optimum import optimal_loss
    names = [config_loss(c, options["loss"]).name for c in configs]   # a Config's own wins
    lstars = {name: optimal_loss(X, y, name) for name in set(names)}
    res.meta.update(optimal_loss=lstars, wall_seconds=wall, data=args.data,
                    preprocess=args.preprocess)

    def write(folder):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        res.save(folder / "result")
        _write_csv(folder / "table.csv", res.records())
        if plot:
            opt = np.array([lstars[name] for name in names])
            idx, rule = _best_per_group(res)
            losses = ", ".join(sorted(set(names)))
            data = Path(args.data).name if args.data != "ethanol" else "Ethanol"
            try:     # the results are written: a figure that cannot be is not worth losing them
                res.subset(idx).plot(
                    optimal=opt[idx], path=folder / "loss.png",
                    title=f"{data} (preprocess: {args.preprocess}), {losses}: best lr per model "
                          f"by {rule}")
            except (OSError, ValueError, RuntimeError) as exc:
                print(f"gpulinear train: warning: {folder / 'loss.png'} not written "
                      f"({exc}); the results are in {folder}", file=sys.stderr)

    # --out was checked before training; should it fail now (removed, disk full), the results
    # go to <tmp>/gpulinear-rescued/<pid>-<name> and the message says so
    try:
        written = save_or_rescue(write, Path(args.out), "results")
    except OSError as exc:    # NotWritten: one line naming both places and why, exit 1
        raise SystemExit(f"gpulinear train: {exc}") from None
    return written, np.array([lstars[name] for name in names])


def _finish(res, wall, X, y, configs, options, args):
    import numpy as np
    out, opt = _save_outputs(res, X, y, configs, options, args, wall)
    lstars = res.meta["optimal_loss"]
    n = len(configs)
    print(f"trained {n} configs x {options['steps']} steps in {wall:.2f} s "
          f"({n * options['steps'] / max(wall, 1e-9):,.0f} config-steps/s) on {res.meta['backend']}")
    print("L* = " + ", ".join(f"{k}: {v:.6g}" for k, v in sorted(lstars.items()))
          + f"; wrote {out}/result.npz, result.json, table.csv, loss.png")
    diverged = np.flatnonzero(res.diverged)
    if len(diverged):
        shown = ", ".join(f"{configs[i].describe()} (step {int(res.diverged_at[i])})"
                          for i in diverged[:5])
        more = f" and {len(diverged) - 5} more (see table.csv)" if len(diverged) > 5 else ""
        print(f"diverged: {len(diverged)} of {n} configs: {shown}{more}")
    idx, rule = _best_per_group(res, warn=True)
    targeted = res.steps_to_target is not None
    speed = {}
    if targeted and any(c.depth == 1 for c in configs) and len({c.depth for c in configs}) > 1:
        from .measures import speedups       # the same best_indices, in the same order
        speed = dict(zip(idx, (r["text"] for r in speedups(res, {"depth": 1}, "reach_and_stay",
                                                             None, opt))))
    stay = res.steps_to(stay=True, optimal=opt) if targeted else None
    print(f"best lr per model (by {rule}; loss.png draws these):")
    head = f"  {'model':<36s} {'lr':<9s} {'final L - L*':>12s}"
    if targeted:
        head += f"  {'stays at target from':>20s}" + ("  speed-up vs depth 1" if speed else "")
    print(head)
    for i in idx:
        cfg = configs[i]
        model = cfg.describe().replace(f", lr {cfg.lr:g}", "")
        line = f"  {model:<36s} {cfg.lr:<9g} {res.final_loss[i] - opt[i]:>12.4g}"
        if targeted:
            line += f"  {'never' if np.isnan(stay[i]) else f'step {int(stay[i])}':>20s}"
            if speed:
                line += f"  {speed[i]:>20s}"
        print(line)


def _best_per_group(res, warn=False):
    """(positions of the best config of each model, the rule's name): with a target, the fewest
    steps to reach it and stay below it (analysis "reach_and_stay"); else the lowest final
    loss.  warn: the lr-at-the-grid-edge warning."""
    if res.steps_to_target is not None:
        return res.best_indices(by="reach_and_stay", warn=warn), "steps to reach and stay at " \
                                                                  "the target"
    return res.best_indices(by="final", warn=warn), "final loss"


def _read_toml(path):
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise UsageError("--sweep needs Python >= 3.11 (tomllib) or `pip install tomli`")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise UsageError(f"--sweep: cannot read {path} ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--sweep: {path} is not valid TOML ({exc})") from None


def _write_csv(path, rows):
    import csv
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})


if __name__ == "__main__":
    sys.exit(main())
