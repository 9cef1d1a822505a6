"""`gpulinear reproduce`: run the paper's experiments and write REPORT.md.

Each experiment is a script in experiments/ (shipped in the wheel as gpulinear/_experiments)
defining NAME, TITLE and run(out, quick=True, backend="auto", tiny=False, seed=0) -> dict.
run() writes <NAME>.png, <NAME>.json (the measured claims) and its raw curves into `out`, and
returns the JSON's dict, whose "claims" list holds {"claim": quoted from the paper,
"measured": numbers, "verdict": one of VERDICTS}.  "not testable at this length" is the verdict
of a claim the run is too short to test (e.g. a 65k-step claim in a 10k-step quick run).
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

from .analysis import (FASTER, LEVEL_FRACTIONS, NOT_TESTABLE, SIGNIFICANT, baseline_levels,  # noqa: F401
                       fmt_speedup, median_speedup, speedup, speedups, steps_to, verdict)
from .result import json_default

# Report order; the value is the script's file name in experiments/.
EXPERIMENTS = {
    "fig2": "fig2_e2e_emulation.py",
    "fig3": "fig3_depth_lr_grid.py",
    "fig4_left": "fig4_left_adagrad_adadelta.py",
    "fig4_right": "fig4_right_adam.py",
    "fig5_left": "fig5_left_deeper_identity.py",
    "atlas": "atlas.py",
    "sec3": "sec3_warmup.py",
    "sec7": "sec7_two_point.py",
    "theorem2": "theorem2_not_a_gradient.py",
    "fig5_right": "fig5_right_mnist_cnn.py",
}
VERDICTS = ("holds", "partly", "does not hold", NOT_TESTABLE)   # and "depends on <axis>"
TIMINGS: list = []   # timed_train's records, moved into the experiment's JSON by save_json


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
    """Write out/<name>.json (numpy scalars and arrays become plain JSON) and return `data`,
    with the timings of the timed_train calls made since the previous save."""
    for claim in data.get("claims", []):
        if claim.get("verdict") not in VERDICTS and \
                not str(claim.get("verdict")).startswith("depends on "):
            raise ValueError(f"verdict must be one of {VERDICTS}, got {claim.get('verdict')!r}")
    if TIMINGS:   # the timed_train calls since the last save: this experiment's
        data.setdefault("timings", list(TIMINGS))
        TIMINGS.clear()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1, default=json_default))
    return data


def steps_to_reach(steps, curves, levels) -> np.ndarray:
    """(n, L) ints: first recorded step at which each curve (n, r) is <= each level; -1 if never
    (analysis.steps_to with the old integer convention, for the scripts' tables)."""
    reach = steps_to(steps, curves, list(np.atleast_1d(levels)))
    return np.where(np.isnan(reach), -1, reach).astype(np.int64)


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
    jobs = getattr(args, "jobs", None)
    if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
        from .cli import UsageError
        raise UsageError(f"reproduce: --jobs must be an integer >= 1, got {jobs!r}")
    from .backend import resolve_backend
    backend = resolve_backend(args.backend)       # early: a missing GPU fails before any run
    quick = _quick_default(args.quick, args.full, args.backend)
    tiny = getattr(args, "tiny", False)
    if jobs is None:
        jobs = default_jobs(tiny, backend, len(names))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("\n".join(estimate_lines(names, "tiny" if tiny else "quick" if quick else "full",
                                   jobs)[0]), flush=True)
    limit = blas_threads_limit(backend)
    if jobs > 1 and len(names) > 1:
        sections = _run_parallel(names, out, quick, args.backend, tiny, jobs)
    else:
        sections = [_run_one(name, out, quick, args.backend, tiny) for name in names]
    if limit is not None:
        limit.unregister()
    failed = any(s[3].startswith("failed") for s in sections)
    sections = _with_earlier_runs(sections, out)
    robustness_figure(sections, out / "robustness.png")
    report = _render(sections, quick, backend, tiny)
    (out / "REPORT.md").write_text(report)
    print(summary(sections, tiny))
    print(f"wrote {out / 'REPORT.md'}")
    return 1 if failed else 0


def default_jobs(tiny: bool, backend: str, n_experiments: int, cores=None) -> int:
    """One process per core on a CPU (each with one BLAS thread, the estimate's rate); one
    process on a GPU (it is shared, and each process would hold its own context) and for
    seconds-long tiny runs (spawning costs more than it saves)."""
    import os
    if tiny or backend != "numpy":
        return 1
    return max(1, min(cores or os.cpu_count() or 1, n_experiments))


def _run_one(name, out: Path, quick: bool, backend: str, tiny: bool) -> tuple:
    """Run experiment `name` into out/name: (name, title, data, status, wall seconds).  Any
    failure becomes its status, so one failing experiment never hides the others' results."""
    mode = "tiny: a smoke run, numbers mean nothing" if tiny else "quick" if quick else "full"
    start = time.perf_counter()
    print(f"== {name} ({mode}) ...", flush=True)
    try:
        module = load_experiment(name)
        TIMINGS.clear()                   # a failed experiment's timings are not ours
        data = module.run(out / name, quick=quick, backend=backend, tiny=tiny)
        status = data.get("skipped") or "ran"
    except ModuleNotFoundError as exc:    # an optional extra (torch) is not installed
        module, data = None, {"claims": []}
        extra = {"torch": "gpulinear[torch]"}.get(exc.name, exc.name)
        status = f"skipped: needs {exc.name} (pip install '{extra}')"
    except FileNotFoundError as exc:      # data that cannot ship (MNIST): say where it goes
        module, data = None, {"claims": []}
        status = f"skipped: {exc}"
    except Exception as exc:  # noqa: BLE001 - reported in the section, the others still run
        traceback.print_exc()
        module, data, status = None, {"claims": []}, f"failed: {type(exc).__name__}: {exc}"
    wall = time.perf_counter() - start
    print(f"   {name}: {status} in {wall:.0f} s", flush=True)
    return name, getattr(module, "TITLE", name), data, status, wall


def _one_blas_thread():
    """Pool initializer: each worker process runs its BLAS on one thread (the estimate's rate;
    `jobs` processes then use `jobs` cores)."""
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1, user_api="blas")
    except ImportError:
        pass


def _run_parallel(names, out: Path, quick: bool, backend: str, tiny: bool, jobs: int) -> list:
    """Experiments in `jobs` worker processes, the longest (by the estimate) first; results
    in report order.  Experiments never share state, so this changes only the wall time."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    mode = "tiny" if tiny else "quick" if quick else "full"
    seconds = dict(zip(names, estimate_seconds(names, mode)))
    order = sorted(names, key=lambda n: -seconds[n])
    ctx = multiprocessing.get_context("spawn")      # a fresh interpreter: no inherited BLAS pool
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                             initializer=_one_blas_thread) as pool:
        futures = {n: pool.submit(_run_one, n, out, quick, backend, tiny) for n in order}
        done = {n: f.result() for n, f in futures.items()}
    return [done[n] for n in names]


def _with_earlier_runs(sections, out: Path) -> list:
    """The sections just run, plus every other experiment whose JSON an earlier run left in
    `out` (so `reproduce fig5_right --out DIR` updates one part of DIR's report), in report
    order.  Their status names the JSON's date."""
    ran = {s[0] for s in sections}
    merged = []
    for name in EXPERIMENTS:
        if name in ran:
            merged += [s for s in sections if s[0] == name]
            continue
        doc = out / name / f"{name}.json"
        if doc.exists():
            try:
                data = json.loads(doc.read_text())
            except (OSError, ValueError):
                continue
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(doc.stat().st_mtime))
            wall = sum(t.get("wall_s", 0.0) for t in data.get("timings", []))
            merged.append((name, experiment_title(name), data,
                           f"ran earlier in this folder ({when}; training {wall:.0f} s)", wall))
    return merged


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
             "| experiment | claim (paper) | measured | verdict | why |", "|---|---|---|---|---|"]
    for name, title, data, status, wall in sections:
        claims = data.get("claims", [])
        if not claims:
            lines.append(f"| {name} | {title} | {status} | - | |")
        for c in claims:
            lines.append(f"| {name} | {_cell(c['claim'])} | {_cell(c['measured'])} | "
                         f"**{c['verdict']}** | {_cell(c.get('reason', ''))} |")
    lines += [""] + robustness_lines(sections)
    for name, title, data, status, wall in sections:
        lines += [f"## {name}: {title}", "", f"{status}, {wall:.0f} s."]
        if data.get("setup"):
            lines += ["", f"Setup: {data['setup']}"]
        lines += _evidence_lines(data)
        if data.get("markdown"):
            lines += [""] + list(data["markdown"])
        for fig in data.get("figures", []):
            lines += ["", f"![{name}]({name}/{fig})"]
        lines.append("")
    return "\n".join(lines)


VERDICT_COLOURS = {"holds": "#4daf4a", "partly": "#ffd92f", "does not hold": "#e41a1c",
                   NOT_TESTABLE: "#bdbdbd"}


def robustness_lines(sections) -> list[str]:
    """The robustness table: per claim judged under variants, its headline, how many variants
    hold, and each variant's verdict (refined lr search; the paper grid's headline beside it)."""
    rows = [(name, c) for name, _, data, _, _ in sections for c in data.get("claims", [])]
    if not any(c.get("variants") for _, c in rows):
        return []
    out = ["## Robustness: every claim under each reading the paper leaves open", "",
           "Variants are the axes of gpulinear.protocol (data = feature scaling and target "
           "scale; rule = how the best lr is picked; semantics = torch.optim or TensorFlow 1 "
           "optimizer defaults; reading = where a stall is read). The headline says 'holds' or "
           "'does not hold' only where every variant agrees.", "", "![robustness](robustness.png)", "",
           "| experiment | claim | headline (refined lrs) | paper grid only | variants holding | "
           "verdict per variant |", "|---|---|---|---|---|---|"]
    for name, c in rows:
        if not c.get("variants"):      # fixed by the paper, or exact: one reading, said so
            out.append(f"| {name} | {_cell(c['claim'][:90])} | **{c['verdict']}** | - | "
                       f"{int(c['verdict'] == 'holds')} of 1 | one reading (no open choice "
                       f"varied for this claim) |")
            continue
        v = c["variants"]
        per = "; ".join(f"{k}: {x}" for k, x in v.items())
        out.append(f"| {name} | {_cell(c['claim'][:90])} | **{c['verdict']}** | "
                   f"{c.get('grid_verdict', '-')} | {sum(x == 'holds' for x in v.values())} of "
                   f"{len(v)} | {_cell(per)} |")
    return out + [""]


def robustness_figure(sections, path) -> bool:
    """Claims as rows, their variants as columns, each cell coloured by its verdict."""
    rows = [(name, c) for name, _, data, _, _ in sections for c in data.get("claims", [])
            if c.get("variants")]
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle
    width = max(len(c["variants"]) for _, c in rows)
    fig, ax = plt.subplots(figsize=(5.5 + 0.5 * width, 1.2 + 0.5 * len(rows)))
    for i, (name, c) in enumerate(rows):
        for j, (label, v) in enumerate(c["variants"].items()):
            ax.add_patch(Rectangle((j, i), 0.95, 0.9, color=VERDICT_COLOURS.get(v, "#984ea3")))
            ax.text(j + 0.47, i + 0.45, _short(label), ha="center", va="center", fontsize=5)
    ax.set_xlim(0, width)
    ax.set_ylim(len(rows), 0)
    ax.set_yticks([i + 0.45 for i in range(len(rows))])
    ax.set_yticklabels([f"{name}: {c['claim'][:40]}...\n[{c['verdict']}]" for name, c in rows],
                       fontsize=6)
    ax.set_xticks([])
    ax.legend(handles=[Patch(color=col, label=v) for v, col in VERDICT_COLOURS.items()],
              fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=4)
    ax.set_title("Verdict of each claim under each variant (refined lr search)\nCells: data "
                 "(z/m = zscore/maxabs features, x1/x10 target), rule a/b/c, pt/tf = torch/TF 1",
                 fontsize=6)
    finish_figure(fig, path)
    return True


_SHORT = {"zscore, y x": "z x", "maxabs, y x": "m x", "a: mean log gap": "a", "b: final gap": "b",
          "c: steps to baseline's end level": "c", "d: reach & stay": "d", "torch": "pt",
          "tf1": "tf", "earliest over live lrs": "any lr", "best lr, ": ""}


def _short(label: str) -> str:
    """A variant's label in a few characters for the figure's cells, one axis a line."""
    for long, short in _SHORT.items():
        label = label.replace(long, short)
    return label.replace(", ", "\n")


def _evidence_lines(data) -> list[str]:
    """'What the evidence supports', one sentence per claim, where an experiment gives them."""
    return (["", "What the evidence supports:"] + [f"- {e}" for e in data["evidence"]]
            if data.get("evidence") else [])


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


def fmt(x) -> str:
    """A number for a report cell: 3 significant digits, 'never'/'diverged' for -1/inf."""
    if isinstance(x, (int, np.integer)):
        return "never" if x < 0 else f"{int(x):,}"
    if not np.isfinite(x):
        return "diverged"
    return f"{x:.3g}"


def finish_figure(fig, path, grid_axes=()) -> None:
    """Light grid on `grid_axes`, tight layout, save at the report's resolution, close."""
    import matplotlib.pyplot as plt
    for ax in grid_axes:
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- speed-ups: the rule lives in gpulinear.analysis (speedup, baseline_levels, speedups,
# median_speedup, fmt_speedup, LEVEL_FRACTIONS, FASTER, SIGNIFICANT), imported at the top.

def speedup_text(rows) -> str:
    """'L-L* 0.1: 2.5x, 0.02: >2.1x' for a report cell."""
    return ", ".join(f"{r['level']:.3g}: {r['text']}" for r in rows)


def spread_text(values) -> str:
    """'1.9x (1.7-2.2x over 3 seeds)' from per-seed median speed-ups."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.2g}x"
    return f"{np.median(v):.2g}x ({v.min():.2g}-{v.max():.2g}x over {len(v)} seeds)"


# -- run accounting: config-steps, progress lines, the time estimate printed before a run -----

def timed_train(label, X, y, configs, steps, **kw):
    """gl.train with one progress line before and after: configs x steps, wall and CPU seconds,
    config-steps per second.  The timing lands in TIMINGS for the experiment's JSON."""
    import resource

    from .engine import train
    n = len(configs)
    print(f"   {label}: {n} configs x {steps:,} steps = {n * steps / 1e6:.2f}M config-steps ...",
          flush=True)
    cpu0 = _cpu_seconds(resource)
    start = time.perf_counter()
    res = train(X, y, configs, steps=steps, progress=None, **kw)   # a tqdm bar on a terminal
    wall, cpu = time.perf_counter() - start, _cpu_seconds(resource) - cpu0
    TIMINGS.append({"label": label, "configs": n, "steps": steps, "wall_s": round(wall, 2),
                    "cpu_s": round(cpu, 2), "config_steps_per_s": round(n * steps / wall)})
    print(f"   {label}: done in {wall:.0f} s ({n * steps / max(wall, 1e-9):,.0f} config-steps/s, "
          f"CPU {cpu:.0f} s)", flush=True)
    return res



def _cpu_seconds(resource) -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def gap_curve(result, i, lstar) -> np.ndarray:
    """(r,) L - L* of config i, inf from its divergence on (analysis.gap_curves' rule)."""
    from .analysis import gap_curves
    return gap_curves(result.loss[i:i + 1], lstar, result.diverged_at[i:i + 1], result.steps)[0]


def seed_speedups(steps, base_curves, model_curves) -> tuple[list, list]:
    """Per seed: the speed-up rows (levels from that seed's own baseline) and their medians."""
    rows = [speedups(steps, b, m) for b, m in zip(base_curves, model_curves)]
    return rows, [median_speedup(r) for r in rows]


def evidence_sentence(what: str, verdicts: list, medians: list) -> str:
    """One sentence saying what the evidence supports, from per-run verdicts and median
    speed-ups over every preprocessing and seed."""
    v = [m for m in medians if np.isfinite(m)]
    n, n_hold = len(verdicts), sum(x == "holds" for x in verdicts)
    n_partly = sum(x == "partly" for x in verdicts)
    size = f"median speed-ups {min(v):.2g}-{max(v):.2g}x over {len(v)} runs" if v else \
        "no speed-up measurable"
    if n_hold == n:
        tail = f"supported under {'every' if n > 1 else 'the'} preprocessing tried"
    elif n_hold or n_partly:
        tail = (f"supported under {n_hold} and partly under {n_partly} of the {n} "
                f"preprocessings tried")
    else:
        tail = f"not supported at this length under {'any' if n > 1 else 'the'} preprocessing tried"
    return f"{what}: {size}; {tail}."


# Throughput of each experiment in the paper-length run of issue 16 (results/paper-length,
# 2026-12-07 07:30-09:55, this project's 2-core CPU, OPENBLAS_NUM_THREADS=1): config-steps per
# CPU-second of its training calls (the `timings` of each experiment's JSON).  2-5 single-thread
# processes shared the two cores for most of that run, and per-process rates were 0.35-0.6x those
# of the single-process run of 2026-12-01 (fig3 47k, fig4_left 28.9k, fig4_right 16.1k then), so
# on a quiet machine these estimates are pessimistic, not optimistic.  With 2 BLAS threads on
# shared cores CPU time per step was 4-5x larger (threads spin), hence 1 thread.
FULL_RATES = {"fig2": 10_400, "atlas": 17_700, "fig3": 27_300, "fig4_left": 16_900,
              "fig4_right": 9_800, "fig5_left": 16_600}
# Experiments that are not grids of gl.train calls: seconds per mode, full: the same run's wall
# times rounded up (sec3 35 s, sec7 41 s, theorem2 12 s, under sharing); fig5_right: its full-cpu
# mode, 88 CPU-min measured (experiments/fig5_right_mnist_cnn.py, CPU_SECONDS_PER_ITERATION).
FIXED_SECONDS = {"full": {"sec3": 40, "sec7": 45, "theorem2": 15, "fig5_right": 5300},
                 "quick": {"sec3": 5, "sec7": 5, "theorem2": 5, "fig5_right": 300},
                 "tiny": {}}
RATES_NOTE = ("2-core CPU at the rates of the paper-length run of 2026-12-07 (1 BLAS thread, "
              "the CPU shared: pessimistic on a quiet one)")


def blas_threads_limit(backend: str):
    """One BLAS thread for a CPU run, unless the user set the thread count: on this 2-core CPU a
    2-thread OpenBLAS ran the Fig 3 grid 10x slower in wall time than 1 thread as soon as one
    other process held a core (40 s vs 3.8 s for 60 configs x 2,000 steps, 2026-12-01), and the
    estimate's rates are 1-thread rates.  Uses threadpoolctl when installed (returns its limiter,
    to be unregistered); otherwise prints how to set it and returns None."""
    import os
    if backend != "numpy" or any(os.environ.get(v) for v in
                                 ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("   note: BLAS may use every core; on a shared 2-core CPU run with "
              "OPENBLAS_NUM_THREADS=1 (the estimate assumes it)", flush=True)
        return None
    print("   BLAS limited to 1 thread for this run (set OPENBLAS_NUM_THREADS to override)",
          flush=True)
    return threadpool_limits(1, user_api="blas")


def estimate_seconds(names, mode: str) -> list:
    """Estimated seconds of each experiment on a quiet CPU core (0 where unknown)."""
    out = []
    for name in names:
        module = load_experiment(name)
        if hasattr(module, "config_steps"):
            out.append(sum(module.config_steps(mode).values())
                       / FULL_RATES.get(name, min(FULL_RATES.values())))
        else:
            out.append(FIXED_SECONDS.get(mode, {}).get(name) or 0.0)
    return out


def makespan(seconds, jobs: int) -> float:
    """Wall seconds of tasks run longest first on `jobs` workers (list scheduling)."""
    load = [0.0] * max(1, jobs)
    for sec in sorted(seconds, reverse=True):
        load[load.index(min(load))] += sec
    return max(load)


def estimate_lines(names, mode: str, jobs: int = 1) -> tuple[list[str], float]:
    """Lines to print before a run: config-steps and estimated seconds per experiment, and the
    total seconds (experiments without an estimate count 0 and say so); with jobs > 1 the
    first line also gives the wall time of that many worker processes."""
    lines = []
    seconds = estimate_seconds(names, mode)
    for name, sec in zip(names, seconds):
        module = load_experiment(name)
        if hasattr(module, "config_steps"):
            n = sum(module.config_steps(mode).values())
            lines.append(f"   {name:<11s} {n / 1e6:7.2f}M config-steps  ~{sec / 60:5.1f} min")
        else:
            lines.append(f"   {name:<11s} {'':>20s}  " + (f"~{sec / 60:5.1f} min" if sec
                                                            else "(seconds)"))
    total = float(sum(seconds))
    wall = "" if jobs <= 1 else f", ~{makespan(seconds, jobs) / 60:.0f} min on {jobs} processes"
    lines.insert(0, f"estimate for this run ({mode}; {RATES_NOTE}): "
                    f"~{total / 60:.0f} min of one core{wall}")
    return lines, total
