"""`gpulinear reproduce`: run the paper's experiments and write REPORT.md.

Each experiment is a script in experiments/ (shipped in the wheel as gpulinear/_experiments)
defining NAME, TITLE and run(out, quick=True, backend="auto", tiny=False, seed=0) -> dict.
run() writes <NAME>.png, <NAME>.json (the measured claims) and its raw curves into `out`, and
returns the JSON's dict, whose "claims" list holds {"claim": quoted from the paper,
"measured": numbers, "verdict": "holds" | "partly" | "does not hold"}.
"""
from __future__ import annotations

import argparse
import importlib.resources
import importlib.util
import json
import time
import traceback
from pathlib import Path

import numpy as np

from .result import json_default

# Report order; the value is the script's file name in experiments/.
EXPERIMENTS = {
    "fig2": "fig2_e2e_emulation.py",
    "fig3": "fig3_depth_lr_grid.py",
    "fig4_left": "fig4_left_adagrad_adadelta.py",
    "fig4_right": "fig4_right_adam.py",
    "fig5_left": "fig5_left_deeper_identity.py",
    "sec3": "sec3_warmup.py",
    "sec7": "sec7_two_point.py",
    "theorem2": "theorem2_not_a_gradient.py",
    "fig5_right": "fig5_right_mnist_cnn.py",
}
VERDICTS = ("holds", "partly", "does not hold")


def experiments_dir() -> Path:
    """experiments/ of the source tree, else the copy inside the installed package."""
    source = Path(__file__).resolve().parents[1] / "experiments"
    if source.is_dir():
        return source
    return Path(str(importlib.resources.files("gpulinear") / "_experiments"))


def load_experiment(name: str):
    """Import the experiment script `name` (a key of EXPERIMENTS) as a module."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose from {list(EXPERIMENTS)}")
    path = experiments_dir() / EXPERIMENTS[name]
    if not path.exists():
        raise FileNotFoundError(f"experiment script {path} is missing from this installation")
    spec = importlib.util.spec_from_file_location(f"gpulinear_experiment_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_json(out: Path, name: str, data: dict) -> dict:
    """Write out/<name>.json (numpy scalars and arrays become plain JSON) and return `data`."""
    for claim in data.get("claims", []):
        if claim.get("verdict") not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {claim.get('verdict')!r}")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1, default=json_default))
    return data


def verdict(holds: bool, partly: bool = False) -> str:
    return "holds" if holds else ("partly" if partly else "does not hold")


def steps_to_reach(steps, curves, levels) -> np.ndarray:
    """First recorded step at which each curve (n, r) is <= each level (L,); -1 if never.

    Returns (n, L) ints.  Curves may hold NaN/inf (diverged), which never count as reached.
    """
    curves = np.asarray(curves, dtype=float)
    levels = np.atleast_1d(np.asarray(levels, dtype=float))
    out = np.full((curves.shape[0], len(levels)), -1, dtype=np.int64)
    finite = np.isfinite(curves)
    for j, level in enumerate(levels):
        hit = finite & (curves <= level)
        first = np.argmax(hit, axis=1)
        out[:, j] = np.where(hit.any(axis=1), np.asarray(steps)[first], -1)
    return out


def experiment_cli(module) -> int:
    """Shared `python experiments/<script>.py` entry point."""
    ap = argparse.ArgumentParser(description=module.TITLE)
    ap.add_argument("--quick", action="store_true", help="short run (default on a CPU)")
    ap.add_argument("--full", action="store_true", help="paper-length run")
    ap.add_argument("--tiny", action="store_true", help="seconds-long smoke run (CI)")
    ap.add_argument("--out", default=f"runs/{module.NAME}")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    quick = _quick_default(args.quick, args.full, args.backend)
    result = module.run(Path(args.out), quick=quick, backend=args.backend, tiny=args.tiny,
                        seed=args.seed)
    for claim in result.get("claims", []):
        print(f"[{claim['verdict']}] {claim['claim']}\n    measured: {claim['measured']}")
    return 0


def _quick_default(quick, full, backend) -> bool:
    if quick and full:
        raise SystemExit("give --quick or --full, not both")
    if quick or full:
        return quick
    from .backend import resolve_backend
    return resolve_backend(backend) == "numpy"       # full length when a GPU is present


def reproduce_main(args) -> int:
    """The `gpulinear reproduce` command."""
    if args.list:
        for name, script in EXPERIMENTS.items():
            print(f"{name:<12s} {experiment_title(name)}  (experiments/{script})")
        return 0
    names = args.names or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        from .cli import UsageError
        raise UsageError(f"reproduce: unknown experiment(s) {unknown}; choose from "
                         f"{list(EXPERIMENTS)}")
    from .backend import resolve_backend
    backend = resolve_backend(args.backend)       # early: a missing GPU fails before any run
    quick = _quick_default(args.quick, args.full, args.backend)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    tiny = getattr(args, "tiny", False)
    mode = "tiny: a smoke run, numbers mean nothing" if tiny else "quick" if quick else "full"
    for name in names:
        start = time.perf_counter()
        print(f"== {name} ({mode}) ...", flush=True)
        try:
            module = load_experiment(name)
            data = module.run(out / name, quick=quick, backend=args.backend,
                              tiny=getattr(args, "tiny", False))
            status = data.get("skipped") or "ran"
        except ModuleNotFoundError as exc:    # an optional extra (torch) is not installed
            module, data = None, {"claims": []}
            extra = {"torch": "gpulinear[torch]"}.get(exc.name, exc.name)
            status = f"skipped: needs {exc.name} (pip install '{extra}')"
        except FileNotFoundError as exc:      # data that cannot ship (MNIST): say where it goes
            module, data = None, {"claims": []}
            status = f"skipped: {exc}"
        except Exception as exc:  # one failing experiment must not hide the others' results
            traceback.print_exc()
            module, data, status = None, {"claims": []}, f"failed: {type(exc).__name__}: {exc}"
        wall = time.perf_counter() - start
        print(f"   {status} in {wall:.0f} s", flush=True)
        sections.append((name, getattr(module, "TITLE", name), data, status, wall))
    report = _render(sections, quick, backend, tiny)
    (out / "REPORT.md").write_text(report)
    print(summary(sections, tiny))
    print(f"wrote {out / 'REPORT.md'}")
    return 0 if all(not s[3].startswith("failed") for s in sections) else 1


def experiment_title(name: str) -> str:
    """An experiment's TITLE, read from its script without running it (no imports: fast, and a
    script whose optional extra is missing still lists)."""
    import ast
    path = experiments_dir() / EXPERIMENTS[name]
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return "(script missing)"
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TITLE"
                                                for t in node.targets):
            try:
                return str(ast.literal_eval(node.value))
            except ValueError:
                break
    return name


def summary(sections, tiny=False, width=100) -> str:
    """The report's claim rows, short, for the terminal: `[verdict] experiment: claim`."""
    lines = ["", "Claims and verdicts" + (" (TINY smoke run: the verdicts mean nothing)"
                                         if tiny else "") + ":"]
    for name, title, data, status, wall in sections:
        claims = data.get("claims", [])
        if not claims:
            lines.append(f"  [{status}] {name}: {title}"[:width])
        for c in claims:
            lines.append(f"  [{c['verdict']}] {name}: {_cell(c['claim'])}"[:width])
    return "\n".join(lines)


def _render(sections, quick, backend, tiny=False) -> str:
    from . import __version__
    lines = [f"# Reproducing Arora, Cohen & Hazan (ICML 2018) with gpulinear {__version__}", "",
             f"Mode: {'TINY smoke run (numbers mean nothing)' if tiny else 'quick (shortened runs; see each experiment)' if quick else 'full length'}; "
             f"backend: {backend}; date: {time.strftime('%Y-%m-%d %H:%M')}.", "",
             "| experiment | claim (paper) | measured | verdict |", "|---|---|---|---|"]
    for name, title, data, status, wall in sections:
        claims = data.get("claims", [])
        if not claims:
            lines.append(f"| {name} | {title} | {status} | - |")
        for c in claims:
            lines.append(f"| {name} | {_cell(c['claim'])} | {_cell(c['measured'])} | "
                         f"**{c['verdict']}** |")
    lines += [""]
    for name, title, data, status, wall in sections:
        lines += [f"## {name}: {title}", "", f"{status}, {wall:.0f} s."]
        if data.get("setup"):
            lines += ["", f"Setup: {data['setup']}"]
        for fig in data.get("figures", []):
            lines += ["", f"![{name}]({name}/{fig})"]
        lines.append("")
    return "\n".join(lines)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# -- helpers the experiment scripts share ----------------------------------------------------

def ethanol_problem(preprocess: str = "zscore"):
    """(X, y) of the bundled Ethanol data under a named preprocessing (ETHANOL_PREPROCESSINGS)."""
    from .datasets import ETHANOL_PREPROCESSINGS, ethanol
    if preprocess not in ETHANOL_PREPROCESSINGS:
        raise ValueError(f"preprocess: unknown {preprocess!r}; choose one of "
                         f"{list(ETHANOL_PREPROCESSINGS)}")
    return ethanol(**ETHANOL_PREPROCESSINGS[preprocess])


def optimal_losses(X, y, losses) -> dict:
    """{loss name: L*} for the given loss names."""
    from .optimum import optimal_loss
    return {name: optimal_loss(X, y, name) for name in losses}


def gaps_at(result, optimal, at_steps) -> np.ndarray:
    """(n, len(at_steps)) loss - L* at the recorded steps nearest to `at_steps` (inf if diverged
    by then)."""
    idx = [int(np.argmin(np.abs(result.steps - s))) for s in at_steps]
    gap = result.loss[:, idx] - np.reshape(np.asarray(optimal, dtype=float), (-1, 1))
    dead = result.diverged[:, None] & (result.steps[idx][None, :] >= result.diverged_at[:, None])
    return np.where(dead | ~np.isfinite(gap), np.inf, gap)


def fmt(x) -> str:
    """A number for a report cell: 3 significant digits, 'never'/'diverged' for -1/inf."""
    if isinstance(x, (int, np.integer)):
        return "never" if x < 0 else f"{int(x):,}"
    if not np.isfinite(x):
        return "diverged"
    return f"{x:.3g}"


def best_per_model(result, optimal, group, eps_levels=(), at_steps=()) -> list[dict]:
    """For each model (configs equal in `group` fields), the lr with the fastest convergence —
    the lowest mean log10(loss - L*) over the run, which rewards getting low early as well as
    late — and its numbers: lr, final gap, gaps at `at_steps`, steps to reach L* + eps."""
    opt = np.asarray(optimal, dtype=float)
    idx = result.best_indices(by="auc", group=group, optimal=opt)
    gaps = gaps_at(result.subset(idx), opt[idx] if opt.ndim else opt,
                   list(at_steps) + [result.steps[-1]])
    rows = []
    for n, i in enumerate(idx):
        cfg = result.configs[i]
        gap = result.loss[i] - (opt[i] if opt.ndim else opt)
        reach = steps_to_reach(result.steps, gap[None], eps_levels)[0] if len(eps_levels) else []
        rows.append({"config_index": i, **{g: getattr(cfg, g) for g in group}, "lr": cfg.lr,
                     "optimizer": cfg.optimizer, "diverged": bool(result.diverged[i]),
                     "final_gap": float(gaps[n, -1]),
                     "gap_at": {int(s): float(v) for s, v in zip(at_steps, gaps[n, :-1])},
                     "steps_to_eps": {str(e): int(r) for e, r in zip(eps_levels, reach)}})
    return rows


def finish_figure(fig, path, grid_axes=()) -> None:
    """Light grid on `grid_axes`, tight layout, save at the report's resolution, close."""
    import matplotlib.pyplot as plt
    for ax in grid_axes:
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
