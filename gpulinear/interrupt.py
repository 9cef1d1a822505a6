"""Ctrl-C during train(): stop at the next look-in of the host, never inside a step.

A KeyboardInterrupt raised in the middle of a step can leave some buckets updated and others not,
so a checkpoint written from that state would resume a run that never existed.  `deferred_sigint`
therefore turns the first SIGINT into a request that the training loop reads at its next look-in
(a record step or a checkpoint step: on CUDA, the end of the graph replay under way); a
second Ctrl-C raises KeyboardInterrupt at once (the user insists; nothing is written then, the
last periodic checkpoint stands).  train() answers a request by writing its checkpoint and
raising `TrainingInterrupted`, which carries the partial Result.
"""
from __future__ import annotations

import contextlib
import signal
import threading


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped train() at a look-in.  result: the Result up to `step` (its records
    so far); checkpoint: the file written at `step` (None when train() had no checkpoint=)."""

    def __init__(self, result, step, steps, checkpoint=None):
        self.result, self.step, self.steps, self.checkpoint = result, step, steps, checkpoint
        where = (f"checkpoint written to {checkpoint}; continue with resume=True"
                 if checkpoint is not None else
                 "no checkpoint= was given, so a rerun starts over (give checkpoint=<path> to "
                 "make a run resumable)")
        super().__init__(f"training interrupted at step {step} of {steps}; {where}; the partial "
                         "Result is this exception's .result")


class _Request:
    requested = False


@contextlib.contextmanager
def deferred_sigint():
    """Within the block, the first SIGINT sets `.requested` on the yielded object instead of
    raising; the handler in force before is restored on exit.  Outside the main thread (where
    Python delivers no signals) nothing is installed and `.requested` stays False."""
    req = _Request()
    if threading.current_thread() is not threading.main_thread():
        yield req
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if req.requested:                     # a second Ctrl-C: stop now, whatever the state
            raise KeyboardInterrupt
        req.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield req
    finally:
        # None: a handler set outside Python; Python's own default is the nearest equivalent
        signal.signal(signal.SIGINT,
                      previous if previous is not None else signal.default_int_handler)
