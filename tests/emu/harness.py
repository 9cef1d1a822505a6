"""Build a kernels/*.cu source with g++ against cuda_emu.h (ThreadSanitizer on) and run gl_xpass.

TSan needs its runtime from program start, so each build is a standalone executable (driver.cpp)
run as a subprocess on raw binary files; TSAN_OPTIONS="halt_on_error=1 exitcode=66" turns the
first data race into exit code 66.  Builds are cached per (source hash, dtype) in one temporary
directory per process.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
GXX = shutil.which("g++")
CTYPE = {"float32": "float", "float64": "double"}
TSAN_EXIT = 66


class RunResult:
    def __init__(self, returncode, stderr, Gpart=None, Lpart=None, clock=None):
        self.returncode, self.stderr = returncode, stderr
        self.Gpart, self.Lpart, self.clock = Gpart, Lpart, clock

    @property
    def race(self):
        return self.returncode == TSAN_EXIT or "ThreadSanitizer" in self.stderr


@functools.lru_cache(maxsize=1)
def _build_dir() -> pathlib.Path:
    return pathlib.Path(tempfile.mkdtemp(prefix="gpulinear-emu-"))


@functools.lru_cache(maxsize=None)
def build(source: str, dtype: str) -> pathlib.Path:
    """The TSan-instrumented driver executable for `source` (a kernel file with its headers
    inlined, as the loader makes it) and dtype; compiled once per (source, dtype)."""
    if GXX is None:
        raise RuntimeError("g++ not found")
    header = (HERE / "cuda_emu.h").read_text()
    driver = (HERE / "driver.cpp").read_text()
    key = hashlib.sha256("\0".join((source, header, driver, dtype)).encode()).hexdigest()[:16]
    out = _build_dir() / f"xpass-{key}-{dtype}"
    if out.exists():
        return out
    src = _build_dir() / f"xpass-{key}.cu.inc"
    src.write_text(source)
    cmd = [GXX, "-std=c++17", "-x", "c++", "-fsanitize=thread", "-O1", "-g", "-pthread",
           "-fno-strict-aliasing", "-Wall", "-Wno-unused-function", f"-I{HERE}",
           f"-DEMU_T={CTYPE[dtype]}", f'-DXPASS_SOURCE="{src}"', str(HERE / "driver.cpp"),
           "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"g++ failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return out


def run_xpass(exe, plan, W, X, Yt, prow, Gpart, use_clock=True, clock0=0, timeout=300):
    """Run one gl_xpass launch of `plan` in the emulator; inputs as for launch_xpass (NumPy).
    Returns a RunResult with the outputs (None if the run failed)."""
    dt = np.dtype(plan.dtype)
    with tempfile.TemporaryDirectory(dir=_build_dir()) as d:
        d = pathlib.Path(d)
        for name, a in (("W", W), ("X", X), ("Yt", Yt), ("prow", prow), ("Gpart", Gpart)):
            np.ascontiguousarray(a, dtype=dt).tofile(d / f"{name}.bin")
        np.array([clock0], dtype=np.int64).tofile(d / "clock.bin")
        params = (plan.R, plan.m, plan.d, plan.k, plan.m_per_split, plan.splits, plan.ldw,
                  plan.ldx, plan.ldg, *plan.grid, plan.block[0], int(use_clock))
        (d / "params.txt").write_text(" ".join(str(int(v)) for v in params))
        env = dict(os.environ, TSAN_OPTIONS=f"halt_on_error=1 exitcode={TSAN_EXIT} "
                                            "report_signal_unsafe=0")
        proc = subprocess.run([str(exe), str(d)], capture_output=True, text=True, env=env,
                              timeout=timeout)
        if proc.returncode != 0:
            return RunResult(proc.returncode, proc.stderr)
        S, R = plan.splits, plan.R
        return RunResult(0, proc.stderr,
                         np.fromfile(d / "Gpart.bin", dtype=dt).reshape(S, R, plan.ldg),
                         np.fromfile(d / "Lpart.bin", dtype=dt).reshape(S, R),
                         int(np.fromfile(d / "clock.bin", dtype=np.int64)[0]))
