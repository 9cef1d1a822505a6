"""Progress bars through tqdm.auto: a widget in Jupyter, a bar in a terminal, silent where stderr
is not a terminal (logs, CI, pipes) or with progress=False.

    StepProgress(steps, n_configs, progress)   train(): steps, with ETA and config-steps/s
    ShardProgress(shards, n_configs, progress) gpulinear.distributed: shards and configs done
progress: None (default: on for a terminal or a notebook; for train() only runs of >= 1000
steps), True (always), False (never).
"""
from __future__ import annotations

import sys

MIN_STEPS = 1000    # progress=None: shorter train() calls finish before a bar says anything


def _in_notebook() -> bool:
    """A Jupyter kernel (where tqdm.auto draws a widget, and stderr is no terminal)."""
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell is not None else None
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _enabled(progress, big_enough=True) -> bool:
    if progress is None:
        return big_enough and (_in_notebook() or sys.stderr.isatty())
    return bool(progress)


def _tqdm(**kw):
    from tqdm.auto import tqdm
    return tqdm(file=sys.stderr, dynamic_ncols=True, mininterval=0.2, **kw)


class StepProgress:
    """train()'s bar: update(t) with the steps done so far (a resumed run starts at its step);
    rate shown in config-steps/s (n_configs x steps/s), ETA from tqdm."""

    def __init__(self, steps, n_configs, progress):
        self.bar = None
        if steps > 0 and _enabled(progress, steps >= MIN_STEPS):
            self.bar = _tqdm(total=steps * n_configs, unit="config-step", unit_scale=True,
                             desc=f"{n_configs} configs x {steps:,} steps", leave=True)
        self.n = n_configs
        self.done = None

    def update(self, t):
        if self.bar is None:
            return
        if self.done is None:          # a resume: its first look-in sets the start, not a jump
            self.bar.n = self.bar.last_print_n = t * self.n
            self.bar.refresh()
        else:
            self.bar.update((t - self.done) * self.n)
        self.done = t

    def close(self, done=True):
        """Close the bar; done=False (interrupted) leaves it where it stopped."""
        if self.bar is not None:
            if done and self.bar.total is not None and self.bar.n < self.bar.total:
                self.bar.update(self.bar.total - self.bar.n)
            self.bar.close()
            self.bar = None


class ShardProgress:
    """The Dask path's bar: shards done, with the configs they held."""

    def __init__(self, shards, n_configs, progress):
        self.bar = None
        if _enabled(progress):
            self.bar = _tqdm(total=shards, unit="shard", desc=f"{n_configs} configs")
        self.configs_done = 0

    def update(self, n_configs):
        self.configs_done += n_configs
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.configs_done} configs", refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
