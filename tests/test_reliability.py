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
from gpulinear.interrupt import TrainingInterrupted

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


def _rewrite_npz(path, change):
    """Rewrite the .npz at `path` with change(arrays) applied (what an editor by hand does)."""
    with np.load(path) as z:
        arrays = dict(z)
    change(arrays)
    np.savez(path, **arrays)


def test_a_config_deleted_from_the_saved_document_is_refused(tmp_path):
    _small_result(3).save(tmp_path / "r")

    def drop_config(arrays):
        doc = json.loads(arrays["document"].tobytes())
        del doc["configs"][1]
        arrays["document"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    _rewrite_npz(tmp_path / "r.npz", drop_config)
    with pytest.raises(ValueError, match="r.npz was changed after saving"):
        gl.Result.load(tmp_path / "r")


def _legacy_save(res, base):
    """A Result as gpulinear <= 0.1.0 wrote it: arrays in base.npz, configs and meta in
    base.json, the pair sharing a content hash (format 2)."""
    from gpulinear.result import _content_hash
    arrays = {"steps": res.steps, "loss": res.loss, "diverged_at": res.diverged_at,
              "end_to_end": res.end_to_end}
    configs = [c.to_dict() for c in res.configs]
    digest = _content_hash(arrays, configs, res.meta)
    base.with_name(base.name + ".json").write_text(json.dumps(
        {"format": "gpulinear.Result/2", "content_hash": digest, "configs": configs,
         "meta": res.meta}))
    np.savez(base.with_name(base.name + ".npz"), content_hash=np.array(digest), **arrays)


def test_a_legacy_pair_from_two_saves_is_refused(tmp_path):
    _legacy_save(_small_result(1), tmp_path / "a")
    _legacy_save(_small_result(3), tmp_path / "b")
    _assert_same(gl.Result.load(tmp_path / "a"), _small_result(1))     # the old format loads
    os.replace(tmp_path / "b.npz", tmp_path / "a.npz")     # a reader between the two renames
    with pytest.raises(ValueError, match="different saves"):
        gl.Result.load(tmp_path / "a")


def test_a_json_claiming_the_old_format_does_not_switch_the_check_off(tmp_path):
    """Another run's json, its "format" set to the version without a hash, beside this run's
    npz (which carries a hash): refused, not loaded as that run's configs with these numbers."""
    _legacy_save(_small_result(3), tmp_path / "a")
    doc = json.loads((tmp_path / "a.json").read_text())
    doc["format"] = "gpulinear.Result/1"
    doc["configs"] = [dict(c, lr=c["lr"] * 10) for c in doc["configs"]]
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="a.npz (and a.json come from different saves|was changed)"):
        gl.Result.load(tmp_path / "a")


@pytest.mark.parametrize("damage", [
    lambda a: a.pop("loss"),
    lambda a: a.__setitem__("document", np.frombuffer(b"[1, 2]", np.uint8)),
    lambda a: a.__setitem__("document", np.frombuffer(b"\xff\xfe", np.uint8)),
    lambda a: a.__setitem__("extra", np.ones(2)),
    lambda a: a.__setitem__("document", np.frombuffer(json.dumps(
        {"format": "gpulinear.Result/3", "configs": [{"depth": 1, "nonsense": 2}], "meta": {},
         "content_hash": str(a["content_hash"])}).encode(), np.uint8)),
])
def test_every_damaged_result_is_one_value_error_naming_the_file(tmp_path, damage):
    _small_result(2).save(tmp_path / "r")
    _rewrite_npz(tmp_path / "r.npz", damage)
    with pytest.raises(ValueError, match="r.npz"):
        gl.Result.load(tmp_path / "r")


@pytest.mark.parametrize("edit", [lambda d: d.pop("meta"), lambda d: d.pop("configs"),
                                  lambda d: d.__setitem__("configs", [[1, 2]]),
                                  lambda d: d.__setitem__("configs", 3)])
def test_a_damaged_legacy_json_is_one_value_error_naming_the_file(tmp_path, edit):
    _legacy_save(_small_result(2), tmp_path / "a")
    doc = json.loads((tmp_path / "a.json").read_text())
    edit(doc)
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="a.(json|npz)"):
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
    before = signal.getsignal(signal.SIGINT)   # SIG_IGN when the suite runs in the background
    if before is signal.SIG_IGN:               # a real Ctrl-C needs a handler to be seen
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_case(tmp_path, monkeypatch)
    finally:
        signal.signal(signal.SIGINT, before)


def _ctrl_c_case(tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGINT)
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
    assert signal.getsignal(signal.SIGINT) is before      # restored to what it was


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


# -- issue 18: chunked grids, numbers that are not numbers, isolation -----------------------------

def _two_chunks(monkeypatch, steps):
    from gpulinear import memory
    per, shared = memory.grid_bytes(CFGS, 1, 4, 50, np.float64, memory.n_records(steps, 10))
    monkeypatch.setattr(memory, "available_host_bytes", lambda: int((2 * per + shared) / 0.8) + 1)


def _sigint_in_second_chunk(monkeypatch, at):
    seen = []
    real = step.ArrayStep._evaluate

    def evaluate(self, t):
        if t == at:
            seen.append(t)
            if len(seen) == 2:                         # the second chunk's step `at`
                os.kill(os.getpid(), signal.SIGINT)
        return real(self, t)
    monkeypatch.setattr(step.ArrayStep, "_evaluate", evaluate)
    return real


@pytest.fixture
def sigint_handled():
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:                       # the suite may run with SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_an_interrupt_in_a_chunked_grid_keeps_every_finished_chunk(monkeypatch, capsys,
                                                                  sigint_handled):
    whole = gl.train(X, Y, CFGS, steps=60, **KW)
    _two_chunks(monkeypatch, 60)
    _sigint_in_second_chunk(monkeypatch, 33)
    with pytest.raises(TrainingInterrupted) as info:
        gl.train(X, Y, CFGS, steps=60, **KW)
    assert "in 2 chunks" in capsys.readouterr().err
    part = info.value.result
    assert part.configs == CFGS and part.meta["configs_run"] == 4
    np.testing.assert_array_equal(part.steps, whole.steps)
    rtol = 8 * np.finfo(float).eps * 60
    np.testing.assert_allclose(part.loss[:2], whole.loss[:2], rtol=rtol)   # finished: all kept
    np.testing.assert_allclose(part.loss[2:, :5], whole.loss[2:, :5], rtol=rtol)  # to step 40
    assert np.isnan(part.loss[2:, 5:]).all()


def test_a_chunked_grid_checkpoints_every_chunk_and_resumes_exactly(tmp_path, monkeypatch,
                                                                    sigint_handled, capsys):
    ck = tmp_path / "run.npz"
    _two_chunks(monkeypatch, 60)
    uninterrupted = gl.train(X, Y, CFGS, steps=60, **KW)
    real = _sigint_in_second_chunk(monkeypatch, 33)
    with pytest.raises(TrainingInterrupted) as info:
        gl.train(X, Y, CFGS, steps=60, checkpoint=ck, checkpoint_every=20, **KW)
    assert info.value.checkpoint is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.configs-0-1.npz",
                                                          "run.configs-2-3.npz"]
    monkeypatch.setattr(step.ArrayStep, "_evaluate", real)
    from gpulinear import memory
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 2**40)   # more memory now:
    capsys.readouterr()
    resumed = gl.train(X, Y, CFGS, steps=60, checkpoint=ck, resume=True, **KW)   # same chunks
    _assert_same(resumed, uninterrupted)
    err = capsys.readouterr().err
    assert "run.configs-0-1.npz from step 60" in err, err          # finished: not trained again
    assert f"run.configs-2-3.npz from step {info.value.step}" in err, err


@pytest.mark.parametrize("name,value", [("diverge_above", True), ("diverge_above", "1e3"),
                                        ("target", True), ("target", "0.1"),
                                        ("target", [0.1, True, 0.1, 0.1])])
def test_numeric_arguments_refuse_booleans_and_strings_naming_the_argument(name, value):
    with pytest.raises(TypeError, match=f"{name} must be a number|{name} must hold numbers"):
        gl.train(X, Y, CFGS, steps=10, **{name: value}, **KW)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-13), ("float32", 2e-6)])
def test_what_grid_composition_may_change_is_bounded_and_divergence_never_leaks(dtype, rtol):
    """README's isolation guarantee: a config's numbers depend on the rest of the grid only
    through BLAS blocking (float64 ~1e-14, float32 ~1e-6 relative), and a diverged config
    changes nothing at all beyond that."""
    cfgs = gl.grid(depth=[1, 2, 3], lr=[1e-2, 3e-2], init_scale=0.2, seed=[0, 1])
    blow = gl.grid(depth=2, lr=1e4, init_scale=0.2)
    ref = gl.train(X, Y, cfgs, steps=200, dtype=dtype, **KW)
    for grid in (cfgs[:1], cfgs[:5], cfgs + blow, blow + cfgs[:3], cfgs[::-1]):
        res = gl.train(X, Y, grid, steps=200, dtype=dtype, **KW)
        for j, c in enumerate(grid):
            if c in blow:
                assert res.diverged[j]
                continue
            i = cfgs.index(c)
            assert not res.diverged[j]
            np.testing.assert_allclose(res.loss[j], ref.loss[i], rtol=rtol)
            np.testing.assert_allclose(res.end_to_end[j], ref.end_to_end[i], rtol=10 * rtol,
                                       atol=rtol)


def test_resume_without_a_checkpoint_says_it_starts_from_step_0(tmp_path, capsys):
    gl.train(X, Y, CFGS, steps=10, checkpoint=tmp_path / "run.npz", resume=True, **KW)
    assert f"no checkpoint at {tmp_path / 'run.npz'} yet: starting from step 0" in \
        capsys.readouterr().err


def test_a_grid_of_1e5_configs_prints_its_estimate_before_allocating(monkeypatch, capsys):
    from gpulinear import memory
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 4096)     # fails at the plan
    with pytest.raises(MemoryError):
        gl.train(X, Y, [CFGS[1]] * 10**5, steps=1000, **KW)
    err = capsys.readouterr().err
    assert "100,000 configurations x 1,000 steps: ~" in err and "host memory" in err
    assert "TFLOP" in err and "GFLOP/s" in err


def test_a_signal_in_the_last_segment_is_not_swallowed(tmp_path, monkeypatch, sigint_handled):
    """Ctrl-C after the last look-in: the run finishes and its checkpoint is written, then
    TrainingInterrupted carries the whole Result (the caller asked the process to stop)."""
    whole = gl.train(X, Y, CFGS, steps=30, **KW)
    real = step.ArrayStep._evaluate

    def evaluate(self, t):
        if t == 27:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, t)
    monkeypatch.setattr(step.ArrayStep, "_evaluate", evaluate)
    ck = tmp_path / "run.npz"
    with pytest.raises(TrainingInterrupted) as info:
        gl.train(X, Y, CFGS, steps=30, checkpoint=ck, **KW)
    assert info.value.step == 30 and info.value.checkpoint == ck
    _assert_same(info.value.result, whole)
    with np.load(ck) as z:
        assert int(z["t"]) == 30


@pytest.mark.parametrize("field", [dict(weight_decay=True), dict(init_scale=True),
                                   dict(optimizer="adam", beta1="0.9"),
                                   dict(optimizer="adam", eps=True)])
def test_config_numbers_refuse_booleans_and_strings_naming_the_field(field):
    name = [k for k in field if k != "optimizer"][0]
    with pytest.raises(TypeError, match=f"{name} must be a number"):
        gl.Config(**field)
    assert gl.Config(optimizer="rmsprop", centered=True).centered     # a real flag stays one


def test_a_signal_between_chunks_is_answered_at_the_next_look_in(monkeypatch, sigint_handled):
    whole = gl.train(X, Y, CFGS, steps=60, **KW)
    _two_chunks(monkeypatch, 60)
    real, made = engine._make_step, []

    def make_step(*a, **kw):
        made.append(1)
        if len(made) == 2:                             # while the second chunk is set up
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **kw)
    monkeypatch.setattr(engine, "_make_step", make_step)
    with pytest.raises(TrainingInterrupted) as info:
        gl.train(X, Y, CFGS, steps=60, **KW)
    part = info.value.result
    assert info.value.step == 1 and part.meta["configs_run"] == 4    # its first look-in
    np.testing.assert_allclose(part.loss[:2], whole.loss[:2], rtol=8 * np.finfo(float).eps * 60)
