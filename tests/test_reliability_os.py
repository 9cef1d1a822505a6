"""Issue 18: nothing lost when the OS intervenes - kill -9, file-size quotas, memory limits,
SIGTERM/SIGHUP, concurrent writers and lock takers.

Each case runs in child processes (the limits and signals must not touch the test process) and
fails against the code before issue 18 (see the closing note).  Timings are randomised with a
fixed seed per case, so a failure reproduces."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import gpulinear as gl

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX processes and signals")

# The two Results every save case writes: A (1 config, 3 records) and B (6 configs, 41 records);
# whatever a reader finds must be one of them, complete.
PROBLEM = textwrap.dedent("""
    import json, os, random, signal, sys, time
    import numpy as np
    import gpulinear as gl
    X, Y = gl.datasets.synthetic_regression(m=30, d=3, seed=1)
    KW = dict(loss="l2", backend="numpy")
    A = gl.train(X, Y, gl.grid(depth=1, lr=1e-2), steps=4, log_every=2, **KW)
    B = gl.train(X, Y, gl.grid(depth=[1, 2, 3], lr=[1e-2, 2e-2]), steps=40, log_every=1, **KW)

    def which(base):
        r = gl.Result.load(base)
        for name, want in (("A", A), ("B", B)):
            if len(r.configs) == len(want.configs) and np.array_equal(r.loss, want.loss) \\
                    and np.array_equal(r.end_to_end, want.end_to_end):
                return name
        return "neither"
""")


def _with_signals(argv, disposition="SIG_DFL"):
    """argv run with SIGINT, SIGTERM and SIGHUP set to `disposition` first (SIG_DFL: at their
    defaults also when the suite itself runs with them ignored, as under `bash .ci/run &` or
    nohup).  A small exec wrapper rather than preexec_fn, which forks a threaded process."""
    reset = ("import os, signal, sys\n"
             "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
             f"    signal.signal(s, signal.{disposition})\n"
             "os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-c", reset, *map(str, argv)]


def _run(script, *args, timeout=60, env=ENV):
    """Run `script` (after PROBLEM) in a child Python; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, "-c", PROBLEM + textwrap.dedent(script),
                           *map(str, args)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _temps(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp")
                  or ".tmp" in p.name)


# -- crash-consistent saves ---------------------------------------------------------------------

KILL_LOOP = """
    base, rounds = sys.argv[1], int(sys.argv[2])
    rng = random.Random(18)
    A.save(base)
    seen, bad = [], []
    for i in range(rounds):
        pid = os.fork()
        if pid == 0:                       # a writer, killed at a random moment of its saves
            try:
                while True:
                    B.save(base)
                    A.save(base)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        try:
            seen.append(which(base))
        except Exception as exc:
            bad.append(f"kill {i}: {type(exc).__name__}: {exc}")
    folder = os.path.dirname(base)
    left = [n for n in os.listdir(folder) if ".tmp" in n]
    A.save(base)                           # the next write removes the killed writes' leftovers
    after = [n for n in os.listdir(folder) if ".tmp" in n]
    print(json.dumps({"seen": seen, "bad": bad, "left": len(left), "after": after}))
"""


def test_kill_9_during_saves_leaves_the_old_or_the_new_result_complete(tmp_path):
    out, _ = _run(KILL_LOOP, tmp_path / "r", 40)
    assert out["bad"] == [], out["bad"][:5]
    assert set(out["seen"]) <= {"A", "B"} and len(out["seen"]) == 40
    assert len(set(out["seen"])) == 2, out["seen"]     # the kills did land mid-sequence
    assert out["after"] == [], out["after"]           # leftovers of killed writes are removed


CONCURRENT = """
    base, seconds = sys.argv[1], float(sys.argv[2])
    A.save(base)
    writers = []
    for res in (A, B, B):
        pid = os.fork()
        if pid == 0:
            try:
                end = time.time() + seconds
                while time.time() < end:
                    res.save(base)
            finally:
                os._exit(0)
        writers.append(pid)
    seen, bad, end = [], [], time.time() + seconds
    while time.time() < end:               # a reader during the saves
        try:
            seen.append(which(base))
        except Exception as exc:
            bad.append(f"{type(exc).__name__}: {exc}")
    status = [os.waitpid(pid, 0)[1] for pid in writers]
    seen.append(which(base))
    print(json.dumps({"seen": seen, "bad": bad, "status": status}))
"""


def test_concurrent_saves_and_a_reader_see_one_whole_result(tmp_path):
    out, _ = _run(CONCURRENT, tmp_path / "r", 1.5)
    assert out["status"] == [0, 0, 0], "a writer failed"
    assert out["bad"] == [], out["bad"][:5]
    assert set(out["seen"]) <= {"A", "B"} and len(out["seen"]) > 10
    assert _temps(tmp_path) == []


FSIZE_SAVE = """
    import resource
    base, limit = sys.argv[1], int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))   # a quota B does not fit in
    try:
        B.save(base)
        err = None
    except OSError as exc:
        err = str(exc)
    print(json.dumps({"err": err}))
"""


def test_a_save_over_a_file_size_quota_keeps_the_old_result_and_names_the_path(tmp_path):
    base = tmp_path / "r"
    X, Y = gl.datasets.synthetic_regression(m=30, d=3, seed=1)
    a = gl.train(X, Y, gl.grid(depth=1, lr=1e-2), steps=4, log_every=2, loss="l2",
                 backend="numpy")
    a.save(base)
    limit = max(base.with_suffix(".npz").stat().st_size, base.with_suffix(".json").stat().st_size)
    out, _ = _run(FSIZE_SAVE, base, limit + 512)
    assert out["err"] is not None and "r.npz" in out["err"] and "too large" in out["err"], out
    back = gl.Result.load(base)                        # the old result, whole
    np.testing.assert_array_equal(back.loss, a.loss)
    assert _temps(tmp_path) == []


FSIZE_TRAIN = """
    import resource
    ck = sys.argv[1]
    whole = gl.train(X, Y, gl.grid(depth=[1, 2], lr=1e-2), steps=30, log_every=10, **KW)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))    # no checkpoint fits, anywhere
    try:
        gl.train(X, Y, gl.grid(depth=[1, 2], lr=1e-2), steps=30, log_every=10, checkpoint=ck,
                 checkpoint_every=10, **KW)
        print(json.dumps({"raised": None}))
    except OSError as exc:
        res = getattr(exc, "result", None)
        print(json.dumps({"raised": str(exc), "same": res is not None
                          and np.array_equal(res.loss, whole.loss)
                          and np.array_equal(res.end_to_end, whole.end_to_end)}))
"""


def test_a_finished_run_whose_every_write_fails_is_returned_in_the_exception(tmp_path):
    env = dict(ENV, TMPDIR=str(tmp_path / "tmp"))     # the fallback folder is under the quota too
    (tmp_path / "tmp").mkdir()
    out, err = _run(FSIZE_TRAIN, tmp_path / "ck" / "run.npz", env=env)
    assert out["raised"] is not None and out["same"], out
    msg = out["raised"]
    assert "run.npz" in msg and "gpulinear-rescued" in msg and "too large" in msg, msg
    assert ".result" in msg
    assert "training goes on" in err                   # the periodic ones said so and went on
    assert not (tmp_path / "ck" / "run.npz.lock").exists()


# -- SIGTERM and SIGHUP like Ctrl-C -------------------------------------------------------------

def _wait_for(path, child, seconds=30):
    deadline = time.time() + seconds
    while not Path(path).exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.02)
    assert Path(path).exists(), child.communicate()[1][-2000:]


LIBRARY_SIGNAL = """
    from gpulinear.interrupt import TrainingInterrupted
    ck = sys.argv[1]
    try:
        gl.train(X, Y, gl.grid(depth=[1, 2], lr=1e-3), steps=10**8, log_every=10**6,
                 checkpoint=ck, checkpoint_every=300, **KW)
    except TrainingInterrupted as exc:
        print(json.dumps({"signum": int(exc.signum), "step": exc.step,
                          "checkpoint": str(exc.checkpoint), "partial": exc.result.loss.shape,
                          "lock": os.path.exists(ck + ".lock"),
                          "handler": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL}))
"""


def test_sigterm_in_gl_train_stops_at_a_look_in_with_checkpoint_and_result(tmp_path):
    ck = tmp_path / "run.npz"
    child = subprocess.Popen(_with_signals([sys.executable, "-c",
                                            PROBLEM + textwrap.dedent(LIBRARY_SIGNAL), ck]),
                             env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    _wait_for(ck, child)
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=30)
    assert child.returncode == 0, stderr[-2000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["signum"] == signal.SIGTERM and out["checkpoint"] == str(ck)
    assert out["step"] % 300 == 0 and out["partial"][0] == 2
    assert not out["lock"] and out["handler"]
    with np.load(ck) as z:
        assert int(z["t"]) == out["step"]


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_in_the_cli_save_everything_and_release_the_lock(tmp_path, csv, sig,
                                                                           status):
    ck, out = tmp_path / "with space" / "ck.npz", tmp_path / "out"
    argv = ["train", "--data", str(csv), "--depth", "1", "2", "--lr", "1e-3", "--loss", "l2",
            "--steps", "100000000", "--log-every", "1000000", "--backend", "numpy", "--out",
            str(out), "--no-progress", "--checkpoint", str(ck), "--checkpoint-every", "300"]
    child = subprocess.Popen(_with_signals([sys.executable, "-m", "gpulinear.cli", *argv]),
                             env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    _wait_for(ck, child)
    child.send_signal(sig)
    _, stderr = child.communicate(timeout=30)
    assert child.returncode == status, stderr
    line = stderr.strip().splitlines()[-1]
    assert f"by {signal.Signals(sig).name}" in line and "Traceback" not in stderr, stderr
    assert not Path(str(ck) + ".lock").exists()
    partial = gl.Result.load(out / "result")
    with np.load(ck) as z:
        assert partial.meta["interrupted_at"] == int(z["t"]) > 0
    # the resume line is shell-quoted: the checkpoint path has a space in it
    import shlex
    again = shlex.split(line.split("resume with: ")[1])
    assert again[again.index("--checkpoint") + 1] == str(ck) and again[-1] == "--resume"
    # and it runs as printed, into the same --out (its partial result is this run's, not
    # another's), here to a few steps past the interruption
    from gpulinear.cli import main
    t = partial.meta["interrupted_at"]
    again[again.index("--steps") + 1] = str(t + 7)
    assert main(again[1:]) == 0
    assert gl.Result.load(out / "result").steps[-1] == t + 7


def test_a_second_signal_stops_at_once_and_writes_nothing(tmp_path, monkeypatch):
    """The first Ctrl-C asks for a stop at the next look-in; a second one inside a step stops
    at once, and the checkpoint is the last periodic one, never the torn state of that step."""
    from gpulinear import step
    X, Y = gl.datasets.synthetic_regression(m=30, d=3, seed=1)
    cfgs = gl.grid(depth=[1, 2], lr=1e-2)
    real = step.ArrayStep._evaluate

    def evaluate(self, t):
        if t == 25:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)       # insisting, inside the same step
        return real(self, t)
    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(step.ArrayStep, "_evaluate", evaluate)
    ck = tmp_path / "run.npz"
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            gl.train(X, Y, cfgs, steps=100, log_every=10, loss="l2", backend="numpy",
                     checkpoint=ck, checkpoint_every=20)
    finally:
        signal.signal(signal.SIGINT, before)
    from gpulinear.interrupt import TrainingInterrupted
    assert not isinstance(info.value, TrainingInterrupted)
    with np.load(ck) as z:
        assert int(z["t"]) == 20                     # the periodic checkpoint stands
    assert not Path(str(ck) + ".lock").exists()


def test_the_ctrl_c_test_passes_when_the_suite_starts_with_sigint_ignored():
    """`bash .ci/run &`, nohup and some CI runners start the suite with SIGINT ignored."""
    test = "tests/test_reliability.py::" \
        "test_ctrl_c_stops_between_steps_writes_the_checkpoint_and_the_partial_result"
    proc = subprocess.run(
        _with_signals([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                      "SIG_IGN"), env=ENV, cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]


IGNORED = """
    signal.signal(signal.SIGHUP, signal.SIG_IGN)          # nohup
    from gpulinear import step
    real = step.ArrayStep._evaluate

    def evaluate(self, t):
        if t == 5:
            os.kill(os.getpid(), signal.SIGHUP)
        return real(self, t)
    step.ArrayStep._evaluate = evaluate
    res = gl.train(X, Y, gl.grid(depth=[1, 2], lr=1e-2), steps=20, log_every=10, **KW)
    print(json.dumps({"steps": res.steps.tolist(),
                      "ignored": signal.getsignal(signal.SIGHUP) == signal.SIG_IGN}))
"""


def test_a_signal_ignored_when_training_starts_stays_ignored():
    out, _ = _run(IGNORED)
    assert out == {"steps": [0, 10, 20], "ignored": True}


# -- locks --------------------------------------------------------------------------------------

LOCK_WORKER = textwrap.dedent("""
    import json, os, random, socket, sys, time
    from gpulinear import checkpoint as ckpt
    path, mode, seconds, seed, dead = sys.argv[1], sys.argv[2], float(sys.argv[3]), \\
        int(sys.argv[4]), int(sys.argv[5])
    ckpt.LOCK_MODE = mode
    rng = random.Random(seed)
    marker = path + ".inside"
    held = refused = twice = died = 0
    end = time.time() + seconds
    while time.time() < end:
        try:
            lock = ckpt.CheckpointLock(path)
        except ckpt.CheckpointLocked:
            refused += 1
            time.sleep(rng.uniform(0, 0.001))
            continue
        held += 1
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
        except FileExistsError:
            twice += 1                             # another process holds it as well
            marker_mine = False
        else:
            marker_mine = True
        time.sleep(rng.uniform(0, 0.002))
        if marker_mine:
            os.unlink(marker)
        if rng.random() < 0.3:
            # die holding it, as kill -9 does: the lock file stays, naming a dead process
            tmp = f"{path}.lock.{os.getpid()}.dying"
            with open(tmp, "w") as fh:
                fh.write(f"{socket.gethostname()} {dead}\\n")
            os.replace(tmp, path + ".lock")
            if getattr(lock, "_fd", None) is not None:
                os.close(lock._fd)
                lock._fd = None
            lock.held = False
            died += 1
        else:
            lock.release()
    print(json.dumps({"held": held, "refused": refused, "twice": twice, "died": died}))
""")


@pytest.mark.parametrize("mode", ["flock", "link"])
def test_concurrent_lock_takers_never_both_hold_it(tmp_path, mode):
    dead = subprocess.Popen(["true"])
    dead.wait()                                       # a pid that no longer runs
    path = tmp_path / "run.npz"
    workers = [subprocess.Popen([sys.executable, "-c", LOCK_WORKER, str(path), mode, "2.0",
                                 str(seed), str(dead.pid)], env=ENV, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for seed in range(3)]
    results = []
    for w in workers:
        stdout, stderr = w.communicate(timeout=60)
        assert w.returncode == 0, stderr[-2000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sum(r["twice"] for r in results) == 0, results
    assert sum(r["died"] for r in results) >= 5, results     # stale takeovers did happen
    assert sum(r["held"] for r in results) >= 20, results


@pytest.mark.parametrize("mode", ["flock", "link"])
def test_release_only_removes_the_holders_own_lock(tmp_path, monkeypatch, mode):
    from gpulinear import checkpoint as ckpt
    monkeypatch.setattr(ckpt, "LOCK_MODE", mode)
    path = tmp_path / "run.npz"
    first = ckpt.CheckpointLock(path)
    assert "pid" not in (ckpt.break_lock(path) or "pid")   # the record: host pid start ...
    second = ckpt.CheckpointLock(path)                       # taken over after --break-lock
    first.release()                                          # must not remove second's lock
    assert second.still_held() and (tmp_path / "run.npz.lock").exists()
    with pytest.raises(ckpt.CheckpointLocked):
        ckpt.CheckpointLock(path)
    second.release()
    assert not (tmp_path / "run.npz.lock").exists()


@pytest.mark.parametrize("mode", ["flock", "link"])
def test_an_empty_or_unreadable_lock_of_a_dead_writer_is_taken_over(tmp_path, monkeypatch, mode):
    from gpulinear import checkpoint as ckpt
    monkeypatch.setattr(ckpt, "LOCK_MODE", mode)
    path = tmp_path / "run.npz"
    for junk in (b"", b"\xff\xfe garbage"):
        lock = tmp_path / "run.npz.lock"
        lock.write_bytes(junk)                        # killed between create and write
        old = time.time() - 2 * ckpt.EMPTY_LOCK_AGE_S
        os.utime(lock, (old, old))
        with ckpt.CheckpointLock(path) as held:
            assert held.held
        assert not lock.exists()


def test_a_lock_of_another_host_says_who_since_when_and_how_to_take_over(tmp_path, monkeypatch):
    from gpulinear import checkpoint as ckpt
    monkeypatch.setattr(ckpt, "LOCK_MODE", "link")
    path = tmp_path / "run.npz"
    (tmp_path / "run.npz.lock").write_text("node17 4242 123456 2026-12-07T03:00:00+0000 ab\n")
    with pytest.raises(ckpt.CheckpointLocked, match=r"process 4242 on node17 \(since "
                                                    r"2026-12-07T03:00:00\+0000\).*--break-lock"):
        ckpt.CheckpointLock(path)
    ckpt.break_lock(path)
    ckpt.CheckpointLock(path).release()


# -- memory as the OS limits it -----------------------------------------------------------------

RLIMIT_AS_TRAIN = """
    import resource
    from gpulinear import memory
    with open("/proc/self/status") as fh:
        vm = [int(l.split()[1]) * 1024 for l in fh if l.startswith("VmSize:")][0]
    room = 150 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (vm + room, resource.RLIM_INFINITY))
    cfgs = gl.grid(depth=3, width=120, lr=1e-4, seed=list(range(1000)))
    per, shared = memory.grid_bytes(cfgs, 1, 3, 30, np.float64, 2)
    assert len(cfgs) * per > 2 * room, "the grid must not fit in the limit"
    res = gl.train(X, Y, cfgs, steps=1, log_every=1, **KW)
    print(json.dumps({"n": len(res.configs), "finite": bool(np.isfinite(res.loss).all())}))
"""


def test_a_grid_under_rlimit_as_runs_in_chunks_instead_of_failing(tmp_path):
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux)")
    out, err = _run(RLIMIT_AS_TRAIN)
    assert out == {"n": 1000, "finite": True}
    assert "chunks" in err


@pytest.mark.parametrize("version", [1, 2])
def test_the_cgroup_limit_minus_usage_bounds_the_memory(tmp_path, version):
    from gpulinear import memory
    proc = tmp_path / "cgroup"
    if version == 2:
        proc.write_text("0::/slurm/job_7/step_0\n")
        leaf = tmp_path / "sys" / "slurm" / "job_7" / "step_0"
        leaf.mkdir(parents=True)
        (leaf / "memory.max").write_text("max\n")
        (leaf.parent / "memory.max").write_text(f"{3 * 2**30}\n")          # --mem=3G
        (leaf.parent / "memory.current").write_text(f"{2**30}\n")
        (tmp_path / "sys" / "memory.max").write_text("max\n")
    else:
        proc.write_text("5:cpu:/\n4:memory:/slurm/uid_0/job_7\n")
        leaf = tmp_path / "sys" / "memory" / "slurm" / "uid_0" / "job_7"
        leaf.mkdir(parents=True)
        (leaf / "memory.limit_in_bytes").write_text(f"{3 * 2**30}\n")
        (leaf / "memory.usage_in_bytes").write_text(f"{2**30}\n")
        (tmp_path / "sys" / "memory" / "memory.limit_in_bytes").write_text(
            "9223372036854771712\n")                                      # v1's "no limit"
    assert memory.cgroup_headroom(proc, tmp_path / "sys") == 2 * 2**30
    assert memory.cgroup_headroom(tmp_path / "missing", tmp_path / "sys") == 2**63


def test_a_stale_lock_taken_over_by_another_process_first_is_not_stolen(tmp_path, monkeypatch):
    """The race of the link-mode takeover, made deterministic: this process judges the lock
    stale, but before it moves the lock aside another taker has already replaced it with its
    own.  The move must notice, put that lock back and refuse."""
    from gpulinear import checkpoint as ckpt
    monkeypatch.setattr(ckpt, "LOCK_MODE", "link")
    path = tmp_path / "run.npz"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "run.npz.lock").write_text(f"{ckpt._host()} {dead.pid}\n")
    real, other = ckpt._owner_gone, []

    def judged_then_overtaken(owner):
        gone = real(owner)
        if not other:                                  # the other taker wins the race
            other.append(None)
            other[0] = ckpt.CheckpointLock(path)
        return gone
    monkeypatch.setattr(ckpt, "_owner_gone", judged_then_overtaken)
    with pytest.raises(ckpt.CheckpointLocked):
        ckpt.CheckpointLock(path)
    assert other[0].still_held()
    other[0].release()


def test_without_hard_links_the_lock_falls_back_to_an_exclusive_create(tmp_path, monkeypatch):
    import errno

    from gpulinear import checkpoint as ckpt
    monkeypatch.setattr(ckpt, "LOCK_MODE", "link")

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(ckpt.os, "link", no_links)
    path = tmp_path / "run.npz"
    with ckpt.CheckpointLock(path) as first:
        assert first.held and str(os.getpid()) in (tmp_path / "run.npz.lock").read_text()
        with pytest.raises(ckpt.CheckpointLocked, match=f"process {os.getpid()}"):
            ckpt.CheckpointLock(path)
    assert not (tmp_path / "run.npz.lock").exists()
