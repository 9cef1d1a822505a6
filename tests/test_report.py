"""Claim computations of the reproduce report, and each Ethanol experiment in tiny mode."""
import json

import numpy as np
import pytest

from gpulinear.cli import main
from gpulinear.report import (EXPERIMENTS, VERDICTS, load_experiment,
                              steps_to_reach, verdict)


def test_steps_to_reach_known_curves():
    steps = np.array([0, 10, 20, 30])
    curves = np.array([[1.0, 0.5, 0.2, 0.05], [1.0, 0.9, np.inf, np.nan], [0.01, 0.01, 0, 0]])
    got = steps_to_reach(steps, curves, [0.5, 0.1])
    np.testing.assert_array_equal(got, [[10, 30], [-1, -1], [0, 0]])


def test_verdict_words():
    assert verdict(True) == "holds" and verdict(False, True) == "partly"
    assert verdict(False) == "does not hold"


@pytest.mark.parametrize("name", ["fig2", "fig3", "fig4_left", "fig4_right", "fig5_left", "sec3",
                                  "sec7", "theorem2"])
def test_experiment_tiny_writes_its_claims(name, tmp_path):
    module = load_experiment(name)
    data = module.run(tmp_path, quick=True, backend="numpy", tiny=True)
    doc = json.loads((tmp_path / f"{module.NAME}.json").read_text())
    assert doc["claims"] and doc["figures"] and doc["setup"]
    for claim in doc["claims"]:
        assert (claim["verdict"] in VERDICTS or claim["verdict"].startswith("depends on")) \
            and claim["claim"] and claim["measured"]
        # the report's "why" column: every headline verdict comes with its reason
        assert len(claim.get("reason", "")) > 20, claim["claim"]
    for fig in doc["figures"]:
        assert (tmp_path / fig).stat().st_size > 5000
    assert data["claims"] == doc["claims"]


def test_reproduce_command_writes_report(tmp_path, capsys):
    assert main(["reproduce", "fig4_right", "--tiny", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "| fig4_right |" in report and "TINY" in report
    assert "fig4_right/fig4_right.png" in report
    printed = capsys.readouterr().out
    assert "estimate for this run (tiny" in printed                 # before the run starts
    assert printed.index("estimate") < printed.index("fig4_right zscore")  # then progress lines
    assert "What the evidence supports" in report
    assert main(["reproduce", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in EXPERIMENTS)
    with pytest.raises(SystemExit, match="unknown experiment"):
        main(["reproduce", "nope", "--tiny", "--out", str(tmp_path)])


def test_reproduce_jobs_runs_experiments_in_processes_with_the_same_report(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["reproduce", "sec3", "theorem2", "--tiny", "--out", str(one)]) == 0
    assert main(["reproduce", "sec3", "theorem2", "--tiny", "--jobs", "2", "--out", str(two)]) == 0
    printed = capsys.readouterr().out
    assert "on 2 processes" in printed
    for name in ("sec3", "theorem2"):
        a = json.loads((one / name / f"{name}.json").read_text())["claims"]
        b = json.loads((two / name / f"{name}.json").read_text())["claims"]
        assert a == b                    # the same numbers whichever process ran them
    assert (two / "REPORT.md").read_text().index("| sec3 |") < \
        (two / "REPORT.md").read_text().index("| theorem2 |")
    with pytest.raises(SystemExit):
        main(["reproduce", "sec3", "--tiny", "--jobs", "0", "--out", str(one)])


def test_default_jobs_one_per_core_on_a_cpu_only():
    from gpulinear.report import default_jobs
    assert default_jobs(False, "numpy", 9, cores=2) == 2
    assert default_jobs(False, "numpy", 1, cores=8) == 1
    assert default_jobs(True, "numpy", 9, cores=2) == 1 and default_jobs(False, "cuda", 9, 8) == 1


def test_makespan_is_list_scheduling():
    from gpulinear.report import makespan
    assert makespan([27, 20, 17, 17, 6, 2], 2) == 45
    assert makespan([10, 1], 1) == 11 and makespan([], 3) == 0


def test_reproduce_keeps_experiments_run_earlier_in_the_folder(tmp_path, capsys):
    earlier = {"claims": [{"claim": "an earlier claim", "measured": "3x", "verdict": "holds"}],
               "timings": [{"wall_s": 12.0}]}
    (tmp_path / "fig3").mkdir()
    (tmp_path / "fig3" / "fig3.json").write_text(json.dumps(earlier))
    assert main(["reproduce", "fig4_right", "--tiny", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "| fig3 | an earlier claim | 3x | **holds** |" in report
    assert "ran earlier in this folder" in report
    assert report.index("| fig3 |") < report.index("| fig4_right |")     # report order


# ------------------------------------------------------------------ the speed-up rule

def test_speedup_three_times_sooner_with_tied_final_gaps():
    """Issue 10: final gaps tie, one curve gets there 3x sooner -> a 3x speed-up."""
    from gpulinear.report import median_speedup, speedups
    steps = np.arange(0, 30_001)       # a record every step: the ratio is exact to < 1e-3
    t = steps / steps[-1]
    # both decay from 1 to 0.01: the model on a 3x faster clock, then flat at the same floor
    base = np.maximum(1.0 * 0.01 ** t, 0.01)
    model = np.maximum(1.0 * 0.01 ** (3 * t), 0.01)
    assert base[-1] == model[-1]                        # final-gap ratio: 1.0
    rows = speedups(steps, base, model, levels=[0.5, 0.1, 0.03])
    for r in rows:
        assert r["kind"] == "exact"
        # first steps are >= 1500 (model, level 0.5): rounding to a step moves the ratio < 1e-3
        assert r["speedup"] == pytest.approx(3.0, rel=2e-3)
    assert median_speedup(rows) == pytest.approx(3.0, rel=2e-3)
    assert rows[0]["text"] == "3x"


def test_speedup_never_is_a_bound_beyond_the_run():
    from gpulinear.report import fmt_speedup, speedup
    assert speedup(21_000, 10_000, 100_000) == (2.1, "exact")
    value, kind = speedup(-1, 47_619, 100_000)           # baseline never: > 100k / 47.6k
    assert kind == "lower" and value == pytest.approx(2.1, rel=1e-4)
    assert fmt_speedup(value, kind) == ">2.1x"
    value, kind = speedup(40_000, -1, 100_000)           # model never: < 40k / 100k
    assert (value, kind) == (0.4, "upper") and fmt_speedup(value, kind) == "<0.4x"
    value, kind = speedup(-1, -1, 100_000)
    assert kind == "none" and np.isnan(value) and fmt_speedup(value, kind) == "n/a"
    assert speedup(0, 0, 100) == (1.0, "exact")          # both start below: no infinite speed-up


def test_baseline_levels_are_gaps_the_baseline_reached():
    from gpulinear.report import baseline_levels
    steps = np.arange(0, 1001, 10)
    gap = np.linspace(1.0, 0.0, len(steps)) + 0.05
    gap[50] = np.inf                                    # a non-finite record never becomes a level
    levels = baseline_levels(steps, gap, (0.1, 0.5, 1.0))
    np.testing.assert_allclose(levels, [gap[10], gap[49], gap[-1]])
    assert np.all(np.diff(levels) <= 0)


def test_diverged_model_is_slower_not_faster():
    from gpulinear.report import median_speedup, speedups
    steps = np.arange(0, 1001, 10)
    base = np.exp(-steps / 300)
    model = np.exp(-steps / 100)
    model[20:] = np.inf                                 # fast, then diverged at step 200
    rows = speedups(steps, base, model)
    kinds = [r["kind"] for r in rows]
    assert kinds[0] == "exact" and kinds[-1] == "upper"
    assert rows[-1]["speedup"] == pytest.approx(1.0)     # baseline needs the whole run
    assert np.isfinite(median_speedup(rows))


def test_not_testable_is_a_verdict():
    from gpulinear.report import NOT_TESTABLE
    assert NOT_TESTABLE in VERDICTS


def test_fig2_escape_and_post_escape_agreement_apart():
    from gpulinear import analysis
    fig2 = load_experiment("fig2")
    steps = np.arange(0, 2001, 10)
    slow = np.where(steps < 500, 1.0, 0.01 + np.exp(-(steps - 500) / 100.0))  # escapes at 500
    fast = np.where(steps < 100, 1.0, 0.01 + np.exp(-(steps - 100) / 100.0))  # the same at 100
    esc = analysis.escape_steps(steps, np.stack([slow, fast]))
    assert fig2._esc_diff(esc[0], esc[1]) == pytest.approx(400 / esc[1], rel=1e-12)
    assert analysis.agreement_after_drop(slow, fast) < 0.05          # same path after the drop
    assert fig2._esc_diff(np.nan, esc[1]) == np.inf


def test_full_mode_estimate_counts_config_steps():
    from gpulinear.report import estimate_lines
    lines, total = estimate_lines(["fig3", "fig4_right"], "full")
    fig3 = load_experiment("fig3").config_steps("full")
    # per data variant: 3 l4 models x (10 grid + ~12 refined lrs) + 2 seeds x 3 models x 2 picks
    assert fig3["l4"] == (3 * 22 + 2 * 3 * 2) * 100_000 * 3
    assert total > 0 and any("fig3" in line for line in lines)


def test_publish_copies_report_figures_and_claims_without_raw_curves(tmp_path):
    import importlib.util

    from gpulinear.report import experiments_dir
    spec = importlib.util.spec_from_file_location("publish", experiments_dir() / "publish.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    src, dest = tmp_path / "run", tmp_path / "results" / "paper-length"
    (src / "fig3").mkdir(parents=True)
    (src / "REPORT.md").write_text("# report\n| fig3 | c | m | **holds** |\n")
    (src / "fig3" / "fig3.png").write_bytes(b"\x89PNG" + bytes(100))
    (src / "fig3" / "fig3_zscore.npz").write_bytes(bytes(1000))      # raw curves: stay behind
    claim = {"claim": "depth | accelerates", "measured": "2x", "verdict": "holds"}
    (src / "fig3" / "fig3.json").write_text(json.dumps(
        {"claims": [claim], "runs": {"a": {"curves": [1, 2, 3], "steps": 5}}}))
    size = publish.publish(src, dest)
    assert size == sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == \
        ["REPORT.md", "claims.json", "fig3.json", "fig3.png"]
    assert json.loads((dest / "fig3" / "fig3.json").read_text())["runs"] == {"a": {"steps": 5}}
    head = (dest / "REPORT.md").read_text().splitlines()
    assert "gpulinear reproduce --full" in head[1] and "publish.py" in head[1]
    assert "CPUs" in head[3] and "numpy" in head[3]
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{publish.README_START}\nSTALE\n{publish.README_END}\nrest\n")
    block = publish.readme_block(dest, {"fig3": [claim]}, tmp_path)
    assert publish.update_readme(readme, block)
    text = readme.read_text()
    assert "STALE" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "depth \\| accelerates | **holds**" in text
    assert "results/paper-length/fig3/fig3.png" in text
    assert not publish.update_readme(tmp_path / "run" / "REPORT.md", block)   # no markers
    assert "changed since" not in (dest / "REPORT.md").read_text()   # nothing published before
    # republished with one verdict changed and one claim added: the report lists both
    (src / "REPORT.md").write_text("# report\n| fig3 |\n## Robustness\nrows\n")
    moved = dict(claim, verdict="does not hold", reason="depth 2 0.8x (rule: > 1.1x)")
    added = {"claim": "new one", "measured": "", "verdict": "holds", "reason": "r"}
    (src / "fig3" / "fig3.json").write_text(json.dumps({"claims": [moved, added]}))
    publish.publish(src, dest)
    report = (dest / "REPORT.md").read_text()
    assert "## Verdicts changed since the previous publication (" in report
    assert report.index("changed since") < report.index("## Robustness")
    assert "| holds | **does not hold** | depth 2 0.8x (rule: > 1.1x) |" in report
    assert "| new one | (new claim) | **holds** |" in report
    publish.publish(src, dest)                                          # the same again
    assert "None: every claim's verdict is the same." in (dest / "REPORT.md").read_text()


def test_evidence_sentence_counts_verdicts():
    from gpulinear.report import evidence_sentence
    assert evidence_sentence("x", ["holds"] * 3, [2.0, 3.0]) == \
        "x: median speed-ups 2-3x over 2 runs; supported under every preprocessing tried."
    assert "supported under 1 and partly under 1 of the 3" in \
        evidence_sentence("x", ["holds", "partly", "does not hold"], [0.5, np.nan, 2.0])
    assert "not supported at this length under the preprocessing" in \
        evidence_sentence("x", ["does not hold"], [])


def test_fig5_right_full_cpu_mode_fits_its_budget_and_says_what_was_cut():
    module = load_experiment("fig5_right")
    full, cpu = module.MODES["full"], module.MODES["full-cpu"]
    assert cpu["iterations"] == full["iterations"] == 8593          # the paper's 10 epochs
    assert set(cpu["lrs"]) < set(full["lrs"]) and set(cpu["stds"]) < set(full["stds"])
    assert 0.01 in cpu["lrs"] and 0.1 in cpu["stds"]                # the tutorial's, reused
    assert module.L2_READINGS == ("factors", "product", "original-only")
    # main: the original + one run per L2 reading (product counted twice: it forms W_2 W_1);
    # grids: 5 fresh lrs x (original + readings) + 3 fresh stds x readings, 500 iterations each
    assert module.full_cpu_iterations() == 8593 * (1 + 1 + 2 + 1) + 500 * (5 * 5 + 3 * 4)
    assert module.estimate_seconds("full-cpu") <= 40 * 60         # the issue's ~40 min
    assert module.estimate_seconds("quick") <= 5 * 60
    assert module.estimate_seconds("tiny") <= 30


def _decay(t, rate=1e-3):
    """A smoothed-loss-like curve: 2 x exp(-rate t) + 0.01, decreasing over the whole run."""
    return 2.0 * np.exp(-rate * np.asarray(t, dtype=float)) + 0.01


def test_fig5_right_speedup_is_read_at_levels_spanning_the_run():
    module = load_experiment("fig5_right")
    t = np.arange(1, 2001)
    base = _decay(t)
    rows = module.speedup_rows(base, _decay(2 * t))       # the same curve twice as fast
    # levels: the original's own values at 10/25/50/100 % of the run, not fixed numbers
    np.testing.assert_allclose([r["level"] for r in rows], base[[199, 499, 999, 1999]])
    assert [r["kind"] for r in rows] == ["exact"] * 4
    assert all(1.9 <= r["speedup"] <= 2.1 for r in rows)
    stuck = module.speedup_rows(base, _decay(t) + 0.5)      # never below 0.78: misses the last two
    assert [r["kind"] for r in stuck] == ["exact", "exact", "upper", "upper"]
    assert module.judge_speedup(base, _decay(2 * t)) == "holds"
    assert module.judge_speedup(base, _decay(1.3 * t)) == "partly"
    assert module.judge_speedup(base, base) == "does not hold"
    assert module.judge_speedup(base, _decay(0.5 * t)) == "does not hold"
    dead = _decay(2 * t)
    dead[150:] = np.inf                                     # diverged: never counts as reached
    assert module.judge_speedup(base, dead) == "does not hold"
    # settled on the first half: the same verdict from the first 1000 records
    assert module.judge_speedup(base, _decay(2 * t), 1000) == "holds"


def test_fig5_right_std_grid_and_lr_grid_rules():
    module = load_experiment("fig5_right")
    t = np.arange(1, 1001)
    base = _decay(t)
    fast = {0.01: _decay(20 * t), 0.1: _decay(25 * t)}
    assert module.judge_std(base, fast) == "holds"          # >= 10x and within 2x of each other
    assert module.judge_std(base, {0.01: _decay(20 * t), 0.1: _decay(3 * t)}) == "partly"
    assert module.judge_std(base, {0.01: _decay(1.0 * t), 0.1: _decay(0.2 * t)}) == "does not hold"
    dead = {**fast, 0.5: np.full(1000, np.inf)}
    assert module.judge_std(base, dead) == "does not hold"  # a diverged std: not identical, slower
    # lr picks: rule a (mean log) and b (final) can disagree; c is steps to a level
    early, late = _decay(t, 2e-2) + 0.1, _decay(t, 4e-3)     # early: fast then stuck; late: lower end
    curves = {1e-3: late, 1e-2: early}
    assert module.best_lr(curves, "mean_log_gap") == 1e-2
    assert module.best_lr(curves, "final") == 1e-3
    assert module.best_lr(curves, "steps_to", level=0.5) == 1e-2
    assert module.end_level({1: late, 2: np.full(1000, np.inf)}) == pytest.approx(late[-1])


def test_blas_threads_limit_respects_the_user_and_the_backend(monkeypatch, capsys):
    from gpulinear.report import blas_threads_limit
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    assert blas_threads_limit("cuda") is None
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert blas_threads_limit("numpy") is None
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    limit = blas_threads_limit("numpy")
    try:
        blas = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert blas and all(i["num_threads"] == 1 for i in blas)
    finally:
        limit.unregister()
    assert "1 thread" in capsys.readouterr().out
