"""Command line: `gpulinear info | train | reproduce`."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

TRAIN_KEYS = ("loss", "steps", "log_every", "backend", "dtype", "target", "diverge_above")


def main(argv=None) -> int:
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
    tr.add_argument("--backend", default="auto")
    tr.add_argument("--dtype", default="float64")
    tr.add_argument("--data", default="ethanol",
                    help="'ethanol' (bundled) or a CSV file whose last column is the target")
    tr.add_argument("--preprocess", default="zscore",
                    help="Ethanol preprocessing: one of gpulinear.datasets.ETHANOL_PREPROCESSINGS")
    tr.add_argument("--sweep", help="a TOML file with [grid] (Config fields) and [train] tables; "
                                    "its values replace the flags")
    tr.add_argument("--out", default="runs/train")
    tr.add_argument("--no-progress", action="store_true")
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

    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    if args.command == "train":
        return _train(args)
    from .report import reproduce_main
    return reproduce_main(args)


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
    import numpy as np

    from . import datasets
    if args.data == "ethanol":
        if args.preprocess not in datasets.ETHANOL_PREPROCESSINGS:
            raise SystemExit(f"--preprocess: unknown {args.preprocess!r}; choose one of "
                             f"{list(datasets.ETHANOL_PREPROCESSINGS)}")
        return datasets.ethanol(**datasets.ETHANOL_PREPROCESSINGS[args.preprocess])
    path = Path(args.data)
    if not path.exists():
        raise SystemExit(f"--data: {path} does not exist; give 'ethanol' or a CSV file")
    table = np.loadtxt(path, delimiter=",", ndmin=2)
    return table[:, :-1], table[:, -1]


def _train(args) -> int:
    from . import grid, train
    fields = {"depth": args.depth, "width": args.width, "lr": args.lr,
              "optimizer": args.optimizer, "init": args.init, "init_scale": args.init_scale,
              "parameterization": args.parameterization, "seed": args.seed}
    options = {"loss": args.loss, "steps": args.steps, "log_every": args.log_every,
               "backend": args.backend, "dtype": args.dtype}
    if args.sweep:
        sweep = _read_toml(args.sweep)
        fields.update(sweep.get("grid", {}))
        extra = set(sweep.get("train", {})) - set(TRAIN_KEYS) - {"data", "preprocess"}
        if extra:
            raise SystemExit(f"--sweep: unknown [train] keys {sorted(extra)}; known: {TRAIN_KEYS}")
        for key in ("data", "preprocess"):
            if key in sweep.get("train", {}):
                setattr(args, key, sweep["train"].pop(key))
        options.update(sweep.get("train", {}))
    # hidden-width tuples arrive as nested lists (TOML: width = [[4, 2], 8]); a one-element list
    # is a fixed value, not a sweep axis
    if isinstance(fields["width"], list):
        fields["width"] = [tuple(w) if isinstance(w, list) else w for w in fields["width"]]
    fields = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in fields.items()}
    try:
        configs = grid(**fields)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"gpulinear train: {exc}") from None
    X, y = _load_data(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
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
        res = train(X, y, configs, progress=progress, **options)
    wall = time.perf_counter() - start
    import numpy as np

    from .losses import config_loss
    from .optimum import optimal_loss
    names = [config_loss(c, options["loss"]).name for c in configs]   # a Config's own wins
    lstars = {name: optimal_loss(X, y, name) for name in set(names)}
    opt = np.array([lstars[name] for name in names])
    res.meta.update(optimal_loss=lstars, wall_seconds=wall, data=args.data,
                    preprocess=args.preprocess)
    res.save(out / "result")
    _write_csv(out / "table.csv", res.records())
    res.plot(optimal=opt, path=out / "loss.png",
             title=f"{args.data} ({args.preprocess}), {options['loss']}")
    n = len(configs)
    print(f"trained {n} configs x {options['steps']} steps in {wall:.2f} s "
          f"({n * options['steps'] / max(wall, 1e-9):,.0f} config-steps/s) on {res.meta['backend']}")
    print("L* = " + ", ".join(f"{k}: {v:.6g}" for k, v in sorted(lstars.items()))
          + f"; wrote {out}/result.npz, result.json, table.csv, loss.png")
    for i in res.best_indices():
        print(f"  best of {configs[i].describe():<40s} final loss - L* = "
              f"{res.final_loss[i] - opt[i]:.4g}")
    return 0


def _read_toml(path):
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise SystemExit("--sweep needs Python >= 3.11 (tomllib) or `pip install tomli`")
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def _write_csv(path, rows):
    import csv
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})


if __name__ == "__main__":
    sys.exit(main())
