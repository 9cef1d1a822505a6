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


@pytest.fixture
def csv(tmp_path):
    X, y = gl.datasets.synthetic_regression(m=50, d=4, seed=2)
    path = tmp_path / "data.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", fmt="%.17g")
    return path


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
    child = subprocess.Popen([sys.executable, "-m", "gpulinear.cli", *argv], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
