"""train(): step every configuration of a grid together.

The engine plans (buckets, record steps, the health policy, checkpoints) and drives a step, one
of two implementations of one small interface (gpulinear.step documents it):
  ArrayStep  (gpulinear.step)       stacked arrays on NumPy — the reference and the CPU backend —
                                    or on CuPy for what the fused CUDA step does not take (xent)
  CudaStep   (gpulinear.cuda.step)  the whole call's step as two custom kernels (X-pass, update),
                                    replayed as CUDA graphs between the host's look-ins
The host looks at the run only at `segment_ends` (record steps, checkpoints): progress,
stop_at_target and checkpoints happen there; between them the device runs on its own.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import sys
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from . import advice, interrupt, memory
from . import targets as relative_targets
from .backend import resolve_backend, resolve_dtype
from .config import Config, check_int, check_real
from .data import check_data
from .gram import GramL2, use_gram
from .losses import check_targets_for, config_loss, get_loss
from .plan import record_steps, segment_ends
from .analysis import DIVERGE_FACTOR     # default ceiling: x a config's own loss at step 0
from .progress import StepProgress
from .result import Result


def train(X, y, configs, loss="l2", steps=1000, log_every=100, backend="auto", dtype="float64",
          target=None, stop_at_target=False, diverge_above=None, progress=None,
          checkpoint=None, checkpoint_every=1000, resume=False, fused=None,
          overwrite=False, gram=None, diverge_factor=None) -> Result:
    """Train every config on (X, y) for `steps` full-batch steps; return a Result.

    X (m, d); y (m,) or (m, k); configs: a Config or a list of them (gl.grid); loss: "l2", "l4",
    "l<p>", gl.Lp(p) or "xent" (a Config's own `loss` wins); backend "auto" | "numpy" | "cuda";
    dtype "float64" | "float32".  The loss is recorded at step 0, every `log_every` steps and at
    the last step.  A config whose loss or weights become non-finite, or whose loss exceeds its
    ceiling, is flagged and frozen at the step where that is seen (its weights there, which may
    already be non-finite), and never touches another config.  The ceiling: by default
    DIVERGE_FACTOR (1e6) x the config's own loss at step 0 (`diverge_factor=` another factor);
    `diverge_above=L` an absolute loss level instead (math.inf: no ceiling, non-finite only).
    A finite 1e287 is a diverged run, and flagging it keeps plots and tables finite.
    `target` (a float, one per config, gl.rel(gap) = L* + gap |L*| of each config's loss, or a
    dict {loss: either}; gpulinear.targets) gives `steps_to_target`, the first step whose loss
    is <= target (meta["optimal_loss"] then holds L* per loss); with stop_at_target=True
    training ends at the first log point where every live config has reached it.  checkpoint: a file path; the whole state is written there (atomically)
    every `checkpoint_every` steps and at the end, and resume=True continues from it (a resumed
    run equals an uninterrupted one exactly), also to more steps than a finished run had; an
    existing checkpoint is replaced only with overwrite=True, and one in use by another live
    process is refused (gpulinear.checkpoint).  Ctrl-C, SIGTERM and SIGHUP stop at the next
    look-in, write the checkpoint and raise gpulinear.interrupt.TrainingInterrupted carrying the
    partial Result.  If the checkpoint cannot be written anywhere at the end,
    gpulinear.checkpoint.NotWritten carries the finished Result.  On NumPy a grid larger than
    the available memory runs in chunks (gpulinear.memory), each with its own checkpoint.
    fused (CUDA only): None — calls whose losses are
    all lp run in the fused step (gpulinear.cuda.step: two kernels per step, CUDA graphs), and
    fall back to the array step on CuPy, with a message (and the reason in
    Result.meta["fused_fallback"]), where it cannot run or its kernels do not compile or load
    (both are compiled when the step is built, before step 1); True — the same but an error
    instead of the fallback; False — always the array step on CuPy.
    gram: l2 configs through the Gram matrix (gpulinear.gram: exact algebra, 2 k d^2 flops per
    config-step instead of 4 m d k); None — where it is cheaper, d < m; True / False — always /
    never (False: every config on the data path, the passes over the m examples).  On CUDA it
    applies to calls whose configs are all l2 (the fused step then runs on d + 1 rows).
    """
    configs = _check_configs(configs)
    steps = check_int("steps", steps, 0)
    log_every = check_int("log_every", log_every, 1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    memory.check_schedule(steps, log_every)   # before anything of that size is built
    loss = get_loss(loss)
    dt = resolve_dtype(dtype)
    which = resolve_backend(backend)
    X64, Y64 = check_data(X, y)
    diverge_above, diverge_factor = check_ceiling(diverge_above, diverge_factor)
    target, lstars, target_rule = relative_targets.resolve(target, configs, loss, X64, Y64)
    targets = _check_target(target, len(configs))
    gram_on = use_gram(gram, *X64.shape)
    for cfg in configs:
        check_targets_for(config_loss(cfg, loss), Y64)
    advice.identity_init(configs, *X64.shape[1:], Y64.shape[1])
    advice.feature_scales(X64)
    advice.unreachable_target(targets, configs, loss, X64, Y64)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=<path>")
    if checkpoint is not None:       # fail now, not after the training that it would lose
        ckpt.check_writable(checkpoint)
    limit = math.inf if diverge_above is None else float(diverge_above)
    kw = dict(loss=loss, steps=steps, log_every=log_every, backend=backend, dtype=dtype,
              diverge_above=diverge_above, diverge_factor=diverge_factor, progress=progress,
              fused=fused, gram=gram)
    chunks = (_device_chunks if which == "cuda" else _host_chunks)(
        configs, loss, X64.shape, Y64.shape[1], dt, steps, log_every)
    if checkpoint is not None and resume:     # a chunked run resumes in the chunks it had
        chunks = _resumed_chunks(checkpoint, chunks, len(configs))
    if len(chunks) > 1:
        return _target_meta(_train_chunks(X64, Y64, configs, chunks, targets, checkpoint,
                                          checkpoint_every, resume, overwrite, kw),
                            lstars, target_rule)
    lock = None if checkpoint is None else ckpt.CheckpointLock(checkpoint)
    try:
        result = _train_call(X64, Y64, configs, loss, dt, steps, log_every, targets, limit,
                             diverge_above, stop_at_target, progress, which, fused, checkpoint,
                             checkpoint_every, resume, overwrite, gram_on, diverge_factor)
        return _target_meta(result, lstars, target_rule)
    finally:
        if lock is not None:
            lock.release()


def _train_call(X64, Y64, configs, loss, dt, steps, log_every, targets, limit, diverge_above,
                stop_at_target, progress, which, fused, checkpoint, checkpoint_every, resume,
                overwrite, gram_on, diverge_factor=None) -> Result:
    """train() after its checks, with the checkpoint's lock held: the look-ins, the
    checkpoints and the answer to Ctrl-C."""
    rec = record_steps(steps, log_every)
    step = _make_step(which, fused, X64, Y64, configs, loss, dt, rec, targets, limit, gram_on)
    step.diverge_factor = diverge_factor      # None: the absolute `limit` only
    fingerprint, finished = None, False
    # the checkpoint a result came from: gpulinear train tells its own --out result by it
    meta_ck = {} if checkpoint is None else {"checkpoint": str(checkpoint)}
    if checkpoint is not None:
        # the default relative ceiling leaves the fingerprint as it was before it existed
        ceiling = diverge_above if diverge_factor in (None, DIVERGE_FACTOR) \
            else ("x initial loss", diverge_factor)
        fingerprint = ckpt.run_fingerprint(X64, Y64, configs, loss, dt, log_every, targets,
                                           ceiling, stop_at_target, step.kind)
        saved = ckpt.open_run(checkpoint, fingerprint, steps, resume, overwrite)
        if saved is not None:
            rec, finished = ckpt.align_records(saved, rec)
            step.load_state(saved, int(saved["t"]))

    def save():
        return ckpt.save_or_rescue(lambda path: ckpt.save(
            path, fingerprint, dict(step.state_arrays(), t=np.int64(step.t), rec_steps=rec),
            steps), checkpoint)

    failures = []

    def save_periodic():
        # a checkpoint that cannot be written anywhere does not end the run (that would lose
        # it): say so once, train on, try again at the next one and at the end
        try:
            save()
        except ckpt.NotWritten as exc:
            if not failures:
                print(f"gpulinear: {exc}; training goes on (each later checkpoint tries again; "
                      "further failures are not repeated here)", file=sys.stderr)
            failures.append(step.t)

    meta = {"loss": loss.name, "backend": which, "dtype": dt.name, "m": X64.shape[0],
            "d": X64.shape[1], "k": Y64.shape[1], "log_every": log_every,
            "steps_requested": steps, "diverge_above": diverge_above,
            "diverge_factor": diverge_factor, "step": step.kind, **meta_ck}
    targets_on = stop_at_target and targets is not None
    bar = StepProgress(steps, len(configs), progress)
    with interrupt.deferred_signals() as stop:
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # handled
                for end in ([] if finished else segment_ends(
                        step.t, steps, log_every, checkpoint_every if checkpoint else None)):
                    step.advance_to(end, steps)
                    bar.update(end)
                    if end == steps:
                        break
                    if targets_on and end in rec and step.all_reached():   # look-ins only
                        rec = rec[rec <= end]
                        break
                    if checkpoint is not None and (end + 1) % checkpoint_every == 0:
                        step.flush(steps)
                        save_periodic()
                    if stop.requested:     # a signal, seen at a look-in: the state is whole
                        raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            bar.close(done=False)
            # raised inside a step (Python's own Ctrl-C outside the main thread, or a second
            # signal): the state may be torn, so nothing is written; the last checkpoint stands
            if not stop.requested or isinstance(exc, interrupt.Insisted):
                raise
            step.flush(steps)              # the evaluated step's update, as a checkpoint has it
            written = failed = None
            if checkpoint is not None:
                try:
                    written = save()
                except ckpt.NotWritten as err:
                    failed = err
            partial = _result(step, configs, rec[rec < step.t], targets,
                              dict(meta, interrupted_at=step.t))
            raise interrupt.TrainingInterrupted(partial, step.t, steps, written, stop.signum,
                                                failed) from None
        bar.close()
        written = None
        if checkpoint is not None:       # still deferred: a signal now waits for this write
            try:
                written = save()
            except ckpt.NotWritten as exc:    # nothing finished is discarded: the Result goes
                raise ckpt.NotWritten(exc.what, exc.attempts,
                                      _result(step, configs, rec, targets, meta)) from None
            if written != Path(checkpoint):
                meta["checkpoint_rescued_to"] = str(written)
        if stop.requested:    # came during the last segment or the final write: the run is
            # whole, but whoever sent it wants the process to stop, so it is not swallowed
            raise interrupt.TrainingInterrupted(_result(step, configs, rec, targets, meta),
                                                step.t, steps, written, stop.signum)
    return _result(step, configs, rec, targets, meta)


def chunk_checkpoint(checkpoint, chunk: slice) -> Path:
    """The checkpoint file of the configs chunk.start..chunk.stop-1 of a grid run in chunks:
    run.npz -> run.configs-0-499.npz, beside it."""
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}.configs-{chunk.start}-{chunk.stop - 1}{p.suffix}")


def _chunk_files(checkpoint) -> list:
    """[slice] of the chunk checkpoints found beside `checkpoint`, in config order."""
    p = Path(checkpoint)
    head, found = f"{p.stem}.configs-", []
    try:
        names = [f.name for f in p.parent.iterdir()]
    except OSError:
        return found
    for name in names:
        if name.startswith(head) and name.endswith(p.suffix):
            a, _, b = name[len(head):len(name) - len(p.suffix)].partition("-")
            if a.isdigit() and b.isdigit():
                found.append(slice(int(a), int(b) + 1))
    return sorted(found, key=lambda c: c.start)


def _resumed_chunks(checkpoint, planned, n) -> list:
    """The chunks to resume a run in: those whose checkpoints exist (a prefix of the grid, as
    they were planned when the run started; the memory may differ now), then `planned` cut to
    the rest.  A run that was not chunked (its checkpoint is the one file) keeps `planned`."""
    found, stop = [], 0
    for c in _chunk_files(checkpoint):
        if c.start == stop and c.stop <= n:
            found.append(c)
            stop = c.stop
    if not found or Path(checkpoint).exists():
        return planned
    size = max(c.stop - c.start for c in planned)
    return found + [slice(i, min(i + size, n)) for i in range(stop, n, size)]


def _train_chunks(X64, Y64, configs, chunks, targets, checkpoint, checkpoint_every, resume,
                  overwrite, kw) -> Result:
    """A grid larger than the memory, one chunk after another (configs never interact); with a
    checkpoint, each chunk has its own file (chunk_checkpoint).  A signal keeps every finished
    chunk: TrainingInterrupted's Result holds them and the interrupted chunk's configs (their
    loss NaN after the step reached), meta["configs_run"] saying how many configs it holds."""
    n, parts = len(configs), []
    lock = None if checkpoint is None else ckpt.CheckpointLock(checkpoint)
    # one deferral for the whole grid: a signal while a chunk is set up, or between chunks, is
    # answered at the next chunk's first look-in instead of ending the process there
    try:
        with interrupt.deferred_signals():
            for c in chunks:
                sub = dict(kw, target=None if targets is None else targets[c])
                if checkpoint is not None:
                    sub.update(checkpoint=chunk_checkpoint(checkpoint, c), resume=resume,
                               overwrite=overwrite, checkpoint_every=checkpoint_every)
                try:
                    # each chunk runs all `steps`: stopping at the target is a decision over
                    # the whole grid
                    parts.append((list(range(c.start, c.stop)),
                                  train(X64, Y64, configs[c], **sub)))
                except interrupt.TrainingInterrupted as exc:
                    merged = _merge_partial([r for _, r in parts], exc.result, c.stop)
                    if checkpoint is not None:
                        merged.meta["checkpoint"] = str(checkpoint)
                    raise interrupt.TrainingInterrupted(merged, exc.step, exc.steps,
                                                        exc.checkpoint, exc.signum,
                                                        exc.not_written) from None
    finally:
        if lock is not None:
            lock.release()
    res = Result.concat(parts, n)
    if checkpoint is not None:
        res.meta["checkpoint"] = str(checkpoint)
    return res


def _merge_partial(done, partial, n_run) -> Result:
    """The finished chunks' Results and the interrupted chunk's partial one as one Result of
    the first `n_run` configs: the finished chunks' records all kept, the interrupted chunk's
    rows NaN where it had not reached."""
    if not done:
        return dataclasses.replace(partial, meta=dict(partial.meta, configs_run=n_run))
    steps = done[0].steps
    loss = np.full((len(partial.configs), len(steps)), np.nan)
    loss[:, :partial.loss.shape[1]] = partial.loss
    parts = done + [dataclasses.replace(partial, steps=steps, loss=loss)]

    def cat(name):
        arrays = [getattr(r, name) for r in parts]
        return None if arrays[0] is None else np.concatenate(arrays)

    return Result(configs=[c for r in parts for c in r.configs], steps=steps.copy(),
                  loss=cat("loss"), diverged_at=cat("diverged_at"),
                  end_to_end=cat("end_to_end"), steps_to_target=cat("steps_to_target"),
                  target=cat("target"), meta=dict(partial.meta, configs_run=n_run,
                                                  chunks_finished=len(done)))


def _result(step, configs, rec, targets, meta) -> Result:
    """The Result of `step` with the records `rec` (a prefix of its schedule), in user order."""
    host = step.host_arrays()
    if getattr(step, "diverge_factor", None) is not None and not getattr(step, "exact_ceiling",
                                                                          False):
        _flag_above_ceiling(host, rec, step.diverge_factor)
        meta = dict(meta, ceiling_checked="at record steps")
    order = np.argsort(step.rows_of)                              # buffer rows -> user order
    return Result(configs=configs, steps=rec.copy(), loss=host["log"][:, :len(rec)][order],
                  diverged_at=host["diverged_at"][order], end_to_end=host["We"][order],
                  steps_to_target=None if targets is None else host["reached_at"][order],
                  target=targets, meta={**meta, **getattr(step, "meta", {})})   # step's: at the end


def _target_meta(result, lstars, rule):
    """A relative target's L* per loss and its rule in the Result's meta."""
    if rule is not None:
        result.meta["target_rule"] = rule
    if lstars:
        result.meta["optimal_loss"] = dict(lstars)
    return result




def check_ceiling(diverge_above, diverge_factor):
    """(diverge_above, diverge_factor) as train() applies them: an absolute level, or a factor of
    the initial loss (the default, DIVERGE_FACTOR, when neither is given); else a ValueError."""
    if diverge_above is not None:
        _check_number("diverge_above", diverge_above)
        if not float(diverge_above) > 0:
            raise ValueError(f"diverge_above must be a loss level > 0 (math.inf: no ceiling), "
                             f"got {diverge_above!r}")
        if diverge_factor is not None:
            raise ValueError("give diverge_above (an absolute loss level) or diverge_factor "
                             "(times each config's initial loss), not both")
        return float(diverge_above), None
    if diverge_factor is None:
        return None, DIVERGE_FACTOR
    _check_number("diverge_factor", diverge_factor)
    if not float(diverge_factor) > 1:
        raise ValueError(f"diverge_factor must be a number > 1 (times each config's initial "
                         f"loss; math.inf: no ceiling), got {diverge_factor!r}")
    return None, (None if math.isinf(float(diverge_factor)) else float(diverge_factor))


def _check_number(name, value):
    """A real number (inf allowed: it switches the ceiling off); a bool or a string is refused
    (float() would take them), naming `name`."""
    if isinstance(value, (bool, str, bytes)) or type(value).__name__ == "bool_" \
            or not isinstance(value, numbers.Real):
        hint = " (write the number without quotes)" if isinstance(value, str) else ""
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}{hint}")


def relative_ceiling(initial, factor, xp=np):
    """(C,) the loss ceiling of each config: factor x its loss at step 0; inf where that loss is
    0 or not finite (no scale to be relative to; a non-finite one has diverged already)."""
    with np.errstate(over="ignore", invalid="ignore"):
        ceiling = initial * factor
    return xp.where(xp.isfinite(initial) & (initial > 0), ceiling, np.inf)


def _flag_above_ceiling(host, rec, factor):
    """The relative ceiling for a step that checks an absolute one only (the fused CUDA step):
    a live config whose recorded loss exceeds factor x its step-0 loss is marked diverged at
    the first such record step (not frozen: its later records and W_e are kept)."""
    log = host["log"][:, :len(rec)]
    if log.shape[1] == 0:
        return
    ceiling = relative_ceiling(log[:, 0], factor)
    with np.errstate(invalid="ignore"):
        over = log > ceiling[:, None]
    for c in np.flatnonzero(over.any(axis=1) & (host["diverged_at"] < 0)):
        host["diverged_at"][c] = int(rec[np.argmax(over[c])])


def _make_step(which, fused, X64, Y64, configs, loss, dt, rec, targets, limit, gram_on=False):
    """The step for this call: NumPy's array step, the fused CUDA step, or the array step on
    CuPy (xent, fused=False, or the fused step unavailable with fused=None).  gram_on: l2
    configs through the Gram matrix (the array step: its Gram rows; the fused step: the
    compressed data of gpulinear.gram when every config is l2)."""
    from .step import ArrayStep
    if which == "numpy":
        return ArrayStep(np, X64, Y64, configs, loss, dt, rec, targets, limit, gram=gram_on)
    p_of = [config_loss(c, loss).p for c in configs]
    why_not = None
    if fused is not False and None not in p_of:
        try:
            if gram_on and set(p_of) == {2.0}:
                Xc, Yc = GramL2.from_data(X64, Y64).compressed_data()
                step = _new_cuda_step(Xc, Yc, configs, loss, dt, rec, targets, limit)
                step.kind = "cuda-fused+gram"    # its own checkpoints: the rounding differs
                step.meta["gram_rows"] = Xc.shape[0]
                return step
            return _new_cuda_step(X64, Y64, configs, loss, dt, rec, targets, limit)
        # no numba-cuda (ImportError), no GPU for Numba or no NVRTC (RuntimeError, which
        # cuda-pathfinder's DynamicLibNotFoundError is), a kernel that does not compile, link or
        # load (cuda.step.KernelLoadError, a RuntimeError: the step compiles both when built),
        # a shape the kernels refuse (ValueError)
        except (ImportError, RuntimeError, ValueError) as exc:
            if fused:
                raise
            why_not = f"{type(exc).__name__}: {exc}"
            print(f"gpulinear: fused CUDA step not used ({why_not.splitlines()[0][:300]}); "
                  "array step on CuPy", file=sys.stderr)
    elif fused:
        raise ValueError("fused=True: the fused CUDA step takes lp losses only; this call has "
                         "softmax cross-entropy configs (use fused=None)")
    import cupy
    step = ArrayStep(cupy, X64, Y64, configs, loss, dt, rec, targets, limit, gram=gram_on)
    if why_not is not None:                      # Result.meta says why the fused step did not run
        step.meta = dict(getattr(step, "meta", None) or {}, fused_fallback=why_not)
    return step


def _new_cuda_step(X64, Y64, configs, loss, dt, rec, targets, limit):
    """The fused CUDA step on (X64, Y64) (the tests swap in one on NumPy arrays)."""
    from .cuda.step import CudaStep
    return CudaStep(X64, Y64, configs, loss, dt, rec, targets, limit)


def _device_chunks(configs, loss, x_shape, k, dt, steps, log_every) -> list:
    """Slices of `configs` that each fit in the GPU's free memory (one slice when all do)."""
    from .cuda import free_device_bytes
    return _plan(configs, x_shape, k, dt, steps, log_every, free_device_bytes(), "device")


def _host_chunks(configs, loss, x_shape, k, dt, steps, log_every) -> list:
    """Slices of `configs` that each fit in the available RAM (the NumPy backend)."""
    return _plan(configs, x_shape, k, dt, steps, log_every, memory.available_host_bytes(), "host")


def _plan(configs, x_shape, k, dt, steps, log_every, free, where) -> list:
    """One estimate for both backends (gpulinear.memory); says so when it chunks."""
    m, d = x_shape
    per, shared = memory.grid_bytes(configs, k, d, m, dt, memory.n_records(steps, log_every))
    if len(configs) >= memory.BIG_GRID:
        print(memory.big_grid_message(configs, k, d, m, steps, per, shared, free, where),
              file=sys.stderr)
    plan = memory.plan_chunks(len(configs), per, free, shared, where=where)
    if plan.message:
        print(plan.message, file=sys.stderr)
    return plan.chunks


def _check_configs(configs):
    if isinstance(configs, Config):
        configs = [configs]
    try:
        configs = list(configs)
    except TypeError:
        raise TypeError(f"configs must be a Config or a list of Config (see gl.grid), "
                        f"got {type(configs).__name__}") from None
    if not configs:
        raise ValueError("configs is empty: give at least one Config (e.g. gl.grid(depth=[1, 2]))")
    for c in configs:
        if not isinstance(c, Config):
            raise TypeError(f"configs must hold Config objects, got {type(c).__name__}")
    return configs


def _check_target(target, n):
    if target is None:
        return None
    if np.ndim(target) == 0:
        check_real("target", target)
    elif any(isinstance(t, (bool, np.bool_, str, bytes)) for t in np.ravel(np.asarray(
            target, dtype=object))):
        raise TypeError("target must hold numbers, not booleans or strings, got "
                        f"{target!r}")
    arr = np.broadcast_to(np.asarray(target, dtype=np.float64), (n,)) if np.ndim(target) == 0 \
        else np.asarray(target, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"target must be a number or one per config ({n}), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("target must be finite")
    return arr.copy()
