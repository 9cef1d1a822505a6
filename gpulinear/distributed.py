"""train() on a Dask cluster: the grid cut into shards, one Dask task per shard, merged back.

    from gpulinear import distributed
    res = distributed.train(X, y, cfgs, workers=4, loss="l4", steps=20_000)      # LocalCluster
    res = distributed.train(X, y, cfgs, scheduler="tcp://10.0.0.5:8786", checkpoint_dir="/shared/ck")
    res = distributed.train(X, y, cfgs, client=my_client)                        # any dask Client

Scheduling, retries and worker loss are Dask's; this module only plans shards, names their
checkpoints and merges the results.  Dask is imported inside the functions that need it, so
`import gpulinear` (and `import gpulinear.distributed`) work without it (extra: `distributed`).

Shards.  `plan_shards` orders the configs as the engine stacks them (bucket by bucket, the order
of `plan_buckets`) and cuts that order into contiguous runs of an EVEN number of configs; the last
run takes the remainder and is never a lone config.  A shard is then exactly the rows
[a, b) of the single-process GEMM buffer, stepped by the same code.  Why even: OpenBLAS (measured:
0.3.31, Haswell kernel) computes a row of a GEMM bit-identically whatever the number of rows,
EXCEPT the lone last row of an odd row count and a one-row product (gemv); both give ~1e-15
relative differences that grow to ~1e-14 over a run (measured: max 7.6e-15 after 200 steps, l4,
odd shards).  With even shards the cluster reproduces single-process `train()` bit for bit on
that BLAS; other BLAS kernels (AVX-512, MKL, Arm) may differ at that ~1e-14 level, and CUDA within
its float tolerance.  What holds everywhere, on the NumPy backend: the merged result equals
`gpulinear.train` run on each shard alone, exactly.

stop_at_target=True is refused: it stops when EVERY config of the call has reached the target, a
condition across shards that a shard cannot see, so a shard would stop at another step than the
single-process run and padding could not give the same numbers.  `target=` alone is fine
(steps_to_target is recorded per config).

Checkpoints and faults.  Shard i checkpoints to <checkpoint_dir>/shard-<i>-<digest>.npz (digest:
the data, the shard's configs and the settings) every `checkpoint_every` steps, atomically (the
engine writes a temporary file and renames it).  The task always runs with resume=True, so a shard
retried after an exception (Dask's `retries=`) or rescheduled after its worker died (Dask's
`distributed.scheduler.allowed-failures`, default 3) continues from its last checkpoint; on the
NumPy backend that equals an uninterrupted run exactly, and a shard's result is taken only from
the attempt that finished, so nothing is lost or counted twice.  Without checkpoint_dir a
temporary directory on the client's machine is used (and removed at the end): every worker of a
LocalCluster / LocalCUDACluster sees it; on a cluster of several machines pass a checkpoint_dir
on a file system every worker shares, else a rescheduled shard starts over (still correct, only
slower).  resume=True (as in gl.train) keeps the checkpoints found in checkpoint_dir, so a killed
call continues where it was, provided it is cut into the same shards: give shard_size= (its
default depends on the cluster's thread count); resume=False (default) deletes this call's shard
files first.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path

import numpy as np

from .backend import BACKENDS
from .config import check_int
from .data import check_data
from .engine import _check_configs, _check_target
from .plan import plan_buckets
from .progress import ShardProgress
from .engine import train as _train_one
from .losses import get_loss
from .result import Result

# Seconds to wait for a scheduler given by address: an unreachable one fails within this.
SCHEDULER_TIMEOUT_S = 5


def train(X, y, configs, client=None, scheduler=None, workers=None, shard_size=None,
          checkpoint_dir=None, checkpoint_every=1000, retries=3, progress=None,
          **train_kwargs) -> Result:
    """gpulinear.train over a Dask cluster; the same Result, configs in the order given.

    Where to run (at most one): client= a dask.distributed.Client; scheduler= an address
    ("tcp://host:8786"), connected within SCHEDULER_TIMEOUT_S seconds or a RuntimeError;
    workers= N local worker processes (a LocalCluster on 127.0.0.1, one thread each; with a GPU
    and dask_cuda, a LocalCUDACluster with one worker per GPU, N of them if given); none of
    them: a local cluster with one worker per CPU core (or per GPU).  A local cluster starts
    worker processes by `spawn`: a script that calls this needs `if __name__ == "__main__":`.
    Workers must have gpulinear installed.

    shard_size: configs per Dask task (default: about two shards per worker thread, at least 2);
    see plan_shards.  checkpoint_dir / checkpoint_every / resume=: see the module docstring.
    retries: Dask retries of a shard that raised; a shard that still fails raises RuntimeError
    naming its configs and the last exception.  progress: a shard-level progress line on stderr
    (None: only on a TTY).  train_kwargs: those of gpulinear.train (loss, steps, log_every,
    backend, dtype, target, diverge_above, resume); stop_at_target=True is refused (module
    docstring).  The result's meta adds "shards" and "resumed" ({shard: step it resumed at}).
    """
    configs = _check_configs(configs)
    X64, Y64 = check_data(X, y)
    if sum(v is not None for v in (client, scheduler, workers)) > 1:
        raise ValueError("give at most one of client=, scheduler=, workers=")
    if workers is not None:
        workers = check_int("workers", workers, 1)
    if shard_size is not None:
        shard_size = check_int("shard_size", shard_size, 1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    retries = check_int("retries", retries, 0)
    kwargs = dict(train_kwargs)
    resume = bool(kwargs.pop("resume", False))
    if "checkpoint" in kwargs:
        raise TypeError("distributed.train: checkpoint= names one file; use checkpoint_dir= "
                        "(one checkpoint per shard)")
    if kwargs.get("stop_at_target"):
        raise ValueError(
            "stop_at_target=True is not supported by distributed.train: it stops when every "
            "config of the call has reached the target, which no shard can see; run without it "
            "(steps_to_target is still recorded with target=)")
    kwargs.pop("stop_at_target", None)
    # a relative target (gl.rel, or a dict per loss) becomes levels here, on the whole data: a
    # shard (or the dry run below, on two rows) must not solve for L* on its own
    from .targets import resolve
    kwargs["target"], lstars, target_rule = resolve(kwargs.get("target"), configs,
                                                    kwargs.get("loss", "l2"), X64, Y64)
    targets = None
    if kwargs.get("target") is not None and np.ndim(kwargs["target"]) > 0:
        targets = _check_target(kwargs["target"], len(configs))          # one per config: sliced
    # every argument checked here, before any worker is asked: 0 steps of one config on NumPy
    dry = dict(kwargs, steps=0, backend="numpy", progress=False)
    if targets is not None:
        dry["target"] = targets[:1]
    check_int("steps", kwargs.get("steps", 1000), 0)
    _train_one(X64[:2], Y64[:2], configs[:1], **dry)
    default_loss = kwargs.get("loss", "l2")
    backend = kwargs.get("backend", "auto")
    if backend not in BACKENDS:        # the dry run above ran on NumPy, whatever was asked
        raise ValueError(f"backend: unknown {backend!r}; choose one of {BACKENDS}")

    # the cluster (if ours) closes before a temporary checkpoint dir is removed
    with _checkpoint_dir(checkpoint_dir) as ckdir, \
            _connect(client, scheduler, workers, backend) as cl:
        if shard_size is None:
            slots = max(1, sum(cl.nthreads().values()))
            shard_size = max(2, math.ceil(len(configs) / (2 * slots)))
        data_digest = _digest(X64.tobytes(), Y64.tobytes())
        shards = plan_shards(configs, default_loss, shard_size)
        paths, shard_kwargs = [], []
        for i, idx in enumerate(shards):
            kw = dict(kwargs)
            if targets is not None:
                kw["target"] = targets[idx]
            shard_kwargs.append(kw)
            digest = _digest(data_digest, json.dumps([configs[j].to_dict() for j in idx]),
                             repr(sorted((k, repr(v) if not isinstance(v, np.ndarray)
                                          else v.tolist()) for k, v in kw.items())))
            paths.append(ckdir / f"shard-{i}-{digest[:16]}.npz")
            if not resume:
                paths[-1].unlink(missing_ok=True)
        results = _run_shards(cl, X64, Y64, configs, shards, paths, shard_kwargs,
                              checkpoint_every, retries, progress)
        for path in paths:                      # temporary files of attempts killed mid-write
            for stale in path.parent.glob(path.name + ".tmp*"):
                stale.unlink(missing_ok=True)
    resumed = {i: res.meta.pop("resumed_from") for i, res in enumerate(results)}
    merged = merge_results(list(zip(shards, results)), len(configs))
    merged.meta.update(shards=len(shards), resumed={i: t for i, t in resumed.items() if t > 0})
    if target_rule is not None:
        merged.meta.update(target_rule=target_rule, optimal_loss=dict(lstars or {}))
    return merged


def plan_shards(configs, default_loss, shard_size) -> list[list[int]]:
    """Config positions cut into shards of at most `shard_size` (deterministic).

    The configs in the engine's bucket order (plan_buckets: buckets by first appearance), cut
    into contiguous runs of an even number of configs (shard_size rounded down to even, unless
    it is 1); the last run takes the rest, and a lone last config joins the run before it (so
    that one shard may hold shard_size + 1).  A run may span two buckets: the engine steps mixed
    buckets in one call anyway.  Even runs are what makes the shards bit-identical to the
    single-process run (module docstring).
    """
    configs = _check_configs(configs)
    shard_size = check_int("shard_size", shard_size, 1)
    order = [i for bucket in plan_buckets(configs, get_loss(default_loss)) for i in bucket]
    size = shard_size if shard_size == 1 else shard_size - shard_size % 2
    shards = [order[a:a + size] for a in range(0, len(order), size)]
    if size > 1 and len(shards) > 1 and len(shards[-1]) == 1:
        shards[-2:] = [shards[-2] + shards[-1]]
    return shards


def merge_results(shards, n) -> Result:
    """One Result from [(config positions, Result of those configs), ...], in original order.

    Result.concat merges and checks (every position 0..n-1 exactly once, sizes that agree, the
    same recorded steps: shards that stopped early, e.g. with stop_at_target, cannot be merged
    into the single-process result).  meta is the first shard's, with "shards" added.
    """
    merged = Result.concat(shards, n)
    merged.meta.pop("parts", None)
    merged.meta["shards"] = len(shards)
    return merged


def _train_shard(data, configs, checkpoint, checkpoint_every, kwargs) -> Result:
    """The Dask task: gpulinear.train on one shard, resuming from its checkpoint if one exists
    (a retry, or a rerun with resume=True).  meta["resumed_from"]: the step it resumed at."""
    X, Y = data
    resumed_from = 0
    if Path(checkpoint).exists():
        with np.load(checkpoint, allow_pickle=False) as z:
            resumed_from = int(z["t"])
    res = _train_one(X, Y, configs, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                     resume=True, progress=False, **kwargs)
    res.meta["resumed_from"] = resumed_from
    return res


def _data(X, Y):
    """The Dask task that holds the data: a task (not scatter) so that the scheduler can
    recompute it from the graph when every worker holding it has died."""
    return X, Y


def _run_shards(client, X64, Y64, configs, shards, paths, shard_kwargs, checkpoint_every,
                retries, progress) -> list[Result]:
    """Submit one task per shard, collect them as they finish; results in shard order."""
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    data = client.submit(_data, X64, Y64, key=f"gpulinear-data-{token}", pure=False)
    futures = {}
    for i, idx in enumerate(shards):
        fut = client.submit(_train_shard, data, [configs[j] for j in idx], str(paths[i]),
                            checkpoint_every, shard_kwargs[i], key=f"gpulinear-shard-{i}-{token}",
                            retries=retries, pure=False)
        futures[fut] = i
    results = [None] * len(shards)
    bar = ShardProgress(len(shards), len(configs), progress)
    try:
        for fut in as_completed(list(futures)):
            i = futures[fut]
            if fut.status != "finished":
                exc = fut.exception() if fut.status == "error" else None
                described = "; ".join(configs[j].describe() for j in shards[i][:3])
                more = ", ..." if len(shards[i]) > 3 else ""
                raise RuntimeError(
                    f"shard {i} (configs {shards[i]}: {described}{more}) failed after {retries} "
                    f"retries ({fut.status}): {type(exc).__name__ if exc else ''}: {exc}") from exc
            results[i] = fut.result()
            bar.update(len(shards[i]))
    finally:
        bar.close()
        client.cancel(list(futures) + [data])   # a running task finishes on its worker: Dask
    return results                              # cannot stop it; its result is dropped


@contextlib.contextmanager
def _connect(client, scheduler, workers, backend):
    """The client to use: the caller's, one to `scheduler`, or one to a local cluster we own."""
    if client is not None:
        yield client
        return
    try:
        from distributed import Client
    except ImportError as exc:
        raise ImportError(f"gpulinear.distributed needs Dask ({exc}): "
                          "pip install 'gpulinear[distributed]'") from None
    if scheduler is not None:
        try:
            own = Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
        except (OSError, ValueError, TypeError) as exc:   # TimeoutError is an OSError
            raise RuntimeError(f"could not reach the Dask scheduler at {scheduler} within "
                               f"{SCHEDULER_TIMEOUT_S} s: {exc}") from None
        with own:
            yield own
        return
    with _local_cluster(workers, backend) as cluster, Client(cluster) as own:
        yield own


def _local_cluster(workers, backend):
    """LocalCUDACluster (one worker per GPU) when training on CUDA and dask_cuda is there;
    else a LocalCluster of single-threaded worker processes, all on 127.0.0.1."""
    from .backend import resolve_backend
    if resolve_backend(backend) == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            warnings.warn("training on CUDA without dask_cuda: all local workers share one GPU; "
                          "pip install dask-cuda for one worker per GPU", stacklevel=3)
            workers = workers or 1
        else:
            return LocalCUDACluster(n_workers=workers, dashboard_address=None)
    from distributed import LocalCluster
    # no dashboard; the scheduler's HTTP endpoint on loopback and a free port
    return LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                        processes=True, host="127.0.0.1", dashboard_address=None,
                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


@contextlib.contextmanager
def _checkpoint_dir(checkpoint_dir):
    if checkpoint_dir is not None:
        path = Path(checkpoint_dir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="gpulinear-shards-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
    return h.hexdigest()
