"""`gpulinear info` and `gpulinear train` (flags and a TOML sweep file) end to end."""
import json

import numpy as np
import pytest

import gpulinear as gl
from gpulinear.cli import main


def test_info_names_the_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "gpulinear" in out and "numpy" in out and "CUDA" in out


def test_train_with_flags_writes_results_table_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--depth", "1", "2", "--lr", "1e-3", "5e-3", "--loss", "l4",
                 "--steps", "30", "--log-every", "10", "--backend", "numpy", "--out", str(out),
                 "--no-progress"]) == 0
    res = gl.Result.load(out / "result")
    assert [(c.depth, c.lr) for c in res.configs] == [(1, 1e-3), (1, 5e-3), (2, 1e-3), (2, 5e-3)]
    np.testing.assert_array_equal(res.steps, [0, 10, 20, 30])
    assert (out / "table.csv").read_text().count("\n") == 5
    assert (out / "loss.png").stat().st_size > 5000
    assert "config-steps/s" in capsys.readouterr().out
    X, y = gl.datasets.ethanol()
    direct = gl.train(X, y, res.configs, loss="l4", steps=30, log_every=10, backend="numpy")
    np.testing.assert_array_equal(res.loss, direct.loss)


def test_train_with_a_toml_sweep(tmp_path):
    pytest.importorskip("tomllib", reason="TOML sweeps need Python >= 3.11 (tomllib)")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[grid]\ndepth = 3\nwidth = [[4, 2], 5]\nlr = [1e-3]\noptimizer = "adam"\n'
                     '[train]\nloss = "l2"\nsteps = 12\nlog_every = 4\nbackend = "numpy"\n'
                     'preprocess = "maxabs"\n')
    out = tmp_path / "run"
    assert main(["train", "--sweep", str(sweep), "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert [c["width"] for c in doc["configs"]] == [[4, 2], 5]
    assert all(c["depth"] == 3 and c["optimizer"] == "adam" for c in doc["configs"])
    assert doc["meta"]["preprocess"] == "maxabs" and doc["meta"]["loss"] == "l2"


def test_train_rejects_bad_flags(tmp_path):
    with pytest.raises(SystemExit, match="lr must be"):
        main(["train", "--lr", "0", "--steps", "1", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--preprocess: unknown"):
        main(["train", "--preprocess", "none", "--steps", "1", "--out", str(tmp_path)])


def test_gram_flag_and_sweep_key_reach_train(tmp_path):
    base = ["train", "--depth", "2", "--lr", "1e-3", "--loss", "l2", "--steps", "4",
            "--backend", "numpy", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--gram", "off", "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / n / "result.json").read_text())["meta"] for n in "ab")
    assert a["step"] == "array+gram" and b["step"] == "array"
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('[grid]\ndepth = 1\nlr = [1e-3]\n[train]\nloss = "l2"\nsteps = 3\n'
                     'backend = "numpy"\ngram = false\n')
    assert main(["train", "--sweep", str(sweep), "--out", str(tmp_path / "c"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "c" / "result.json").read_text())["meta"]["step"] == "array"
    sweep.write_text('[grid]\ndepth = 1\nlr = [1e-3]\n[train]\ngram = "yes"\n')
    with pytest.raises(SystemExit, match="--gram"):
        main(["train", "--sweep", str(sweep), "--out", str(tmp_path / "d")])
