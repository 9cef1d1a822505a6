"""Issue 12, command-line side: one line for every bad input, Ctrl-C, checkpoints, UX.

In-process through gpulinear.cli.main, except Ctrl-C, which needs a child process to signal."""
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import gpulinear as gl
from gpulinear.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _argv(csv, out, *extra):
    return ["train", "--data", str(csv), "--depth", "1", "2", "--lr", "1e-2", "--loss", "l2",
            "--steps", "30", "--log-every", "10", "--backend", "numpy", "--out", str(out),
            "--no-progress", *extra]


def _one_line_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flags,match", [
    (["--steps", "-5"], "--steps: steps must be >= 0"),
    (["--steps", str(10**12)], "--steps: steps=1,000,000,000,000 is more than"),
    (["--backend", "gpu"], "--backend: backend: unknown 'gpu'"),
    (["--loss", "l1"], "--loss: "),
    (["--dtype", "float16"], "--dtype: dtype must be one of"),
    (["--workers", "0"], "--workers: must be >= 1"),
    (["--resume"], "--resume needs --checkpoint"),
])
def test_every_bad_flag_is_one_line_and_exit_2(tmp_path, capsys, csv, flags, match):
    assert match in _one_line_exit_2(capsys, _argv(csv, tmp_path / "out", *flags))


@pytest.mark.parametrize("text,match", [
    ("[grid\ndepth = 2\n", "is not valid TOML"),
    ("grid = 3\n", r"\[grid\] must be a table"),
    ("[train]\nsteps = -1\n", "--steps: steps must be >= 0"),
])
def test_a_malformed_sweep_file_is_one_line_and_exit_2(tmp_path, capsys, csv, text, match):
    pytest.importorskip("tomllib", reason="TOML sweeps need Python >= 3.11 (tomllib)")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(text)
    import re
    err = _one_line_exit_2(capsys, _argv(csv, tmp_path / "out", "--sweep", str(sweep)))
    assert re.search(match, err), err


def test_an_unwritable_out_fails_before_training(tmp_path, capsys, csv):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    start = time.perf_counter()
    err = _one_line_exit_2(capsys, _argv(csv, blocker / "out", "--steps", "100000"))
    assert time.perf_counter() - start < 1.0 and str(blocker) in err


def test_results_that_cannot_be_written_at_the_end_go_to_a_fallback(tmp_path, capsys, csv,
                                                                    monkeypatch):
    out = tmp_path / "out"
    real = gl.train

    def train_then_lose_the_folder(*a, **kw):
        res = real(*a, **kw)
        out.rmdir()
        out.write_text("now a file")
        return res
    monkeypatch.setattr(gl, "train", train_then_lose_the_folder)
    assert main(_argv(csv, out)) == 0
    err = capsys.readouterr().err
    rescued = Path(err.split("wrote it to ")[1].split(" instead")[0])
    assert gl.Result.load(rescued / "result").loss.shape == (2, 4)
    import shutil
    shutil.rmtree(rescued)


def test_train_says_which_configs_diverged(tmp_path, capsys, csv):
    assert main(_argv(csv, tmp_path / "out", "--lr", "1e-2", "1e4")) == 0
    out = capsys.readouterr().out
    # depth 1 at lr 1e4 stays finite (1e246 at step 30) but passes 1e6 x its initial loss
    assert "diverged: 2 of 4 configs: depth 1, lr 10000 (step 1), depth 2, lr 10000 (step" in out


def test_checkpoint_flags_refuse_an_overwrite_and_extend_a_run(tmp_path, capsys, csv):
    ck = tmp_path / "ck.npz"
    assert main(_argv(csv, tmp_path / "a", "--checkpoint", str(ck))) == 0
    with pytest.raises(SystemExit, match="already exists .*--resume.*--overwrite"):
        main(_argv(csv, tmp_path / "b", "--checkpoint", str(ck)))
    capsys.readouterr()
    assert main(_argv(csv, tmp_path / "c", "--checkpoint", str(ck), "--resume", "--steps",
                      "50")) == 0
    assert "from step 30" in capsys.readouterr().err
    assert main(_argv(csv, tmp_path / "d", "--steps", "50")) == 0
    np.testing.assert_array_equal(gl.Result.load(tmp_path / "c" / "result").loss,
                                  gl.Result.load(tmp_path / "d" / "result").loss)


def test_ctrl_c_in_train_writes_checkpoint_and_partial_result_and_exits_130(tmp_path, csv):
    ck, out = tmp_path / "ck.npz", tmp_path / "out"
    argv = _argv(csv, out, "--steps", "2000000", "--log-every", "1000", "--checkpoint", str(ck),
                 "--checkpoint-every", "500")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # SIGINT at its default in the child even when the suite runs with it ignored (`.ci/run &`)
    # (a small exec wrapper: preexec_fn would fork a threaded process)
    reset = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
             "os.execv(sys.argv[1], sys.argv[1:])")
    child = subprocess.Popen([sys.executable, "-c", reset, sys.executable, "-m", "gpulinear.cli",
                              *argv], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while not ck.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)                                  # training is under way
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=20)
    assert child.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("gpulinear train: interrupted at step ")
    assert f"checkpoint {ck}" in lines[0] and "--resume" in lines[0]
    with np.load(ck) as z:
        t = int(z["t"])
    partial = gl.Result.load(out / "result")
    assert t > 0 and partial.steps[-1] <= t and partial.meta["interrupted_at"] == t
    # resume to a few steps past the interruption: equals one run of that length
    steps = str(t + 7)
    assert main(_argv(csv, tmp_path / "r", "--checkpoint", str(ck), "--resume", "--steps", steps,
                      "--log-every", "1000")) == 0
    assert main(_argv(csv, tmp_path / "s", "--steps", steps, "--log-every", "1000")) == 0
    np.testing.assert_array_equal(gl.Result.load(tmp_path / "r" / "result").end_to_end,
                                  gl.Result.load(tmp_path / "s" / "result").end_to_end)


# -- reproduce ----------------------------------------------------------------------------------

def test_reproduce_ends_with_the_verdicts_and_labels_tiny_runs(tmp_path, capsys, monkeypatch):
    from gpulinear import report
    fake = types.SimpleNamespace(TITLE="A fake experiment", run=lambda out, **kw: {
        "claims": [{"claim": "depth accelerates l4", "measured": "2x", "verdict": "holds"}]})
    monkeypatch.setattr(report, "load_experiment", lambda name: fake)
    assert main(["reproduce", "fig2", "--tiny", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "== fig2 (tiny" in out
    tail = out[out.index("Claims and verdicts"):]
    assert "TINY" in tail and "[holds] fig2: depth accelerates l4" in tail


def test_reproduce_list_shows_titles(capsys):
    from gpulinear.report import EXPERIMENTS
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert "Adam (lr 1e-3) on depths 1/2/3, l4 (Fig 4-right)" in out
    assert len(out.strip().splitlines()) == len(EXPERIMENTS)


# -- issue 18: never overwrite silently, resume only what exists, one line for bad input --------

def test_out_holding_another_runs_result_is_refused_unless_overwrite(tmp_path, capsys, csv):
    out = tmp_path / "out"
    assert main(_argv(csv, out)) == 0
    before = (out / "result.npz").read_bytes()
    err = _one_line_exit_2(capsys, _argv(csv, out, "--lr", "3e-2"))
    assert f"--out {out} already holds result.npz" in err and "--overwrite" in err
    assert (out / "result.npz").read_bytes() == before
    assert main(_argv(csv, out, "--lr", "3e-2", "--overwrite")) == 0
    assert gl.Result.load(out / "result").configs[0].lr == 3e-2


def test_a_checkpoint_that_is_a_result_file_is_refused(tmp_path, capsys, csv):
    out = tmp_path / "out"
    err = _one_line_exit_2(capsys, _argv(csv, out, "--checkpoint", str(out / "result.npz")))
    assert "--checkpoint" in err and "result.npz that train writes" in err


def test_resume_needs_the_checkpoint_and_resume_or_start_starts_it(tmp_path, capsys, csv):
    ck, out = tmp_path / "ck.npz", tmp_path / "out"
    err = _one_line_exit_2(capsys, _argv(csv, out, "--checkpoint", str(ck), "--resume"))
    assert f"{ck} does not exist" in err and "--resume-or-start" in err
    assert main(_argv(csv, out, "--checkpoint", str(ck), "--resume-or-start")) == 0
    assert ck.exists()
    # the same command again (a requeued job): continues the checkpoint, into its own --out
    assert main(_argv(csv, out, "--checkpoint", str(ck), "--resume-or-start", "--steps",
                      "40")) == 0
    assert "from step 30" in capsys.readouterr().err
    assert gl.Result.load(out / "result").steps[-1] == 40


def test_a_plot_that_cannot_be_written_is_a_warning_after_the_results(tmp_path, capsys, csv,
                                                                      monkeypatch):
    def no_space(*a, **kw):
        raise OSError(122, "Disk quota exceeded")
    monkeypatch.setattr(gl.Result, "plot", no_space)
    assert main(_argv(csv, tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "loss.png not written" in err and "quota" in err
    assert gl.Result.load(tmp_path / "out" / "result").loss.shape == (2, 4)


@pytest.mark.parametrize("text,match", [
    ('[train]\ndiverge_above = "1e3"\n', "diverge_above must be a number"),
    ("[train]\ndiverge_above = true\n", "diverge_above must be a number"),
    ("[train]\ntarget = [0.1, 0.2, 0.3]\n", "one value per config"),
])
def test_bad_numbers_in_a_sweep_file_are_one_line_and_exit_2(tmp_path, capsys, csv, text, match):
    pytest.importorskip("tomllib", reason="TOML sweeps need Python >= 3.11 (tomllib)")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(text)
    assert match in _one_line_exit_2(capsys, _argv(csv, tmp_path / "out", "--sweep", str(sweep)))


def test_nan_in_the_data_is_one_line_and_exit_2(tmp_path, capsys, csv):
    lines = csv.read_text().splitlines()
    lines[3] = "nan," + lines[3].split(",", 1)[1]
    csv.write_text("\n".join(lines) + "\n")
    err = _one_line_exit_2(capsys, _argv(csv, tmp_path / "out"))
    assert f"--data {csv}" in err


def test_a_held_lock_is_refused_with_the_way_to_take_it_over(tmp_path, capsys, csv):
    from gpulinear.checkpoint import CheckpointLock
    ck = tmp_path / "ck.npz"
    held = CheckpointLock(ck)              # e.g. a job on a machine that was lost
    with pytest.raises(SystemExit, match=f"in use by process {os.getpid()} .*--break-lock"):
        main(_argv(csv, tmp_path / "a", "--checkpoint", str(ck)))
    assert main(_argv(csv, tmp_path / "b", "--checkpoint", str(ck), "--break-lock")) == 0
    assert "removed the lock" in capsys.readouterr().err and ck.exists()
    held.release()                         # the old holder's release leaves others' locks alone


def test_a_second_signal_while_results_are_written_is_one_line_not_a_traceback(
        tmp_path, capsys, csv, monkeypatch):
    from gpulinear import cli
    from gpulinear.interrupt import Insisted

    def insisted(*a, **kw):
        raise Insisted(signal.SIGTERM)
    monkeypatch.setattr(cli, "_save_outputs", insisted)
    assert main(_argv(csv, tmp_path / "out")) == 143
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "interrupted by SIGTERM" in err
