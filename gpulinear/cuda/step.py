"""CudaStep: the whole call's training step as two custom kernels, replayed as CUDA graphs.

Per step, for every config of the call at once (any depths, widths, k, optimizers, deep or e2e;
lp losses):
    1. X-pass  (kernels/xpass.cu, gpulinear.cuda.xpass)    Z = W_e X^T, the lp epilogue and
       G = l'(R) X in one pass over X; writes partial G and loss per example split
    2. update  (Numba-CUDA, gpulinear.cuda.update)         reduce the partials; health/freeze,
       log, steps-to-target; chain product and layer gradients; optimizer or Eq 10/12; new W_e
No cuBLAS/cuSOLVER, no allocation and no host sync inside a step; the step counter lives on the
device (the X-pass increments it), so the launches between two host look-ins (gpulinear.plan.
segment_ends) are captured once into a CUDA graph and replayed (gpulinear.cuda.graph).

Implements the step interface of gpulinear.step (t, advance_to, flush, all_reached,
host_arrays, state_arrays, load_state).  A segment that ends with its last update pending ends
with an evaluate-only update launch; the next segment starts with an update-only launch of that
step (its bookkeeping repeats, idempotently).  So a segment of n steps is 2n launches, plus one,
replayed as a few small graphs (`_pieces`: GRAPH_STEPS steps each, plus a remainder).

Every kernel is compiled and loaded when the step is built (`load_kernels`), before step 1: a
compile, link or driver error (CuPy's CompileException from NVRTC, Numba's NvvmError /
NvvmSupportError / LinkerError / NvrtcError / CudaAPIError, cuda-bindings' and
cuda-pathfinder's errors) is raised there as a KernelLoadError naming the stage, so train()
falls back to the array step (fused=None) or raises it (fused=True) instead of failing at step 1.

`xp` and `launcher` are injectable: tests run this class on the CPU with NumPy arrays and a
RecordingLauncher (the host glue) or twin launchers (the whole step against the NumPy engine).
"""
from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..losses import config_loss
from ..plan import start_weights
from .launch import Launcher
from .layout import end_to_end, pack
from .update import needs_eq10
from .xpass import launch_xpass, padded, plan_xpass


# Steps per replayed CUDA graph: a graph of 2 x 64 kernel nodes, launched (n - 1) // 64 times per
# segment of n steps, plus one graph for the remainder (ESTIMATE: at >= 8 us a step, one graph
# launch (~5-10 us of host time) covers ~0.5 ms of GPU work, so the host stays ahead).
GRAPH_STEPS = 64


class KernelLoadError(RuntimeError):
    """A kernel of the fused step failed to compile, link or load when the step was built."""


class CudaStep:
    kind = "cuda-fused"

    def __init__(self, X64, Y64, configs, loss, dt, rec_steps, targets, limit, xp=None,
                 launcher=None, graphs=True, n_sm=None, replay=None):
        if xp is None:
            import cupy as xp
        self.xp = xp
        m, d = X64.shape
        k = Y64.shape[1]
        C = len(configs)
        self.m, self.d, self.k, self.C, self.dt = m, d, k, C, np.dtype(dt)
        # the update kernel logs at t % log_every == 0 and at t == steps: rec_steps's rule
        self.steps = int(rec_steps[-1])
        self.log_every = int(rec_steps[1]) if len(rec_steps) > 1 else 1
        self.limit = float(limit)
        self.rows_of = np.arange(C)                    # one launch takes every config: no buckets
        losses = [config_loss(c, loss) for c in configs]
        packed = pack(configs, losses, [start_weights(c, d, k) for c in configs], d, k,
                      self.dt, len(rec_steps), targets=targets)
        self.eq10 = needs_eq10(packed, k)              # Eq 10's shared scratch in the update
        if n_sm is None:
            n_sm = _sm_count(xp)
        self.plan = plan = plan_xpass(C * k, m, d, k, self.dt, n_sm=n_sm)
        # device buffers, allocated once
        self.dev = type(packed)(*[xp.asarray(a) for a in packed])
        We0 = end_to_end(packed).reshape(C * k, d)
        self.W = padded(xp.asarray(We0, dtype=self.dt), plan.ldw)           # (R, ldw)
        self.X = padded(xp.asarray(X64, dtype=self.dt), plan.ldx)           # (m, ldx)
        self.Yt = xp.ascontiguousarray(xp.asarray(Y64.T, dtype=self.dt))    # (k, m)
        self.prow = xp.asarray(np.repeat(packed.p, k), dtype=self.dt)       # (R,)
        self.Gpart = xp.zeros((plan.splits, C * k, plan.ldg), dtype=self.dt)
        self.Lpart = xp.zeros((plan.splits, C * k), dtype=self.dt)
        self.clock = xp.full(1, -1, dtype=np.int64)   # the X-pass makes it the step evaluated
        self.launcher = launcher if launcher is not None else Launcher()
        self.replay = None
        if xp is not np:
            from .graph import Replay
            # every launch goes to one non-blocking stream (graph capture needs one); the
            # buffers above were filled on the default stream, which it does not wait for
            self.replay = Replay(enabled=graphs)
            self.launcher.cupy_stream = self.replay.stream
            xp.cuda.Device().synchronize()
        if replay is not None:                         # tests: a stand-in that records pieces
            self.replay = replay
        self.t = 0
        self.evaluated = False
        per_call = self.X.nbytes + self.Yt.nbytes
        self.meta = {"device_bytes_per_config": round(
            (sum(a.nbytes for a in self.dev) + self.W.nbytes + self.prow.nbytes
             + self.Gpart.nbytes + self.Lpart.nbytes) / C), "device_bytes_shared": per_call,
            "xpass_grid": plan.grid, "example_splits": plan.splits}
        if self.launcher.runs_kernels:
            self.load_kernels()
        else:
            self._numba_views = self._make_numba_views()

    def load_kernels(self):
        """Compile and load both kernels now, on this device, for this call's dtype and
        argument types (the launches then reuse them), and launch them once (_trial_launch);
        any error -> KernelLoadError naming the stage and the original error (also chained as
        __cause__)."""
        from .update import load_update_kernel
        from .xpass import load_kernel as load_xpass
        stage = ("the X-pass (kernels/xpass.cu: NVRTC through CuPy's RawModule, module load, "
                 "its dynamic shared memory limit)")
        try:
            # before any graph capture: sets the >48 KB shared-memory attribute once
            kernel = load_xpass(self.plan.dtype)
            kernel.attributes                     # the module is loaded: its function resolves
            stage = "the update kernel (Numba-CUDA views of the step's arrays)"
            self._numba_views = self._make_numba_views()
            stage = ("the update kernel (Numba-CUDA: NVVM compile, then link and load: "
                     "nvJitLink where the driver is older than the PTX)")
            load_update_kernel(self._update_args(True))
            if self.replay is not None:
                stage = ("a trial launch of both kernels (launch resources, memory faults: "
                         "step 0's evaluation, which step 1's segment repeats idempotently)")
                self._trial_launch()
        except Exception as exc:                  # every compile/link/driver error: see above
            raise KernelLoadError(f"{stage} failed: {type(exc).__name__}: "
                                  f"{str(exc).strip()[:2000]}") from exc

    # -- launches --------------------------------------------------------------------------
    def _trial_launch(self):
        """Launch the X-pass and an evaluate-only update of step 0 and wait for them, so a
        launch the GPU refuses (too many registers or shared memory for the block, a fault)
        surfaces at the build.  Its bookkeeping (step 0's log entry, a config unhealthy at
        step 0, a target met at step 0) is what step 0's evaluation writes again; the clock is
        set back."""
        with self.replay.stream:
            self._xpass()
            self._update(False)
        self.replay.stream.synchronize()
        self.clock.fill(-1)
        self.xp.cuda.Device().synchronize()

    def _xpass(self):
        launch_xpass(self.launcher, self.plan, self.W, self.X, self.Yt, self.prow, self.Gpart,
                     self.Lpart, self.clock)

    def _update(self, do_update):
        from .update import launch_update
        dev, Gpart, Lpart, W, clock = self._numba_views
        launch_update(self.launcher, dev, Gpart, Lpart, W, clock, self.plan.splits, self.m,
                      self.k, self.d, self.steps, self.log_every, self.limit,
                      do_update=do_update, eq10=self.eq10)

    def _update_args(self, do_update):
        """The update kernel's argument tuple, as _update launches it."""
        from .update import kernel_args
        dev, Gpart, Lpart, W, clock = self._numba_views
        return kernel_args(dev, Gpart, Lpart, W, clock, self.plan.splits, self.m, self.k, self.d,
                           self.steps, self.log_every, self.limit, do_update)

    def _make_numba_views(self):
        """The update kernel's arrays as Numba device arrays, made once: handing CuPy arrays to a
        Numba launch converts them every time (tens of microseconds) and, by default, syncs
        on the stream they export — a host sync that would also break graph capture."""
        arrays = (self.dev, self.Gpart, self.Lpart, self.W, self.clock)
        if self.xp is np or not self.launcher.runs_kernels:
            return arrays
        from numba import cuda

        def view(a):
            return cuda.as_cuda_array(a, sync=False)
        return (type(self.dev)(*[view(a) for a in self.dev]),
                *[view(a) for a in arrays[1:]])

    def _pieces(self, lead_update, n):
        """The launches of one segment as [(graph key, launches, times)]: [the update of the
        pending step], then n - 1 x (X-pass, update) in pieces of GRAPH_STEPS steps (one graph,
        replayed (n - 1) // GRAPH_STEPS times) and one piece of the remainder, then the last
        step's X-pass and its evaluate-only update (its step's update stays pending).  Every
        graph has at most 2 GRAPH_STEPS nodes, whatever log_every: capture and build time stay
        fixed (a segment of n steps was one graph of 2 n + 1 nodes)."""
        def steps(count):
            def launches():
                for _ in range(count):
                    self._xpass()
                    self._update(True)
            return launches

        def last():
            self._xpass()
            self._update(False)

        full, rest = divmod(n - 1, GRAPH_STEPS)
        pieces = [(("lead",), lambda: self._update(True), 1)] if lead_update else []
        if full:
            pieces.append((("steps", GRAPH_STEPS), steps(GRAPH_STEPS), full))
        if rest:
            pieces.append((("steps", rest), steps(rest), 1))
        return pieces + [(("last",), last, 1)]

    # -- the step interface ----------------------------------------------------------------
    def advance_to(self, end, steps):
        last = min(end, steps)
        lead = self.evaluated and self.t < last
        if self.evaluated and not lead:
            return
        first = self.t + 1 if lead else self.t
        n = last - first + 1
        for key, launches, times in self._pieces(lead, n):
            for _ in range(times):
                if self.replay is None:
                    launches()
                else:
                    self.replay.run(key, launches)
        if self.replay is not None:
            reason = self.replay.fallback_reason
            self.meta["graph"] = (
                f"eager launches (capture failed: {reason})" if reason else
                f"replayed (graphs of up to {GRAPH_STEPS} steps)" if self.replay.replays else
                "eager launches (graphs off)" if not self.replay.enabled else
                "eager launches (no piece ran twice: graphs replay from the second)")
        self.t = last
        self.evaluated = True

    def flush(self, steps):
        if self.evaluated and self.t < steps:
            if self.replay is not None:
                with self.replay.stream:
                    self._update(True)
            else:
                self._update(True)
            self.t += 1
            self.evaluated = False

    def _sync(self):
        """Wait for the step's stream: reads below happen on the default stream."""
        if self.replay is not None:
            self.replay.stream.synchronize()

    def all_reached(self) -> bool:
        self._sync()
        dev = self.dev
        return bool(to_numpy(((dev.reached_at >= 0) | (dev.alive == 0)).all()))

    def host_arrays(self) -> dict:
        host = self.host_packed()
        with np.errstate(over="ignore", invalid="ignore"):
            We = end_to_end(host)
        return {"log": np.asarray(host.log, dtype=np.float64), "diverged_at": host.diverged_at,
                "reached_at": host.reached_at, "We": We}

    def host_packed(self):
        self._sync()
        return type(self.dev)(*[to_numpy(a) for a in self.dev])

    def state_arrays(self) -> dict:
        host = self.host_packed()
        # W too: the kernel computed it in the run's dtype, and a resume must go on bitwise
        return {"W": to_numpy(self.W), **{f"packed_{name}": getattr(host, name)
                                          for name in _STATE_FIELDS}}

    def load_state(self, z, t):
        for name in _STATE_FIELDS:
            getattr(self.dev, name)[...] = self.xp.asarray(z[f"packed_{name}"])
        self.W[...] = self.xp.asarray(z["W"])
        self.clock[...] = t - 1
        if self.xp is not np:
            self.xp.cuda.Device().synchronize()       # the copies above, before any launch
        self.t, self.evaluated = t, False


# What changes during training (the rest of the packed layout is fixed by the configs).
_STATE_FIELDS = ("theta", "state", "count", "alive", "diverged_at", "reached_at", "log")


def _sm_count(xp) -> int:
    if xp is np:
        return 132                                     # plan as for an H200 (tests on the CPU)
    return int(xp.cuda.Device().attributes["MultiProcessorCount"])
