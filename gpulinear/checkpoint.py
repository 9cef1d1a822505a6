"""Checkpoint files of train(): written atomically, checked on reading, never lost.

A checkpoint is one .npz (never pickle) holding the run's arrays (the step's `state_arrays()`:
weights, optimizer state, loss log, ...; and the engine's "t" and "rec_steps") plus
    format        FORMAT, so a foreign .npz is recognised as such
    fingerprint   run_fingerprint(): the data, configs and settings it belongs to (not `steps`:
                  a finished run may be extended to more steps)
    steps         the steps the writing call was asked for
    content_hash  sha256 of every other array (name, dtype, shape, bytes): a flipped byte that
                  the zip CRC misses, or a member swapped in by hand, is found
It is written to a temporary file in the same folder, flushed to disk and renamed over the old one,
so a reader sees the old checkpoint or the new one.  `open_run` applies the rules a user relies on:
resume continues (saying from which step), a finished run extends to more steps, and an existing
checkpoint is replaced only with overwrite=True.  `CheckpointLock` refuses a second writer.
Every problem is one ValueError (or OSError / CheckpointLocked) naming the file and the fix.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

FORMAT = "gpulinear.checkpoint/2"
_META = ("format", "fingerprint", "steps", "content_hash")


class CheckpointLocked(RuntimeError):
    """Another live process holds the checkpoint's lock file."""


def run_fingerprint(X64, Y64, configs, loss, dt, log_every, targets, diverge_above,
                    stop_at_target, kind) -> str:
    """What a checkpoint must match to be resumed or extended: the data, the configs, the step
    implementation `kind` (their states differ) and every setting except `steps` (more steps
    continue the same trajectory)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X64).tobytes())
    h.update(np.ascontiguousarray(Y64).tobytes())
    h.update(json.dumps([c.to_dict() for c in configs], sort_keys=True).encode())
    h.update(repr((loss.name, dt.name, log_every, diverge_above, stop_at_target, kind,
                   None if targets is None else targets.tolist())).encode())
    return h.hexdigest()


def content_hash(arrays: dict) -> str:
    """sha256 over (name, dtype, shape, bytes) of every array, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# -- writing --------------------------------------------------------------------------------

def check_writable(path, what="checkpoint") -> Path:
    """Make `path`'s folder and write a probe file there, in well under a second; raise an
    OSError naming `what`, the path and the fix if that fails (before any training is done)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what}: {path} is a folder; give a file path such as "
                                f"{path / 'run.npz'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.probe"):
            pass
    except OSError as exc:
        raise type(exc)(exc.errno, f"{what}: cannot write to {path.parent} "
                        f"({exc.strerror or exc}); give a writable path") from None
    return path


def atomic_write(path, write) -> None:
    """write(file object) into a temporary file beside `path`, fsync it, rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save(path, fingerprint: str, arrays: dict, steps: int) -> Path:
    """Write the run state `arrays` (name -> NumPy array) as a checkpoint; returns the path."""
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    clash = set(arrays) & set(_META)
    if clash:
        raise ValueError(f"checkpoint arrays may not be named {sorted(clash)}")
    arrays.update(format=np.array(FORMAT), fingerprint=np.array(fingerprint),
                  steps=np.int64(steps))
    arrays["content_hash"] = np.array(content_hash(arrays))
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return Path(path)


def fallback_path(path) -> Path:
    """Where a file that could not be written at `path` goes instead: the temporary folder,
    under gpulinear-rescued/, prefixed with this process id so that runs never collide."""
    path = Path(path)
    return Path(tempfile.gettempdir()) / "gpulinear-rescued" / f"{os.getpid()}-{path.name}"


def save_or_rescue(write, path, what="checkpoint") -> Path:
    """write(path); if that raises OSError, write(fallback_path(path)) and say so on stderr.
    Returns the path written.  Finished training is never lost to a full disk or a folder
    removed while it ran; if the fallback fails too, the first error is raised."""
    try:
        write(path)
        return Path(path)
    except OSError as exc:
        rescue = fallback_path(path)
        try:
            write(rescue)
        except OSError:
            raise exc from None
        print(f"gpulinear: could not write the {what} {path} ({exc}); wrote it to {rescue} "
              "instead", file=sys.stderr)
        return rescue


# -- reading --------------------------------------------------------------------------------

def load(path) -> dict:
    """The arrays of the checkpoint at `path` (including "fingerprint" and "steps" as Python
    str/int), after checking that it is one and intact; else one ValueError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a folder, not a checkpoint file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] != b"PK":           # every .npz is a zip archive; text, pickle, raw .npy are not
        raise ValueError(f"checkpoint {path} is not a gpulinear checkpoint (not an .npz file: "
                         f"it starts with {head!r}); give another path or delete it")
    try:
        with zipfile.ZipFile(path) as zf:   # numpy reads members without reaching their CRC
            bad = zf.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad} fails its CRC")
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise ValueError(f"checkpoint {path} is damaged or truncated ({type(exc).__name__}: "
                         f"{exc}); delete it to start over, or resume from a copy") from None
    if "format" not in arrays:
        old = "fingerprint" in arrays and "t" in arrays
        raise ValueError(f"checkpoint {path} " + (
            "was written by an older gpulinear without a content check; delete it to start over"
            if old else "is an .npz file but not a gpulinear checkpoint; give another path"))
    if str(arrays["format"]) != FORMAT:
        raise ValueError(f"checkpoint {path} has format {str(arrays['format'])!r}; this "
                         f"gpulinear reads {FORMAT!r}")
    stored = str(arrays.pop("content_hash", ""))
    if stored != content_hash(arrays):
        raise ValueError(f"checkpoint {path} is damaged (its content check fails: the arrays "
                         "differ from what was written); delete it to start over")
    arrays["fingerprint"] = str(arrays["fingerprint"])
    arrays["steps"] = int(arrays["steps"])
    return arrays


def open_run(path, fingerprint: str, steps: int, resume: bool, overwrite: bool):
    """The checkpoint's arrays to continue from, or None to start fresh; enforces the rules:

    no file -> fresh.  overwrite=True and not resume -> fresh (the file is replaced at the first
    save).  resume=True -> continue it when it is this run (same fingerprint) and at a step
    <= `steps` (a finished run is extended); a file of another run is refused, or replaced with
    overwrite=True.  Neither flag -> refused: a rerun never silently discards a checkpoint.
    """
    path = Path(path)
    if not path.exists() or (overwrite and not resume):
        return None
    try:
        arrays = load(path)
    except ValueError:
        if overwrite:
            return None
        raise
    t = int(arrays["t"])
    if not resume:
        same = "this run" if arrays["fingerprint"] == fingerprint else "a different run"
        raise ValueError(f"checkpoint {path} already exists ({same}, at step {t} of "
                         f"{arrays['steps']}): pass resume=True (--resume) to continue it, "
                         "overwrite=True (--overwrite) to replace it, or give another path")
    if arrays["fingerprint"] != fingerprint:
        if overwrite:
            return None
        raise ValueError(f"checkpoint {path} belongs to a different run (other data, configs or "
                         "settings); pass overwrite=True to replace it, or give another path")
    if t > steps:
        raise ValueError(f"checkpoint {path} is at step {t}, beyond steps={steps}: give "
                         f"steps >= {t} to continue it")
    verb = "extending" if t == arrays["steps"] and steps > t else "resuming"
    print(f"gpulinear: {verb} {path} from step {t} (to step {steps})", file=sys.stderr)
    return arrays


def align_records(saved: dict, rec_steps: np.ndarray) -> tuple[np.ndarray, bool]:
    """(record steps, finished) for continuing the saved run under this call's schedule
    `rec_steps` (longer when a finished run is extended); the saved loss logs ("log", CUDA's
    "packed_log": (C, records)) are re-laid onto that schedule in place.

    A run that stopped at its target keeps its own records and is finished.  Otherwise the saved
    records made before step t must be a prefix of the new schedule; a record at t itself is
    made again on resume, or dropped when t is off the new schedule (a finished run whose steps
    were not a multiple of log_every, extended: one long run has no record there).
    """
    old = np.asarray(saved["rec_steps"])
    stopped = len(old) > 0 and old[-1] < saved["steps"]
    keep = 0
    while keep < min(len(old), len(rec_steps)) and old[keep] == rec_steps[keep]:
        keep += 1
    # records at steps < t were made and must carry over; the one at t (if any) is made again
    if keep < int(np.sum(old < int(saved["t"]))):
        raise ValueError("checkpoint records do not match this run's schedule (log_every)")
    for name in ("log", "packed_log"):
        if name in saved:
            log = saved[name]
            new = np.full(log.shape[:-1] + (len(rec_steps),), np.nan, dtype=log.dtype)
            new[..., :keep] = log[..., :keep]
            saved[name] = new
    return (old, True) if stopped else (np.asarray(rec_steps), False)


# -- one writer per checkpoint ----------------------------------------------------------------

class CheckpointLock:
    """`<checkpoint>.lock`, created exclusively and holding "host pid"; removed by release().

    A lock left by a process that is gone (same host, pid not running) is taken over; one held by
    a live process, or by another host (whose processes cannot be checked from here), is refused.
    """

    def __init__(self, path):
        self.path = Path(path).with_name(Path(path).name + ".lock")
        self.held = False
        self._acquire(retry=True)

    def _acquire(self, retry):
        me = f"{socket.gethostname()} {os.getpid()}"
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = self._owner()
            if retry and owner is not None and self._stale(*owner):
                self.path.unlink(missing_ok=True)
                return self._acquire(retry=False)
            who = "an unreadable owner" if owner is None else f"process {owner[1]} on {owner[0]}"
            raise CheckpointLocked(
                f"checkpoint {self.path.with_suffix('')} is in use by {who} (lock file "
                f"{self.path}); wait for it, give another path, or delete the lock file if that "
                "process is gone") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        self.held = True

    def _owner(self):
        try:
            host, pid = self.path.read_text().split()
            return host, int(pid)
        except (OSError, ValueError):
            return None

    @staticmethod
    def _stale(host, pid) -> bool:
        if host != socket.gethostname():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:      # alive, another user's
            return False
        return False

    def release(self):
        if self.held:
            self.held = False
            try:
                self.path.unlink(missing_ok=True)
            except OSError:          # its folder is gone or replaced: nothing left to release
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
