"""What would otherwise fail only at the first GPU contact, checked on a CPU: NVRTC (what CuPy's
RawModule compiles with) builds every kernels/*.cu from the loader's exact source and resolves
every name expression; numba-cuda compiles the update kernel to PTX for sm_90 (typing errors the
simulator does not check) and ptxas assembles it without spills.  Needs the NVRTC / libNVVM
wheels (numba-cuda's `cu13` extra, in the test extra); skips, saying so, without them."""
import os
import re
import shutil
import subprocess
import sys
import types

import pytest

from gpulinear.cuda import _loader

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


# Run in a child process, so that nothing NVRTC does can leak into other tests.  (A log buffer
# made as b" " * size is, for an empty log (size 1), CPython's shared one-byte object: NVRTC
# wrote its NUL into it and broke every later b" " of the process, torch.load included.)
NVRTC_CHILD = r"""
import sys
try:
    from cuda.bindings import nvrtc
    ok = nvrtc.nvrtcVersion()[0] == nvrtc.nvrtcResult.NVRTC_SUCCESS   # (result, major, minor)
except Exception as exc:              # no cuda-bindings, or libnvrtc not found
    print(f"UNAVAILABLE {type(exc).__name__}: {exc}")
    sys.exit(0)
if not ok:
    print("UNAVAILABLE nvrtcVersion failed")
    sys.exit(0)
from gpulinear.cuda import _loader
name = sys.argv[1]
src = _loader.kernel_source(name)
exprs = _loader.name_expressions(src)
S = nvrtc.nvrtcResult.NVRTC_SUCCESS
err, prog = nvrtc.nvrtcCreateProgram(src.encode(), name.encode(), 0, [], [])
assert err == S, err
for e in exprs:
    assert nvrtc.nvrtcAddNameExpression(prog, e.encode())[0] == S, e
# exactly what CuPy passes for a RawModule on an sm_90 GPU (loader's options, then CuPy's
# -ftz=true, -arch=sm_90 and --device-as-default-execution-space): a cubin, so ptxas runs too
opts = [o.encode() for o in _loader.cupy_nvrtc_options("90")]
(err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
if err != S:
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = bytes(max(size, 2))             # a fresh buffer: never a shared bytes object
    nvrtc.nvrtcGetProgramLog(prog, log)
    raise SystemExit(f"NVRTC failed: {err}\n{log.decode(errors='replace')}")
for e in exprs:
    err, lowered = nvrtc.nvrtcGetLoweredName(prog, e.encode())
    assert err == S and lowered, e
    print("OK", e, lowered.decode())
"""


@pytest.mark.parametrize("name", _loader.kernel_names())
def test_nvrtc_compiles_every_kernel_as_cupy_would(name):
    proc = subprocess.run([sys.executable, "-c", NVRTC_CHILD, name], capture_output=True,
                          text=True, timeout=300)
    if proc.stdout.startswith("UNAVAILABLE"):
        pytest.skip(f"NVRTC is not available ({proc.stdout[12:].strip()}); "
                    "pip install 'numba-cuda[cu13]'")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    src = _loader.kernel_source(name)
    assert proc.stdout.count("OK ") == len(_loader.name_expressions(src))


@pytest.mark.skipif(SIM, reason="the CUDA simulator is on in this process: no PTX compiler")
def test_numba_update_kernel_compiles_for_sm90_without_spills(tmp_path, monkeypatch):
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    import numba.cuda.dispatcher as numba_dispatcher
    from numba import cuda

    from gpulinear.cuda.update import kernel_signatures
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("ptxas not found (CUDA toolkit)")
    # no driver here: compiling @cuda.jit device functions asks the current device only for its
    # compute capability; answer sm_90, the target below
    monkeypatch.setattr(numba_dispatcher, "get_current_device",
                        lambda: types.SimpleNamespace(compute_capability=(9, 0)))
    for label, fn, sig in kernel_signatures():
        try:
            ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
        except Exception as exc:
            if "NVVM" in str(exc) or "nvrtc" in str(exc).lower() or "driver" in str(exc).lower():
                pytest.skip(f"numba-cuda cannot compile PTX here: {type(exc).__name__}: {exc}"[:300])
            raise
        probe = subprocess.run([ptxas, "--version"], capture_output=True, text=True)
        # numba-cuda's NVVM may write a newer PTX ISA than this ptxas reads; the kernel uses
        # nothing newer than the ISA ptxas knows (benchmarks/static_evidence.py does the same)
        isa = {"13.0": "9.0"}.get(re.search(r"release (\d+\.\d+)", probe.stdout).group(1))
        if isa:
            ptx = re.sub(r"^\.version \d+\.\d+", f".version {isa}", ptx, count=1, flags=re.M)
        path = tmp_path / f"{label}.ptx"
        path.write_text(ptx)
        proc = subprocess.run([ptxas, "-arch=sm_90", "-v", str(path), "-o",
                               str(path.with_suffix(".cubin"))], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", proc.stderr)
        assert spills and all(a == "0" and b == "0" for a, b in spills), proc.stderr
