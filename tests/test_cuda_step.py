"""The CUDA step's host glue on the CPU (no GPU): gpulinear.cuda.step.CudaStep with NumPy arrays.

- A RecordingLauncher stands in for the GPU: per step at most 3 launches (2 per step + 1 per
  segment), only the X-pass and the update kernel (no cuBLAS/cuSOLVER, no CuPy call at all inside
  the step: its array module is replaced by one that raises on any use), and every array handed
  to a kernel has the dtype, shape and strides that kernel expects.
- Twin launchers run the whole engine through CudaStep on the CPU: the X-pass by its NumPy twin,
  the update by its NumPy twin (here) or by the real Numba kernel under the CUDA simulator
  (tests marked `sim`), against gl.train(backend="numpy").
"""
import os

import numpy as np
import pytest

import gpulinear as gl
from gpulinear import engine
from gpulinear.cuda.launch import RecordingLauncher
from gpulinear.cuda.step import CudaStep
from gpulinear.cuda.update import update_twin
from gpulinear.cuda.xpass import xpass_twin
from gpulinear.plan import record_steps, segment_ends

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def problem(k=1, m=29, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d)) / np.sqrt(d)
    Y = X @ rng.normal(size=(d, k)) + 0.1 * rng.normal(size=(m, k))
    return X, Y


def mixed(k):
    return (gl.grid(depth=[1, 3, 8], width=[1, 7], lr=[1e-3, 3e-2], optimizer=["gd", "adam"],
                    init="identity", init_scale=0.1, seed=2)
            + gl.grid(depth=[2, 3], lr=1e-2, parameterization="e2e", init="balanced", seed=3)
            + [gl.Config(depth=2, width=(5,), lr=2e-2, optimizer="rmsprop", loss="l2", seed=4)]
            + [gl.Config(depth=1, lr=1e4, optimizer="momentum", seed=5)])       # diverges


def c_contiguous(info):
    """Whether an ArgInfo's strides are those of a C-contiguous array (size-1 axes aside)."""
    want = np.dtype(info.dtype).itemsize
    for n, stride in zip(info.shape[::-1], info.strides[::-1]):
        if n > 1 and stride != want:
            return False
        want *= n
    return True


class Forbidden:
    """An array module that refuses every use: the step must only launch kernels."""
    def __getattr__(self, name):
        raise AssertionError(f"the step touched the array module ({name}) between launches")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("k", [1, 3])
def test_launches_per_step_and_argument_layouts(k, dtype):
    X, Y = problem(k)
    cfgs = mixed(k)
    steps, log_every = 23, 5
    rec = record_steps(steps, log_every)
    launcher = RecordingLauncher()
    step = CudaStep(X, Y, cfgs, gl.Lp(4), np.dtype(dtype), rec, None, np.inf, xp=np,
                    launcher=launcher)
    step.xp = Forbidden()
    plan, C, R = step.plan, len(cfgs), len(cfgs) * k
    ends = segment_ends(0, steps, log_every)
    for i, end in enumerate(ends):
        before, t0 = len(launcher.launches), step.t
        step.advance_to(end, steps)
        new = launcher.launches[before:]
        n_eval = end - t0 + (0 if i else 1)                    # steps evaluated in this segment
        assert len(new) == 2 * n_eval + (1 if i else 0)         # + the pending update
        assert len(new) <= 3 * n_eval
        names = [launch.name for launch in new]
        assert set(names) == {"xpass", "update"} and names[-1] == "update"
        assert names.count("xpass") == n_eval
    expect_x = {0: ((R, plan.ldw), dtype), 2: ((plan.m, plan.ldx), dtype), 4: ((k, plan.m), dtype),
                5: ((R,), dtype), 6: ((plan.splits, R, plan.ldg), dtype),
                8: ((plan.splits, R), dtype), 14: ((1,), "int64")}
    first_x = next(launch for launch in launcher.launches if launch.name == "xpass")
    assert first_x.grid == plan.grid and first_x.block == plan.block
    for pos, (shape, dt) in expect_x.items():
        a = first_x.args[pos]
        assert a.kind == "array" and a.shape == shape and a.dtype == dt, (pos, a)
        assert c_contiguous(a), (pos, a)
    upd = next(launch for launch in launcher.launches if launch.name == "update")
    from gpulinear.cuda.update import CONFIGS_PER_BLOCK
    assert upd.grid == (-(-C // CONFIGS_PER_BLOCK),) and upd.block == (32 * CONFIGS_PER_BLOCK,)
    packed_types = {"theta": dtype, "state": dtype, "hyper": dtype, "work": dtype, "p": dtype,
                    "target": dtype, "log": dtype, "count": "int64", "opt": "int32",
                    "e2e": "int32", "depth": "int32", "dims": "int32", "poff": "int64",
                    "loff": "int64", "soff": "int64", "woff": "int64", "alive": "int32",
                    "diverged_at": "int64", "reached_at": "int64"}
    order = ("Gpart", "Lpart", "W", "theta", "state", "count", "hyper", "opt", "e2e", "depth",
             "dims", "poff", "loff", "soff", "woff", "work", "p", "alive", "diverged_at",
             "reached_at", "target", "log", "clock")
    shapes = {"Gpart": (plan.splits, R, plan.ldg), "Lpart": (plan.splits, R), "W": (R, plan.ldw),
              "clock": (1,), "log": (C, len(rec))}
    for name, a in zip(order, upd.args):
        assert a.kind == "array" and c_contiguous(a), (name, a)
        assert a.dtype == packed_types.get(name, "int64" if name == "clock" else dtype), (name, a)
        if name in shapes:
            assert a.shape == shapes[name], (name, a)
        elif name not in ("theta", "state", "work", "dims", "loff", "hyper"):
            assert a.shape == (C,), (name, a)
    scalars = upd.args[len(order):]
    assert [s.kind for s in scalars] == ["scalar"] * 8
    assert [s.value for s in scalars[:6]] == [plan.splits, plan.m, k, plan.d, steps, log_every]


class TwinLauncher:
    """Runs the X-pass by its NumPy twin and the update by its twin (or, under the CUDA
    simulator, by the real Numba kernel) on NumPy arrays, in place."""
    runs_kernels = False

    def __init__(self, numba_kernel=False):
        self.numba_kernel = numba_kernel
        self.calls = 0

    def raw(self, name, kernel, grid, block, args, shared_mem=0):
        assert name == "xpass"
        (W, ldw, X, ldx, Yt, prow, Gpart, ldg, Lpart, R, m, d, k, mps, clock) = args
        G, L = xpass_twin(W, X, Yt, prow, Gpart.shape[0], int(mps), int(d), int(k))
        Gpart[:, :, :int(d)] = G
        Lpart[...] = L
        clock[0] += 1
        self.calls += 1

    def numba(self, name, kernel, grid, block, args, shared_mem=0):
        assert name == "update"
        self.calls += 1
        if self.numba_kernel:
            from gpulinear.cuda.update import kernel as update_kernel
            update_kernel()[grid, block, 0, shared_mem](*args)
            return
        from gpulinear.cuda.layout import Packed
        Gpart, Lpart, W = args[:3]
        dev = Packed(*[None] * len(Packed._fields))._replace(**dict(zip(
            ("theta", "state", "count", "hyper", "opt", "e2e", "depth", "dims", "poff", "loff",
             "soff", "woff", "work", "p", "alive", "diverged_at", "reached_at", "target", "log"),
            args[3:22])))
        clock = args[22]
        S, m, k, d, steps, log_every, limit, do_update = args[23:]
        new, W_new = update_twin(dev._replace(psize=np.diff(np.append(dev.poff, dev.theta.size))),
                                 Gpart, Lpart, W, clock, S, m, k, d, steps, log_every, limit,
                                 bool(do_update))
        for f in ("theta", "state", "count", "work", "alive", "diverged_at", "reached_at", "log"):
            getattr(dev, f)[...] = getattr(new, f)
        W[...] = W_new


def train_through_cuda_step(monkeypatch, launcher, X, Y, cfgs, **kw):
    """gl.train(backend="cuda") with the fused CUDA step on NumPy arrays and `launcher`."""
    made = []

    def new_cuda_step(X64, Y64, configs, loss, dt, rec, targets, limit):
        made.append(CudaStep(X64, Y64, configs, loss, dt, rec, targets, limit, xp=np,
                             launcher=launcher))
        return made[-1]

    monkeypatch.setattr(engine, "resolve_backend", lambda backend: "cuda")
    monkeypatch.setattr(engine, "_device_chunks", lambda configs, *a: [slice(0, len(configs))])
    monkeypatch.setattr(engine, "_new_cuda_step", new_cuda_step)
    res = gl.train(X, Y, cfgs, backend="cuda", fused=True, **kw)
    assert res.meta["step"].startswith("cuda-fused") and made
    return res


def assert_same_run(got, ref, rtol):
    np.testing.assert_array_equal(got.steps, ref.steps)
    np.testing.assert_array_equal(got.diverged_at, ref.diverged_at)
    ok = ~ref.diverged
    np.testing.assert_allclose(got.loss[ok], ref.loss[ok], rtol=rtol, atol=0)
    np.testing.assert_allclose(got.end_to_end[ok], ref.end_to_end[ok], rtol=rtol, atol=1e-14)
    if ref.steps_to_target is not None:
        np.testing.assert_array_equal(got.steps_to_target, ref.steps_to_target)


@pytest.mark.parametrize("k", [1, 3])
def test_whole_engine_through_the_cuda_step_equals_numpy(monkeypatch, k, tmp_path):
    X, Y = problem(k)
    cfgs = mixed(k)
    kw = dict(loss="l4", steps=40, log_every=7, target=0.3, diverge_above=1e6)
    ref = gl.train(X, Y, cfgs, backend="numpy", **kw)
    assert ref.diverged.any() and not ref.diverged.all()
    got = train_through_cuda_step(monkeypatch, TwinLauncher(), X, Y, cfgs, **kw)
    assert_same_run(got, ref, rtol=1e-12)
    # stop_at_target ends at the same look-in, with the same (not yet updated) weights
    kw.update(target=1e9, stop_at_target=True)
    ref = gl.train(X, Y, cfgs, backend="numpy", **kw)
    got = train_through_cuda_step(monkeypatch, TwinLauncher(), X, Y, cfgs, **kw)
    assert ref.steps[-1] == 0
    assert_same_run(got, ref, rtol=1e-12)


def test_cuda_step_checkpoint_resume_is_exact(monkeypatch, tmp_path):
    X, Y = problem(1)
    cfgs = mixed(1)[:8]
    kw = dict(loss="l4", steps=30, log_every=4)
    whole = train_through_cuda_step(monkeypatch, TwinLauncher(), X, Y, cfgs, **kw)
    ckpt = tmp_path / "run.npz"

    class Dying(TwinLauncher):
        def raw(self, *a, **k):
            if self.calls >= 2 * 17:
                raise KeyboardInterrupt("killed")
            super().raw(*a, **k)

    with pytest.raises(KeyboardInterrupt):
        train_through_cuda_step(monkeypatch, Dying(), X, Y, cfgs, checkpoint=ckpt,
                                checkpoint_every=10, **kw)
    with np.load(ckpt) as z:
        assert int(z["t"]) == 10
    resumed = train_through_cuda_step(monkeypatch, TwinLauncher(), X, Y, cfgs, checkpoint=ckpt,
                                      checkpoint_every=10, resume=True, **kw)
    for name in ("loss", "diverged_at", "end_to_end", "steps"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name), err_msg=name)


@pytest.mark.sim
@pytest.mark.skipif(not SIM, reason="needs NUMBA_ENABLE_CUDASIM=1 (set by .ci/run's sim run)")
def test_engine_through_the_numba_update_kernel_under_the_simulator(monkeypatch):
    X, Y = problem(1, m=17, d=5)
    cfgs = mixed(1)[::3]
    kw = dict(loss="l4", steps=12, log_every=5, diverge_above=1e6)
    ref = gl.train(X, Y, cfgs, backend="numpy", **kw)
    got = train_through_cuda_step(monkeypatch, TwinLauncher(numba_kernel=True), X, Y, cfgs, **kw)
    assert_same_run(got, ref, rtol=1e-11)


class EmuLauncher(TwinLauncher):
    """The X-pass by the real CUDA C++ kernel, compiled with g++ against tests/emu/cuda_emu.h
    (one OS thread per CUDA thread, real barriers) under ThreadSanitizer."""

    def raw(self, name, kernel, grid, block, args, shared_mem=0):
        from types import SimpleNamespace

        from emu import harness
        (W, ldw, X, ldx, Yt, prow, Gpart, ldg, Lpart, R, m, d, k, mps, clock) = args
        plan = SimpleNamespace(dtype=W.dtype.name, R=int(R), m=int(m), d=int(d), k=int(k),
                               m_per_split=int(mps), splits=Gpart.shape[0], ldw=int(ldw),
                               ldx=int(ldx), ldg=int(ldg), grid=grid, block=block,
                               shared_bytes=int(shared_mem))
        from gpulinear.cuda._loader import kernel_source
        exe = harness.build(kernel_source("xpass.cu"), plan.dtype)
        out = harness.run_xpass(exe, plan, W, X, Yt, prow, Gpart, use_clock=True,
                                clock0=int(clock[0]))
        assert out.returncode == 0, out.stderr[-3000:]
        Gpart[...], Lpart[...], clock[0] = out.Gpart, out.Lpart, out.clock
        self.calls += 1


@pytest.mark.emu
def test_engine_through_the_emulated_xpass_kernel(monkeypatch):
    import shutil
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the CUDA emulation needs it")
    X, Y = problem(3, m=19, d=7)
    cfgs = mixed(3)[::4]
    kw = dict(loss="l4", steps=6, log_every=2, diverge_above=1e6)
    ref = gl.train(X, Y, cfgs, backend="numpy", **kw)
    got = train_through_cuda_step(monkeypatch, EmuLauncher(), X, Y, cfgs, **kw)
    assert_same_run(got, ref, rtol=1e-12)


class FakeStream:
    """Stands in for cupy.cuda.Stream: capture records the launches into a 'graph'."""

    def __init__(self, refuse=None):
        self.refuse, self.recording = refuse, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def begin_capture(self):
        if self.refuse:
            raise RuntimeError(self.refuse)
        self.recording = []

    def end_capture(self):
        rec, self.recording = self.recording, None
        return FakeGraph(rec)


class FakeGraph:
    def __init__(self, record):
        self.record = record

    def launch(self, stream):
        for fn in self.record:
            fn(replayed=True)


@pytest.mark.parametrize("refuse", [None, "operation not permitted when stream is capturing"])
def test_graph_replay_captures_once_and_falls_back_with_a_reason(monkeypatch, refuse):
    import sys
    import types
    fake = types.ModuleType("cupy")
    monkeypatch.setitem(sys.modules, "cupy", fake)
    from gpulinear.cuda.graph import Replay
    stream = FakeStream(refuse)
    replay = Replay(stream=stream)
    ran = []

    def kernel(replayed=False):
        ran.append("replayed" if replayed else "eager")

    def launches():
        if stream.recording is not None:
            stream.recording.append(kernel)      # captured, not run
        else:
            kernel()

    for _ in range(4):
        replay.run(("seg", 3), launches)
    if refuse:
        assert ran == ["eager"] * 4 and refuse in replay.fallback_reason and replay.replays == 0
    else:
        assert ran == ["eager", "replayed", "replayed", "replayed"] and replay.replays == 3
        assert replay.fallback_reason is None and list(replay.graphs) == [("seg", 3)]


def test_result_meta_says_what_ran(monkeypatch):
    X, Y = problem(1)
    cfgs = mixed(1)[:4]
    res = train_through_cuda_step(monkeypatch, TwinLauncher(), X, Y, cfgs, loss="l4", steps=5,
                                  log_every=2)
    assert res.meta["step"] == "cuda-fused" and res.meta["example_splits"] >= 1
    # Z and D are never stored: what a config costs is its parameters, state, scratch and rows
    assert 0 < res.meta["device_bytes_per_config"] < 64 * 1024


def test_all_l2_calls_run_the_fused_step_on_the_gram_data(monkeypatch):
    """gram (default, d < m): an all-l2 call steps the fused kernels over the d + 1 rows of
    gpulinear.gram's compressed data; its numbers equal the NumPy data path's."""
    X, Y = problem(k=2, m=40, d=6)
    cfgs = mixed(2)
    kw = dict(loss="l2", steps=40, log_every=7, diverge_above=1e6, target=0.05)
    ref = gl.train(X, Y, cfgs, backend="numpy", gram=False, **kw)
    assert ref.diverged.any() and not ref.diverged.all()
    got = train_through_cuda_step(monkeypatch, TwinLauncher(), X, Y, cfgs, **kw)
    assert got.meta["step"] == "cuda-fused+gram" and got.meta["gram_rows"] == 7
    assert_same_run(got, ref, rtol=1e-10)
    plain = train_through_cuda_step(monkeypatch, TwinLauncher(), X, Y, cfgs, gram=False, **kw)
    assert plain.meta["step"] == "cuda-fused" and "gram_rows" not in plain.meta
    assert_same_run(plain, ref, rtol=1e-12)


class RecordingReplay:
    """Stands in for gpulinear.cuda.graph.Replay on the CPU: runs every piece (so the
    RecordingLauncher sees the launches in order) and records, per graph key, how many launches
    the piece held and how often it ran."""
    enabled, fallback_reason = True, None

    def __init__(self, launcher):
        self.launcher, self.nodes, self.runs, self.replays = launcher, {}, {}, 0

    def run(self, key, launches):
        before = len(self.launcher.launches)
        launches()
        n = len(self.launcher.launches) - before
        assert self.nodes.setdefault(key, n) == n, key        # a key is one fixed launch sequence
        self.replays += key in self.runs
        self.runs[key] = self.runs.get(key, 0) + 1


def test_graphs_stay_small_whatever_log_every():
    """A segment of n steps is replayed as a fixed GRAPH_STEPS-step graph (n - 1) // K times,
    one remainder piece and the last step, in the flat launch order (lead update, then X-pass /
    update pairs, the last update evaluate-only): the graphs' sizes do not grow with log_every."""
    from gpulinear.cuda.step import GRAPH_STEPS as K
    X, Y = problem(1)
    cfgs = mixed(1)[:3]
    steps = 1203
    biggest = {}
    for log_every in (3, 2 * K, 1000):
        launcher = RecordingLauncher()
        replay = RecordingReplay(launcher)
        step = CudaStep(X, Y, cfgs, gl.Lp(4), np.dtype("float32"),
                        record_steps(steps, log_every), None, np.inf, xp=np, launcher=launcher,
                        replay=replay)
        step.xp = Forbidden()
        ends = segment_ends(0, steps, log_every)
        for end in ends:
            step.advance_to(end, steps)
        biggest[log_every] = max(replay.nodes.values())
        assert set(replay.nodes) <= {("lead",), ("last",)} | {("steps", r)
                                                               for r in range(1, K + 1)}
        assert len(replay.nodes) <= 5              # lead, K steps, <= 2 remainders, last
        if log_every >= 2 * K:
            assert replay.runs[("steps", K)] >= (log_every - 1) // K
        # the flat order: per segment [update(1)], (xpass, update(1)) x (n - 1), xpass, update(0)
        names = [(launch.name, launch.args[-1].value if launch.name == "update" else None)
                 for launch in launcher.launches]
        want, t = [], 0
        for i, end in enumerate(ends):
            n = end - t + (0 if i else 1)
            want += ([("update", 1)] if i else []) + [("xpass", None), ("update", 1)] * (n - 1) \
                + [("xpass", None), ("update", 0)]
            t = end
        assert names == want, log_every
    assert biggest[1000] == biggest[2 * K] == 2 * K                # K steps, 2 launches each
