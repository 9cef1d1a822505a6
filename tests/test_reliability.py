"""Issue 12, library side: nothing lost, nothing silently wrong.

Each test is one case of the issue; new modules are imported inside the tests so that each case
fails on its own against the code before the change (see the closing note's table)."""
import json
import os
import signal
import time

import numpy as np
import pytest

import gpulinear as gl
from gpulinear import engine, step

X, Y = gl.datasets.synthetic_regression(m=50, d=4, seed=1)
CFGS = gl.grid(depth=[1, 2], lr=[1e-2, 3e-2], init_scale=0.2)
KW = dict(loss="l2", log_every=10, backend="numpy")


def _small_result(n=3):
    return gl.train(X, Y, CFGS[:n], steps=20, **KW)


def _assert_same(a, b):
    for name in ("steps", "loss", "diverged_at", "end_to_end"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.configs == b.configs


# -- results: atomic pair, checked on load ------------------------------------------------------

def test_a_failed_save_leaves_the_old_pair_loadable(tmp_path):
    old = _small_result(1)
    old.save(tmp_path / "r")
    new = _small_result(3)
    new.meta["bad"] = object()                     # not JSON
    with pytest.raises(TypeError):
        new.save(tmp_path / "r")
    _assert_same(gl.Result.load(tmp_path / "r"), old)   # the old pair, not 3 configs vs 1 row
    assert not list(tmp_path.glob("*.tmp*"))


def test_a_config_deleted_from_the_json_is_refused(tmp_path):
    _small_result(3).save(tmp_path / "r")
    doc = json.loads((tmp_path / "r.json").read_text())
    del doc["configs"][1]
    (tmp_path / "r.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="r.npz"):
        gl.Result.load(tmp_path / "r")


def test_a_pair_from_two_saves_is_refused(tmp_path):
    _small_result(1).save(tmp_path / "a")
    _small_result(3).save(tmp_path / "b")
    os.replace(tmp_path / "b.npz", tmp_path / "a.npz")     # a reader between the two renames
    with pytest.raises(ValueError, match="different saves"):
        gl.Result.load(tmp_path / "a")


def test_result_files_that_are_not_results_are_one_clear_error(tmp_path):
    _small_result(1).save(tmp_path / "r")
    (tmp_path / "t.json").write_text((tmp_path / "r.json").read_text())
    (tmp_path / "t.npz").write_text("steps,loss\n0,1\n")
    with pytest.raises(ValueError, match="t.npz is not a saved gpulinear Result"):
        gl.Result.load(tmp_path / "t")
    data = (tmp_path / "r.npz").read_bytes()
    (tmp_path / "r.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="r.npz is damaged or truncated"):
        gl.Result.load(tmp_path / "r")


# -- finished work is never thrown away ---------------------------------------------------------

def _count_steps(monkeypatch):
    calls = []
    real = step.ArrayStep._evaluate

    def counted(self, t):
        calls.append(t)
        return real(self, t)
    monkeypatch.setattr(step.ArrayStep, "_evaluate", counted)
    return calls


def test_an_unwritable_checkpoint_fails_before_the_first_step(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")   # unwritable even for root
    calls = _count_steps(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(OSError, match=f"checkpoint: cannot write to {blocker}"):
        gl.train(X, Y, CFGS, steps=2000, checkpoint=blocker / "run.npz", **KW)
    assert calls == [] and time.perf_counter() - start < 1.0


def test_a_checkpoint_write_that_fails_at_the_end_keeps_the_result(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    real = step.ArrayStep._evaluate

    def evaluate(self, t):
        if t == 5 and folder.is_dir():             # the folder vanishes while training runs
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
            folder.write_text("now a file")
        return real(self, t)
    monkeypatch.setattr(step.ArrayStep, "_evaluate", evaluate)
    res = gl.train(X, Y, CFGS, steps=30, checkpoint=folder / "run.npz", **KW)
    monkeypatch.setattr(step.ArrayStep, "_evaluate", real)
    _assert_same(res, gl.train(X, Y, CFGS, steps=30, **KW))
    rescued = res.meta["checkpoint_rescued_to"]
    assert "gpulinear-rescued" in rescued and os.path.exists(rescued)
    os.unlink(rescued)


def test_ctrl_c_stops_between_steps_writes_the_checkpoint_and_the_partial_result(
        tmp_path, monkeypatch):
    whole = gl.train(X, Y, CFGS, steps=100, **KW)
    real = step.ArrayStep._evaluate

    def evaluate(self, t):
        if t == 42:
            os.kill(os.getpid(), signal.SIGINT)    # a real Ctrl-C, in the middle of a step
        return real(self, t)
    monkeypatch.setattr(step.ArrayStep, "_evaluate", evaluate)
    ckpt = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt) as info:
        gl.train(X, Y, CFGS, steps=100, checkpoint=ckpt, checkpoint_every=1000, **KW)
    monkeypatch.setattr(step.ArrayStep, "_evaluate", real)
    exc = info.value                               # stopped at the next look-in, record step 50
    assert exc.step == 51 and str(ckpt) in str(exc) and "resume=True" in str(exc)
    np.testing.assert_array_equal(exc.result.steps, [0, 10, 20, 30, 40, 50])
    np.testing.assert_array_equal(exc.result.loss, whole.loss[:, :6])
    resumed = gl.train(X, Y, CFGS, steps=100, checkpoint=ckpt, resume=True, **KW)
    _assert_same(resumed, whole)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- checkpoints are never lost -----------------------------------------------------------------

def test_a_rerun_without_resume_does_not_overwrite_the_checkpoint(tmp_path):
    ckpt = tmp_path / "run.npz"
    gl.train(X, Y, CFGS, steps=30, checkpoint=ckpt, **KW)
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match="already exists .*step 30.*resume=True.*overwrite=True"):
        gl.train(X, Y, CFGS, steps=30, checkpoint=ckpt, **KW)
    with pytest.raises(ValueError, match="already exists .*a different run"):
        gl.train(X, Y, CFGS[:2], steps=30, checkpoint=ckpt, **KW)
    assert ckpt.read_bytes() == before
    gl.train(X, Y, CFGS[:2], steps=30, checkpoint=ckpt, overwrite=True, **KW)
    assert ckpt.read_bytes() != before


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
    from gpulinear.checkpoint import CheckpointLock
    ckpt = tmp_path / "run.npz"
    with CheckpointLock(ckpt):                    # a live process (this one) holds it
        with pytest.raises(RuntimeError, match=f"{ckpt} is in use by process {os.getpid()}"):
            gl.train(X, Y, CFGS, steps=10, checkpoint=ckpt, **KW)
    assert not ckpt.exists()
    import socket
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()                                    # its pid is gone now (and reaped)
    (tmp_path / "run.npz.lock").write_text(f"{socket.gethostname()} {dead.pid}")
    gl.train(X, Y, CFGS, steps=10, checkpoint=ckpt, **KW)
    assert ckpt.exists() and not (tmp_path / "run.npz.lock").exists()


@pytest.mark.parametrize("first", [25, 30])        # 25: a last record off the log_every grid
def test_a_finished_run_extends_to_more_steps_exactly(tmp_path, capsys, first):
    ckpt = tmp_path / "run.npz"
    cfgs = CFGS + gl.grid(depth=2, lr=1e-2, optimizer="adam", init_scale=0.2)
    gl.train(X, Y, cfgs, steps=first, checkpoint=ckpt, **KW)
    longer = gl.train(X, Y, cfgs, steps=45, checkpoint=ckpt, resume=True, **KW)
    assert f"from step {first}" in capsys.readouterr().err
    _assert_same(longer, gl.train(X, Y, cfgs, steps=45, **KW))
    with pytest.raises(ValueError, match="at step 45, beyond steps=40"):
        gl.train(X, Y, cfgs, steps=40, checkpoint=ckpt, resume=True, **KW)


def _flip_last_byte_of(data, member):
    """`data` (a zip file) with the last byte of `member`'s stored data inverted."""
    import io
    import zipfile
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    off = info.header_offset     # local header: 30 bytes, then the name and the extra field
    start = off + 30 + int.from_bytes(data[off + 26:off + 28], "little") \
        + int.from_bytes(data[off + 28:off + 30], "little")
    at = start + info.compress_size - 1
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.mark.parametrize("damage,match", [
    (lambda b: b[:len(b) // 2], "damaged or truncated"),
    (lambda b: _flip_last_byte_of(b, "log.npy"), "damaged"),   # the zip's CRC finds it
    ("edit", "content check fails"),                # rewritten by hand: the CRCs are new
    (lambda b: b"t,loss\n0,1.0\n", "not an .npz file"),
    (None, "not a gpulinear checkpoint"),
])
def test_a_bad_checkpoint_is_one_clear_error(tmp_path, damage, match):
    ckpt = tmp_path / "run.npz"
    gl.train(X, Y, CFGS, steps=10, checkpoint=ckpt, **KW)
    if damage is None:
        np.savez(ckpt, weights=np.ones(3))           # someone else's npz
    elif damage == "edit":
        with np.load(ckpt) as z:
            arrays = dict(z)
        arrays["log"] = arrays["log"] * 0.5
        np.savez(ckpt, **arrays)
    else:
        ckpt.write_bytes(damage(ckpt.read_bytes()))
    with pytest.raises(ValueError, match=f"checkpoint {ckpt} .*{match}") as info:
        gl.train(X, Y, CFGS, steps=10, checkpoint=ckpt, resume=True, **KW)
    assert "allow_pickle" not in str(info.value)


# -- memory on the NumPy backend ----------------------------------------------------------------

def test_a_grid_larger_than_memory_runs_in_chunks(monkeypatch, capsys):
    from gpulinear import memory
    whole = gl.train(X, Y, CFGS, steps=30, **KW)
    per, shared = memory.grid_bytes(CFGS, 1, 4, 50, np.float64, 4)
    monkeypatch.setattr(memory, "available_host_bytes", lambda: int((2 * per + shared) / 0.8) + 1)
    chunked = gl.train(X, Y, CFGS, steps=30, **KW)
    assert "in 2 chunks" in capsys.readouterr().err
    # OpenBLAS rows agree bitwise for even row counts (gpulinear.distributed's note); elsewhere
    # the rows of a GEMM may differ by a few ulps per step: allow 8 eps * steps.
    np.testing.assert_allclose(chunked.loss, whole.loss, rtol=8 * np.finfo(float).eps * 30)
    assert chunked.configs == whole.configs


def test_a_config_that_cannot_fit_is_a_memory_error_with_the_numbers(monkeypatch):
    from gpulinear import memory
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 4096)
    with pytest.raises(MemoryError, match=r"one configuration needs ~.* host memory .*4.0 KiB "
                                          r"is available.*reduce"):
        gl.train(X, Y, CFGS, steps=10, **KW)


@pytest.mark.parametrize("steps,log_every,match", [
    (10**12, 100, "steps=1,000,000,000,000 is more than"),
    (10**12, 10**12, "steps=1,000,000,000,000 is more than"),
    (10**9, 10, "records 100,000,001 losses per config"),
])
def test_absurd_schedules_are_refused_with_a_message(steps, log_every, match):
    with pytest.raises(ValueError, match=match):
        gl.train(X, Y, CFGS, steps=steps, **dict(KW, log_every=log_every))


def test_an_array_for_a_sweep_suggests_a_list():
    with pytest.raises(ValueError, match=r"give gl.grid a list: lr=\[...\] .*tolist"):
        gl.grid(lr=np.array([1e-3, 1e-2]))


def test_progress_shows_an_eta(capsys):
    from gpulinear.progress import StepProgress
    bar = StepProgress(1000, 4, True)            # tqdm: "[elapsed<remaining, rate]"
    bar.update(1)
    time.sleep(0.21)
    bar.update(500)
    bar.close()
    err = capsys.readouterr().err
    assert "config-step/s" in err and "<" in err and "4 configs x 1,000 steps" in err
