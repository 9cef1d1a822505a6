"""Ctrl-C, SIGTERM and SIGHUP during train(): stop at the next look-in of the host, never
inside a step.

A KeyboardInterrupt raised in the middle of a step can leave some buckets updated and others not,
so a checkpoint written from that state would resume a run that never existed.  `deferred_signals`
therefore turns the first SIGINT, SIGTERM or SIGHUP (Ctrl-C; what batch schedulers send before
they kill a job, and what a closed terminal sends) into a request that the training loop reads at
its next look-in (a record step or a checkpoint step: on CUDA, the end of the graph replay under
way).  A second one raises `Insisted` (a KeyboardInterrupt) at once: the user insists, nothing is
written then and the last periodic checkpoint stands.  train() answers a request by writing its
checkpoint and raising `TrainingInterrupted`, which carries the partial Result and the signal.

A signal whose handler is SIG_IGN when train() starts stays ignored (nohup ignores SIGHUP; a
script started with `&` ignores SIGINT): the caller chose that.  Every handler is restored to what
it was on the way out.
"""
from __future__ import annotations

import contextlib
import signal
import threading

# The signals that stop a run cleanly; exit status 128 + signal number, as a shell reports a
# process killed by it (gpulinear train: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                if hasattr(signal, name))


def signal_name(signum) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_status(signum) -> int:
    """128 + the signal number: what a shell shows for a process that a signal ended."""
    return 128 + int(signum)


class TrainingInterrupted(KeyboardInterrupt):
    """A signal (Ctrl-C, SIGTERM, SIGHUP) stopped train() at a look-in.  result: the Result up
    to `step` (its records so far); checkpoint: the file written at `step` (None when train()
    had no checkpoint= or it could not be written: `not_written` then says why); signum: the
    signal."""

    def __init__(self, result, step, steps, checkpoint=None, signum=signal.SIGINT,
                 not_written=None):
        self.result, self.step, self.steps, self.checkpoint = result, step, steps, checkpoint
        self.signum, self.not_written = signum, not_written
        if checkpoint is not None:
            where = f"checkpoint written to {checkpoint}; continue with resume=True"
        elif not_written is not None:
            where = f"the checkpoint could not be written ({not_written})"
        else:
            where = ("no checkpoint= was given, so a rerun starts over (give checkpoint=<path> "
                     "to make a run resumable)")
        super().__init__(f"training interrupted at step {step} of {steps} by "
                         f"{signal_name(signum)}; {where}; the partial Result is this "
                         "exception's .result")


class Insisted(KeyboardInterrupt):
    """A second signal while train() was already stopping: stopped at once, nothing written."""

    def __init__(self, signum):
        self.signum = signum
        super().__init__(f"{signal_name(signum)} again: stopped at once; nothing was written "
                         "(the last periodic checkpoint stands)")


# The requests of the deferred_signals blocks in force in the main thread, innermost last.
_active = []


class _Request:
    requested = False     # a first signal came: stop at the next look-in
    signum = None         # which one
    insisted = False      # a second came: Insisted was raised wherever the code was


@contextlib.contextmanager
def deferred_signals(signals=SIGNALS):
    """Within the block, the first of `signals` sets `.requested` (and `.signum`) on the yielded
    object instead of stopping the process; a second raises Insisted.  Signals ignored on entry
    stay ignored; every handler in force before is restored on exit.  Nested inside another
    such block, it yields the outer block's request and installs nothing, so a signal that came
    between the inner blocks (between the chunks of a grid) is seen at the next look-in.
    Outside the main thread (where Python delivers no signals) nothing is installed and
    `.requested` stays False."""
    req = _Request()
    if threading.current_thread() is not threading.main_thread():
        yield req
        return
    if _active:          # nested (a chunk of a chunked grid): the outer block's request holds
        yield _active[-1]
        return
    previous = {}

    def handler(signum, frame):
        if req.requested:                     # a second signal: stop now, whatever the state
            req.insisted = True
            raise Insisted(signum)
        req.requested, req.signum = True, signum

    try:
        for sig in signals:
            before = signal.getsignal(sig)
            if before is signal.SIG_IGN:
                continue
            previous[sig] = before
            signal.signal(sig, handler)
        _active.append(req)
        yield req
    finally:
        if _active and _active[-1] is req:
            _active.pop()
        for sig, before in previous.items():
            # None: a handler set outside Python; SIGINT's nearest equivalent is Python's own
            signal.signal(sig, before if before is not None else
                          signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)


def deferred_sigint():
    """deferred_signals for SIGINT only (the interface before SIGTERM and SIGHUP were handled)."""
    return deferred_signals((signal.SIGINT,))
