"""distributed.train on a LocalCluster of 2 worker processes on 127.0.0.1: merged results equal
single-process train(), a killed worker and an interrupted run cost nothing, failures are clear.

One cluster for the module (worker start-up is slow on a small machine); every test is bounded
by SIGALRM and every wait is a bounded poll.
"""
import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import gpulinear as gl
from gpulinear import distributed as gd

pytest.importorskip("distributed", reason="needs Dask: pip install 'gpulinear[distributed]'")

TEST_LIMIT_S = 120
EPS = np.finfo(np.float64).eps
# Shards vs the whole grid: a GEMM row's rounding may depend on the GEMM's row count (OpenBLAS:
# the lone row of an odd count, and one-row gemv). Measured: bit-exact with plan_shards' even
# shards on OpenBLAS 0.3.31 Haswell; 7.6e-15 max relative difference after 200 steps with odd
# shards. Other BLAS kernels may differ at that level: 1e4 eps = 2.2e-12 leaves a 300x margin.
RTOL = 1e4 * EPS

X, Y = gl.datasets.synthetic_regression(m=60, d=5, seed=1)
CFGS = (gl.grid(depth=[1, 2, 3], lr=[1e-2, 3e-2], optimizer=["gd", "adam"], init_scale=0.2)
        + gl.grid(depth=2, lr=[1e-2, 5e-2], init_scale=0.2, parameterization="e2e"))   # 14
KW = dict(loss="l4", steps=200, log_every=10, backend="numpy", target=0.05)
# long enough to be killed or interrupted mid-shard: 2 shards of 2 configs, 8000 steps each
SLOW_CFGS = gl.grid(depth=[2, 3], lr=[1e-2, 3e-2], optimizer="adam", init_scale=0.2)
SLOW_KW = dict(loss="l4", steps=8000, log_every=500, backend="numpy")
SLOW_EVERY = 200


@contextlib.contextmanager
def _time_limit(seconds):
    def on_alarm(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(autouse=True)
def _bounded():
    with _time_limit(TEST_LIMIT_S):
        yield


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster
    with _time_limit(TEST_LIMIT_S):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
        c = Client(cluster, timeout=60)
        c.wait_for_workers(2, timeout=60)
    yield c
    c.close()
    cluster.close(timeout=30)


@functools.cache
def _slow_reference():
    """The SLOW problem, each shard trained alone in this process, uninterrupted."""
    return {tuple(idx): gl.train(X, Y, [SLOW_CFGS[i] for i in idx], **SLOW_KW)
            for idx in gd.plan_shards(SLOW_CFGS, SLOW_KW["loss"], 2)}


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(f"no {what} within {timeout} s")


def _assert_same(res, ref):
    for name in ("steps", "loss", "diverged_at", "end_to_end", "steps_to_target"):
        np.testing.assert_array_equal(getattr(res, name), getattr(ref, name), err_msg=name)
    assert res.configs == ref.configs


def _assert_close(res, ref, rtol):
    for name in ("steps", "diverged_at", "steps_to_target"):
        np.testing.assert_array_equal(getattr(res, name), getattr(ref, name), err_msg=name)
    for name in ("loss", "end_to_end"):
        a, b = getattr(res, name), getattr(ref, name)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=name)
    assert res.configs == ref.configs


def _assert_slow_equals_reference(res):
    for idx, alone in _slow_reference().items():
        _assert_same(res.subset(list(idx)), alone)


def _checkpoint_steps(folder):
    steps = {}
    for path in sorted(folder.glob("shard-*.npz")):
        with np.load(path) as z:
            steps[int(path.name.split("-")[1])] = int(z["t"])
    return steps


# -- without a cluster ------------------------------------------------------------------------
def test_import_gpulinear_does_not_import_dask():
    code = ("import sys, gpulinear, gpulinear.distributed; "
            "sys.exit(any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0


def test_plan_shards_cuts_the_bucket_order_into_even_runs():
    order = [i for b in gl.plan.plan_buckets(CFGS, gl.get_loss("l4")) for i in b]
    for size, sizes in [(4, [4, 4, 4, 2]), (5, [4, 4, 4, 2]), (3, [2] * 7), (13, [12, 2]),
                        (1, [1] * 14), (100, [14])]:
        shards = gd.plan_shards(CFGS, "l4", size)
        assert [len(s) for s in shards] == sizes
        assert [i for s in shards for i in s] == order                      # contiguous, in bucket order
        assert gd.plan_shards(CFGS, "l4", size) == shards      # deterministic
    assert [len(s) for s in gd.plan_shards(CFGS[:13], "l4", 4)] == [4, 4, 5]   # no lone last
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        gd.plan_shards(CFGS, "l4", 0)


def test_merge_results_restores_the_original_order_and_refuses_mismatched_steps():
    whole = gl.train(X, Y, CFGS[:5], **dict(KW, steps=20))
    parts = [[4, 1], [0, 3, 2]]
    _assert_same(gd.merge_results([(p, whole.subset(p)) for p in parts], 5), whole)
    short = gl.train(X, Y, CFGS[:2], **dict(KW, steps=10))
    with pytest.raises(ValueError, match="different steps"):
        gd.merge_results([([0, 1], short), ([2, 3, 4], whole.subset([2, 3, 4]))], 5)
    with pytest.raises(ValueError, match="exactly once"):
        gd.merge_results([([0, 1], whole.subset([0, 1])), ([1, 2], whole.subset([1, 2]))], 5)


def test_unsupported_arguments_fail_before_any_cluster_is_asked():
    # scheduler= points nowhere: these must fail on the arguments, not on the connection
    nowhere = dict(scheduler="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="stop_at_target=True is not supported"):
        gd.train(X, Y, CFGS, stop_at_target=True, **nowhere, **KW)
    with pytest.raises(TypeError, match="use checkpoint_dir="):
        gd.train(X, Y, CFGS, checkpoint="x.npz", **nowhere, **KW)
    with pytest.raises(ValueError, match="at most one of"):
        gd.train(X, Y, CFGS, workers=2, **nowhere, **KW)
    with pytest.raises(ValueError, match="backend: unknown"):
        gd.train(X, Y, CFGS, **nowhere, **dict(KW, backend="tpu"))
    with pytest.raises(ValueError, match="log_every must be >= 1"):
        gd.train(X, Y, CFGS, **nowhere, **dict(KW, log_every=0))


def test_an_unreachable_scheduler_fails_fast_with_a_clear_message():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"could not reach the Dask scheduler at "
                                           r"tcp://127\.0\.0\.1:1 within \d+ s"):
        gd.train(X, Y, CFGS[:2], scheduler="tcp://127.0.0.1:1", **KW)
    assert time.monotonic() - start < 10


# -- on the cluster ---------------------------------------------------------------------------
def test_cluster_result_equals_single_process_train(client):
    res = gd.train(X, Y, CFGS, client=client, shard_size=4, **KW)
    shards = gd.plan_shards(CFGS, "l4", 4)
    assert res.meta["shards"] == len(shards) == 4 and res.meta["resumed"] == {}
    for idx in shards:                       # each shard: exactly gl.train on those configs
        _assert_same(res.subset(idx), gl.train(X, Y, [CFGS[i] for i in idx], **KW))
    _assert_close(res, gl.train(X, Y, CFGS, **KW), RTOL)       # the whole grid in one call
    assert (res.steps_to_target >= 0).any() and not res.diverged.any()


def test_a_worker_killed_mid_shard_costs_nothing(client, tmp_path):
    client.wait_for_workers(2, timeout=60)
    pids = client.run(os.getpid)
    box = {}

    def run():
        try:
            box["res"] = gd.train(X, Y, SLOW_CFGS, client=client, shard_size=2,
                                  checkpoint_dir=tmp_path, checkpoint_every=SLOW_EVERY, **SLOW_KW)
        except BaseException as exc:  # handed to the main thread
            box["exc"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    first = _wait_for(lambda: sorted(tmp_path.glob("shard-*.npz")), 60, "shard checkpoint")[0]
    shard = int(first.name.split("-")[1])
    prefix = f"gpulinear-shard-{shard}-"
    worker = _wait_for(lambda: next((w for w, keys in client.processing().items()
                                     if any(str(k).startswith(prefix) for k in keys)), None),
                       30, f"worker running shard {shard}")
    os.kill(pids[worker], signal.SIGKILL)
    with np.load(first) as z:
        saved = int(z["t"])
    thread.join(TEST_LIMIT_S - 20)
    assert not thread.is_alive(), "distributed.train did not finish after the kill"
    if "exc" in box:
        raise box["exc"]
    res = box["res"]
    assert 0 < saved <= res.meta["resumed"][shard] < SLOW_KW["steps"]   # retried from its file
    _assert_slow_equals_reference(res)


class _Interrupt(Exception):
    """Stands for Ctrl-C (a KeyboardInterrupt escaping a test would stop the whole session)."""


def test_resume_after_an_interrupt_equals_an_uninterrupted_run(client, tmp_path):
    client.wait_for_workers(2, timeout=60)
    pids = client.run(os.getpid)
    armed = [True]

    def on_signal(signum, frame):
        if armed[0]:
            raise _Interrupt()

    def interrupter():      # once every shard has a checkpoint, interrupt the main thread
        with contextlib.suppress(TimeoutError):
            _wait_for(lambda: len(list(tmp_path.glob("shard-*.npz"))) == 2, 60, "checkpoints")
            os.kill(os.getpid(), signal.SIGUSR1)

    old = signal.signal(signal.SIGUSR1, on_signal)
    helper = threading.Thread(target=interrupter, daemon=True)
    helper.start()
    try:
        with pytest.raises(_Interrupt):
            gd.train(X, Y, SLOW_CFGS, client=client, shard_size=2, checkpoint_dir=tmp_path,
                     checkpoint_every=SLOW_EVERY, **SLOW_KW)
    finally:
        armed[0] = False
        helper.join(65)
        signal.signal(signal.SIGUSR1, old)
    # the cancelled shards still run on their workers (Dask cannot stop a running task, and
    # client.restart() waits for them): kill the workers, as in a crash, so that the checkpoints
    # stay where the interrupt left them; the nannies start new ones
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: len(client.nthreads()) == 2 and not set(client.nthreads()) & set(pids),
              60, "two fresh workers")      # nthreads(): the scheduler's list, by address
    saved = _checkpoint_steps(tmp_path)
    assert len(saved) == 2 and any(0 < t < SLOW_KW["steps"] for t in saved.values()), saved
    res = gd.train(X, Y, SLOW_CFGS, client=client, shard_size=2, checkpoint_dir=tmp_path,
                   checkpoint_every=SLOW_EVERY, resume=True, **SLOW_KW)
    assert res.meta["resumed"] == {i: t for i, t in saved.items() if t > 0}
    assert not list(tmp_path.glob("*.tmp*"))
    _assert_slow_equals_reference(res)


def test_a_shard_that_keeps_failing_names_its_configs(client, tmp_path):
    kw = dict(KW, steps=20)
    gd.train(X, Y, CFGS, client=client, shard_size=4, checkpoint_dir=tmp_path, **kw)
    bad = sorted(tmp_path.glob("shard-1-*.npz"))
    assert len(bad) == 1
    bad[0].write_bytes(b"not a checkpoint")              # every attempt of shard 1 now raises
    idx = gd.plan_shards(CFGS, "l4", 4)[1]
    with pytest.raises(RuntimeError, match=rf"shard 1 \(configs \[{', '.join(map(str, idx))}\]: "
                                           r".*failed after 1 retries"):
        gd.train(X, Y, CFGS, client=client, shard_size=4, checkpoint_dir=tmp_path, resume=True,
                 retries=1, **kw)


def test_cli_train_with_a_scheduler(client, tmp_path):
    from gpulinear import cli
    csv = tmp_path / "data.csv"
    np.savetxt(csv, np.column_stack([X, Y]), delimiter=",", fmt="%.17g")
    out = tmp_path / "run"
    argv = ["train", "--data", str(csv), "--depth", "1", "2", "--lr", "0.01", "0.03",
            "--optimizer", "gd", "adam", "--loss", "l2", "--steps", "100", "--log-every", "10",
            "--backend", "numpy", "--out", str(out), "--no-progress"]
    assert cli.main(argv + ["--scheduler", client.scheduler.address]) == 0
    res = gl.Result.load(out / "result")
    assert res.meta["shards"] >= 1
    _assert_close(res, gl.train(X, Y, res.configs, loss="l2", steps=100, log_every=10,
                                backend="numpy"), RTOL)
    with pytest.raises(SystemExit):                   # one of --scheduler / --workers
        cli.main(argv + ["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"])


def test_a_relative_target_is_resolved_on_the_whole_data(client):
    """gl.rel: L* from all of X (not a shard's, nor the two-row dry run's); same as one call."""
    kw = dict(KW, target=gl.rel(0.5))
    res = gd.train(X, Y, CFGS, client=client, shard_size=4, **kw)
    ref = gl.train(X, Y, CFGS, **kw)
    np.testing.assert_array_equal(res.target, ref.target)
    np.testing.assert_array_equal(res.steps_to_target, ref.steps_to_target)
    assert res.meta["optimal_loss"] == ref.meta["optimal_loss"]
