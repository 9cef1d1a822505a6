"""Checkpoint files of train(): written atomically, checked on reading, never lost.

A checkpoint is one .npz (never pickle) holding the run's arrays (the step's `state_arrays()`:
weights, optimizer state, loss log, ...; and the engine's "t" and "rec_steps") plus
    format        FORMAT, so a foreign .npz is recognised as such
    fingerprint   run_fingerprint(): the data, configs and settings it belongs to (not `steps`:
                  a finished run may be extended to more steps)
    steps         the steps the writing call was asked for
    content_hash  sha256 of every other array (name, dtype, shape, bytes): a flipped byte that
                  the zip CRC misses, or a member swapped in by hand, is found
It is written to a temporary file in the same folder, flushed to disk and renamed over the old one
(`atomic_write`, which Result.save uses too), so a reader, a kill -9, a full disk or a concurrent
writer sees the old checkpoint or the new one; temporaries are named after their writer (host,
pid), so the next write removes those of killed writes and leaves a live writer's alone.
`open_run` applies the rules a user relies on: resume continues (saying from which step), a
finished run extends to more steps, and an existing checkpoint is replaced only with
overwrite=True.  `CheckpointLock` refuses a second writer
(flock, or link(2) where the filesystem has no flock; see its docstring).
Every problem is one ValueError (or OSError / CheckpointLocked) naming the file and the fix.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

try:
    import fcntl
except ImportError:       # Windows: the link-mode lock
    fcntl = None

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
        # named like atomic_write's temporaries, so a probe left by a kill is cleaned up too
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=_temp_prefix(path),
                                         suffix=".tmp"):
            pass
    except OSError as exc:
        raise type(exc)(exc.errno, f"{what}: cannot write to {path.parent} "
                        f"({exc.strerror or exc}); give a writable path") from None
    return path


class NotWritten(OSError):
    """No write of a finished result succeeded, at its path nor at the fallback.  attempts:
    [(path, OSError)] in the order tried; result: the Result that could not be written (set by
    train(), which never discards finished work), else None."""

    def __init__(self, what, attempts, result=None):
        self.what, self.attempts, self.result = what, list(attempts), result
        tried = "; ".join(f"{p} ({_reason(p, e)})" for p, e in self.attempts)
        tail = (" - the Result is this exception's .result (save it elsewhere: "
                "exc.result.save(path))" if result is not None else "")
        first = self.attempts[0][1] if self.attempts else None
        super().__init__(getattr(first, "errno", None),
                         f"could not write the {what} anywhere: {tried}{tail}")


def _reason(path, exc) -> str:
    """The reason of an OSError without the path it names (NotWritten names it already)."""
    return (exc.strerror or str(exc)).removeprefix(f"cannot write {path}: ")


def _host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    """True unless no process has this pid (on this host)."""
    if pid <= 0:                         # 0 and negatives name process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:              # alive, another user's
        return True
    return True


def _temp_prefix(path: Path) -> str:
    # ".<name>.<host>.<pid>." then mkstemp's random part and ".tmp": the writer is named in the
    # file, so the next writer can tell a killed write's leftovers from a live concurrent one's
    return f".{path.name}.{_host()}.{os.getpid()}."


# Leftovers of a writer on another host are removed only when older than this: their pid cannot
# be checked from here, and no single write of ours takes a day.
FOREIGN_TEMP_AGE_S = 24 * 3600


def remove_stale_temps(path) -> list:
    """Delete the temporary files that killed writes to `path` left beside it (their writer,
    named in the file name, is no longer running on this host; another host's after
    FOREIGN_TEMP_AGE_S); a live concurrent writer's are kept.  Returns the paths removed."""
    path = Path(path)
    head, host, removed = f".{path.name}.", _host(), []
    legacy = f"{path.name}.tmp"           # "<name>.tmp<pid>": what gpulinear <= 0.1.0 wrote
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        name, pid, other_host = entry.name, None, False
        if name.startswith(head) and name.endswith(".tmp"):
            rest = name[len(head):-len(".tmp")]
            if rest.startswith(host + "."):
                pid = rest[len(host) + 1:].split(".", 1)[0]
            else:
                other_host = True
        elif name.startswith(legacy):
            pid = name[len(legacy):]
        else:
            continue
        try:
            if other_host:
                stale = time.time() - entry.stat(follow_symlinks=False).st_mtime \
                    > FOREIGN_TEMP_AGE_S
            else:
                stale = pid.isdigit() and not _pid_alive(int(pid))
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:                    # gone already, or not ours to remove: leave it
            pass
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (power loss); not every OS or filesystem allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write) -> None:
    """write(file object) into a fresh temporary file beside `path`, fsync it, rename it to
    `path`: a reader, a kill -9, a full disk or a concurrent writer sees the old file or the new
    one, never a mix.  Leftovers of killed writes to `path` are removed first.  An OSError names
    `path` and the reason ("[Errno 28] cannot write runs/x.npz: No space left on device")."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as exc:
        if str(path) in str(exc):
            raise
        raise type(exc)(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


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
    Returns the path written.  If the fallback fails too, NotWritten (an OSError) names both
    paths and both reasons; train() attaches the Result to it, so nothing finished is lost."""
    try:
        write(path)
        return Path(path)
    except OSError as exc:
        rescue = fallback_path(path)
        try:
            write(rescue)
        except OSError as exc2:
            raise NotWritten(what, [(Path(path), exc), (rescue, exc2)]) from None
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


def checkpoint_exists(path) -> bool:
    """Whether there is a checkpoint to resume at `path`: the file, or the chunk files of a grid
    that ran in chunks (gpulinear.engine.chunk_checkpoint)."""
    p = Path(path)
    if p.exists():
        return True
    head = f"{p.stem}.configs-"
    try:
        return any(f.name.startswith(head) and f.name.endswith(p.suffix)
                   for f in p.parent.iterdir())
    except OSError:
        return False


def open_run(path, fingerprint: str, steps: int, resume: bool, overwrite: bool):
    """The checkpoint's arrays to continue from, or None to start fresh; enforces the rules:

    no file -> fresh.  overwrite=True and not resume -> fresh (the file is replaced at the first
    save).  resume=True -> continue it when it is this run (same fingerprint) and at a step
    <= `steps` (a finished run is extended); a file of another run is refused, or replaced with
    overwrite=True.  Neither flag -> refused: a rerun never silently discards a checkpoint.
    """
    path = Path(path)
    if resume and not path.exists():
        print(f"gpulinear: no checkpoint at {path} yet: starting from step 0", file=sys.stderr)
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

# "flock": fcntl.flock on <checkpoint>.lock (the kernel, or the NFS server, drops it when its
# holder dies, kill -9 included); "link": the lock file is created with its content in one step
# (link(2) of a written temp file) and a dead holder's is taken over by rename.  Where flock is
# refused (ENOLCK, EOPNOTSUPP: some FUSE / NFSv3 mounts without lockd) "link" is used.
LOCK_MODE = "flock"
# A lock file without a readable owner record is a dead writer's leftover (killed or out of space
# between creating and writing it) once it is older than this; a live writer fills it at once.
EMPTY_LOCK_AGE_S = 30.0


def _start_time(pid):
    """The start time of process `pid` (clock ticks since boot, /proc/<pid>/stat field 22), or
    None where unknown: with the pid, it tells a process from a later one that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _owner_record() -> str:
    """'host pid start-ticks iso-time token': who holds a lock, checkable (host, pid, start) and
    readable (the time); the random token makes each holding unique."""
    pid = os.getpid()
    return (f"{_host()} {pid} {_start_time(pid) or 0} "
            f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {os.urandom(8).hex()}\n")


def _parse_owner(text):
    """(host, pid, start or None, since or None) from an owner record, or None if unreadable
    (also the "host pid" records of gpulinear <= 0.1.0)."""
    parts = text.split()
    try:
        host, pid = parts[0], int(parts[1])
        start = int(parts[2]) if len(parts) > 2 else None
    except (IndexError, ValueError):
        return None
    return host, pid, start or None, parts[3] if len(parts) > 3 else None


def _owner_gone(owner) -> bool:
    """True when the owner record names a process of this host that no longer runs (or whose
    pid now belongs to a later process); another host's owner is never judged from here."""
    host, pid, start, _ = owner
    if host != _host():
        return False
    if not _pid_alive(pid):
        return True
    now = _start_time(pid)
    return start is not None and now is not None and now != start


class CheckpointLock:
    """One writer per checkpoint: `<checkpoint>.lock`, holding the owner's host, pid and start
    time.  Raises CheckpointLocked when a live process holds it.

    LOCK_MODE "flock" (default): the lock is fcntl.flock on the file, which the kernel (or the
    NFS server) releases when the holder dies, so a dead holder's lock, an empty or unreadable
    lock file included, is taken at once.  "link" (the fallback where flock is refused): the
    lock file appears with its content in one link(2); a lock whose owner is gone (same host, pid
    not running or reused) or that stayed empty for EMPTY_LOCK_AGE_S is moved aside by one rename
    (of several racing takers, exactly one succeeds) and the taker checks it moved the file it
    judged.  release() removes the lock only if it is still this holder's.  A lock held on
    another host is refused with how to take it over (break_lock), never judged from here.
    """

    def __init__(self, path):
        self.checkpoint = Path(path)
        self.path = Path(path).with_name(Path(path).name + ".lock")
        self.held = False
        self.mode = None
        self._fd = None
        self._ident = None
        self._record = None
        if LOCK_MODE == "flock" and fcntl is not None:
            self._acquire_flock()
        else:
            self._acquire_link()

    # -- flock ----------------------------------------------------------------------------
    def _acquire_flock(self):
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refusal() from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    return self._acquire_link()       # this filesystem has no flock
                raise
            # a holder releasing removes the file while it holds it: the file locked here must
            # still be the one at the path, else it is an orphan and the next open finds the new
            mine = os.fstat(fd)
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)
                continue
            self._record = _owner_record()
            try:          # the record is for messages only: the lock holds without it
                os.ftruncate(fd, 0)
                os.pwrite(fd, self._record.encode(), 0)
            except OSError:
                pass
            self._fd, self._ident, self.held, self.mode = fd, (mine.st_dev, mine.st_ino), True, \
                "flock"
            return
        raise CheckpointLocked(f"could not lock {self.path}: it keeps being replaced")

    # -- link (fallback) --------------------------------------------------------------------
    def _acquire_link(self):
        self.mode = "link"
        record = _owner_record()
        remove_stale_temps(self.path)                 # record files of killed takers
        for _ in range(100):
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=_temp_prefix(self.path),
                                       suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(record)
                    fh.flush()
                    os.fsync(fh.fileno())
                try:
                    os.link(tmp, self.path)           # atomic: fails if any lock exists
                    self._record, self.held = record, True
                    return
                except FileExistsError:
                    pass
                except OSError as exc:   # no hard links here (some FUSE / SMB mounts)
                    if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS,
                                         errno.EXDEV):
                        raise
                    if self._create_exclusive(record):
                        return
            finally:
                os.unlink(tmp)
            text, age = self._read()
            if text is None:                          # gone meanwhile: try again
                continue
            owner = _parse_owner(text)
            stale = (age > EMPTY_LOCK_AGE_S) if owner is None else _owner_gone(owner)
            if not stale:
                raise self._refusal(text)
            self._take_aside(text)                   # then try again to create it
        raise CheckpointLocked(f"could not lock {self.path}: it keeps being replaced")

    def _create_exclusive(self, record) -> bool:
        """O_EXCL create, then write the record: where link(2) is refused.  Between the two a
        reader sees an empty lock, which counts as live for EMPTY_LOCK_AGE_S."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(record)
        self._record, self.held = record, True
        return True

    def _read(self):
        """(the lock file's text, its age in seconds), or (None, 0) when it is gone."""
        try:
            with open(self.path, "rb") as fh:
                age = time.time() - os.fstat(fh.fileno()).st_mtime
                return fh.read(4096).decode("utf-8", "replace"), age
        except FileNotFoundError:
            return None, 0.0

    def _take_aside(self, expected) -> bool:
        """Move the lock file aside if it still holds `expected`; True if it did.  The rename is
        atomic, so of several processes only one moves a given file; if what it moved is not
        what it judged (another process replaced it in between), it is put back."""
        aside = self.path.with_name(f".{self.path.name}.{_host()}.{os.getpid()}."
                                    f"{os.urandom(4).hex()}.tmp")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            moved = aside.read_text(errors="replace")
        except OSError:
            moved = None
        if moved != expected:
            try:
                os.link(aside, self.path)             # put back, unless a newer lock exists
            except FileExistsError:
                pass
            except OSError:                           # no hard links: rename it back
                if not self.path.exists():
                    os.rename(aside, self.path)
                    return False
        os.unlink(aside)
        return moved == expected

    # -- both ---------------------------------------------------------------------------------
    def _refusal(self, text=None) -> CheckpointLocked:
        if text is None:
            text, _ = self._read()
        owner = _parse_owner(text or "")
        if owner is None:
            who = "a process that left no owner record"
        else:
            host, pid, _, since = owner
            who = f"process {pid} on {host}" + (f" (since {since})" if since else "")
            if host != _host():
                who += (" - another machine, so this one cannot check whether it still runs")
        return CheckpointLocked(
            f"checkpoint {self.checkpoint} is in use by {who} (lock file {self.path}); wait for "
            "it or give another path. Only if that process is gone for good (its job or machine "
            "was lost), take the lock over with --break-lock (gpulinear.checkpoint.break_lock"
            f"({str(self.checkpoint)!r})): two live writers would overwrite each other's "
            "checkpoints")

    def still_held(self) -> bool:
        """Whether the lock file at the path is still this holder's (not broken by another)."""
        if not self.held:
            return False
        if self.mode == "flock":
            try:
                now = os.stat(self.path)
            except OSError:
                return False
            return (now.st_dev, now.st_ino) == self._ident
        return self._read()[0] == self._record

    def release(self):
        """Remove the lock, if it is still this holder's (a lock broken and taken by another
        process since is left alone)."""
        if not self.held:
            return
        self.held = False
        try:
            if self.mode == "flock":
                try:
                    now = os.stat(self.path)
                    if (now.st_dev, now.st_ino) == self._ident:
                        os.unlink(self.path)          # while still holding it: see _acquire
                except OSError:   # its folder is gone or replaced: nothing left to release
                    pass
            else:
                try:
                    self._take_aside(self._record)
                except OSError:
                    pass
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def break_lock(path):
    """Remove `path`'s lock file whoever holds it; returns the owner record removed (or None).
    For a lock held by a process that is known to be gone but cannot be checked from here (it
    ran on another machine).  A live holder keeps running unaware, so be sure it is gone."""
    lock = Path(path).with_name(Path(path).name + ".lock")
    try:
        text = lock.read_text(errors="replace")
        lock.unlink()
    except FileNotFoundError:
        return None
    return text.strip() or None
