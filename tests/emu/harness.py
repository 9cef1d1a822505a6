"""Build a kernels/*.cu source with g++ against cuda_emu.h and run gl_xpass on the CPU.

Three builds of the same driver (driver.cpp), each a standalone executable run as a subprocess
on raw binary files (the sanitizers need their runtime from program start):
  "tsan"  ThreadSanitizer: TSAN_OPTIONS="halt_on_error=1 exitcode=66" turns the first data race
          into exit code 66 (a missing barrier);
  "asan"  AddressSanitizer + UBSan: any scalar access past a global buffer or the block's shared
          memory exits with 69 (the guard zones are replaced by ASan's own);
  "plain" no sanitizer (-O2): the emulation's own checks only, several times faster to build
          and run; used where no race is being looked for.
In every build the emulation's checks (misaligned / out-of-bounds vector access, divergent or
hung barrier, cp.async never waited for: exit 67) and the driver's guard zones (exit 68) apply.
Builds are cached per (source hash, dtype, mode) in one temporary directory per process.
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
FAULT_EXIT = 67          # cuda_emu.h: emu::fault
GUARD_EXIT = 68          # driver.cpp: a guard zone was written
ASAN_EXIT = 69
MODES = {
    "tsan": ["-fsanitize=thread", "-O1", "-g"],
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-O1",
             "-DEMU_ASAN"],
    "plain": ["-O2"],
}


class RunResult:
    def __init__(self, returncode, stderr, Gpart=None, Lpart=None, clock=None):
        self.returncode, self.stderr = returncode, stderr
        self.Gpart, self.Lpart, self.clock = Gpart, Lpart, clock

    @property
    def race(self):
        return self.returncode == TSAN_EXIT or "ThreadSanitizer" in self.stderr

    @property
    def fault(self):
        """An emulated hardware fault: bad vector access, divergent barrier, guard zone hit."""
        return self.returncode in (FAULT_EXIT, GUARD_EXIT) and "EMU FAULT" in self.stderr

    @property
    def asan(self):
        return self.returncode == ASAN_EXIT and "AddressSanitizer" in self.stderr or \
            "runtime error:" in self.stderr


@functools.lru_cache(maxsize=1)
def _build_dir() -> pathlib.Path:
    return pathlib.Path(tempfile.mkdtemp(prefix="gpulinear-emu-"))


@functools.lru_cache(maxsize=None)
def build(source: str, dtype: str, mode: str = "tsan") -> pathlib.Path:
    """The driver executable for `source` (a kernel file with its headers inlined, as the loader
    makes it), dtype and mode (see the module docstring); compiled once per (source, dtype, mode)."""
    if GXX is None:
        raise RuntimeError("g++ not found")
    header = (HERE / "cuda_emu.h").read_text()
    driver = (HERE / "driver.cpp").read_text()
    key = hashlib.sha256("\0".join((source, header, driver, dtype, mode)).encode()).hexdigest()[:16]
    out = _build_dir() / f"xpass-{key}-{dtype}-{mode}"
    if out.exists():
        return out
    src = _build_dir() / f"xpass-{key}.cu.inc"
    src.write_text(source)
    cmd = [GXX, "-std=c++17", "-x", "c++", *MODES[mode], "-pthread", "-fno-strict-aliasing",
           "-Wall", "-Wno-unused-function", "-Wno-unused-variable", f"-I{HERE}",
           f"-DEMU_T={CTYPE[dtype]}", f'-DXPASS_SOURCE="{src}"', str(HERE / "driver.cpp"),
           "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"g++ failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return out


@functools.lru_cache(maxsize=None)
def build_selftest() -> pathlib.Path:
    """tests/emu/selftest.cpp (the emulator's own rule-breaking scenarios), built plain."""
    if GXX is None:
        raise RuntimeError("g++ not found")
    out = _build_dir() / "selftest"
    cmd = [GXX, "-std=c++17", "-O1", "-pthread", "-Wall", "-Wno-unused-function", f"-I{HERE}",
           str(HERE / "selftest.cpp"), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"g++ failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return out


def run_xpass(exe, plan, W, X, Yt, prow, Gpart, use_clock=True, clock0=0, timeout=300,
              concurrency=2, seed=1):
    """Run one gl_xpass launch of `plan` in the emulator; inputs as for launch_xpass (NumPy).
    `concurrency` blocks run at once, in an order shuffled by `seed` (0: in grid order).
    Returns a RunResult with the outputs (None if the run failed)."""
    dt = np.dtype(plan.dtype)
    with tempfile.TemporaryDirectory(dir=_build_dir()) as d:
        d = pathlib.Path(d)
        for name, a in (("W", W), ("X", X), ("Yt", Yt), ("prow", prow), ("Gpart", Gpart)):
            np.ascontiguousarray(a, dtype=dt).tofile(d / f"{name}.bin")
        np.array([clock0], dtype=np.int64).tofile(d / "clock.bin")
        params = (plan.R, plan.m, plan.d, plan.k, plan.m_per_split, plan.splits, plan.ldw,
                  plan.ldx, plan.ldg, *plan.grid, plan.block[0], int(use_clock),
                  plan.shared_bytes, concurrency, seed)
        (d / "params.txt").write_text(" ".join(str(int(v)) for v in params))
        env = dict(os.environ, TSAN_OPTIONS=f"halt_on_error=1 exitcode={TSAN_EXIT} "
                                            "report_signal_unsafe=0",
                   ASAN_OPTIONS=f"exitcode={ASAN_EXIT} detect_leaks=0",
                   UBSAN_OPTIONS=f"halt_on_error=1 exitcode={ASAN_EXIT} print_stacktrace=1")
        proc = subprocess.run([str(exe), str(d)], capture_output=True, text=True, env=env,
                              timeout=timeout)
        if proc.returncode != 0:
            return RunResult(proc.returncode, proc.stderr)
        S, R = plan.splits, plan.R
        return RunResult(0, proc.stderr,
                         np.fromfile(d / "Gpart.bin", dtype=dt).reshape(S, R, plan.ldg),
                         np.fromfile(d / "Lpart.bin", dtype=dt).reshape(S, R),
                         int(np.fromfile(d / "clock.bin", dtype=np.int64)[0]))
