"""What would otherwise fail only at the first GPU contact, checked on a CPU: NVRTC (what CuPy's
RawModule compiles with) builds every kernels/*.cu from the loader's exact source and resolves
every name expression; numba-cuda compiles the update kernel to PTX for sm_90 (typing errors the
simulator does not check), and that PTX, exactly as emitted (its `.version` not rewritten), is
assembled for sm_90 without spills by nvJitLink (what numba-cuda links with where the driver is
older than the PTX) and by the ptxas on PATH where that ptxas reads its PTX ISA.  Needs the
NVRTC / libNVVM
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


@pytest.fixture(scope="module")
def numba_ptx():
    """[(label, PTX)] of the update kernel per dtype, as numba-cuda's NVVM really emits it for
    sm_90 (no rewriting of its `.version`); skips, saying why, where it cannot compile."""
    if SIM:
        pytest.skip("the CUDA simulator is on in this process: no PTX compiler")
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    import numba.cuda.dispatcher as numba_dispatcher
    from numba import cuda

    from gpulinear.cuda.update import kernel_signatures
    out = []
    with pytest.MonkeyPatch.context() as mp:
        # no driver here: compiling @cuda.jit device functions asks the current device only for
        # its compute capability; answer sm_90, the target below
        mp.setattr(numba_dispatcher, "get_current_device",
                   lambda: types.SimpleNamespace(compute_capability=(9, 0)))
        for label, fn, sig in kernel_signatures():
            try:
                ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
            except Exception as exc:
                text = str(exc)
                if "NVVM" in text or "nvrtc" in text.lower() or "driver" in text.lower():
                    pytest.skip(f"numba-cuda cannot compile PTX here: {type(exc).__name__}: "
                                f"{text}"[:300])
                raise
            out.append((label, ptx))
    return out


def ptx_version(ptx) -> tuple:
    return tuple(int(x) for x in re.search(r"^\.version (\d+)\.(\d+)", ptx, re.M).groups())


def spills(log):
    found = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return found, all(a == "0" and b == "0" for a, b in found)


def test_numba_update_kernel_uses_warp_shuffles(numba_ptx):
    """Outside the simulator the reductions are shfl.sync butterflies and the scratch ordering
    is bar.warp.sync: no block-wide barrier (bar.sync) is left in the update kernel."""
    for label, ptx in numba_ptx:
        assert ptx.count("shfl.sync.bfly") >= 10, label            # warp_sum, warp_prod, ...
        assert "bar.warp.sync" in ptx, label
        assert not re.search(r"\bbar\.sync\b|\bbarrier\.sync\b", ptx), label


def test_numba_update_kernel_links_with_nvjitlink_for_sm90(numba_ptx):
    """The PTX numba-cuda emits, as is, through nvJitLink (numba-cuda[cu13] installs it; numba
    links with it where the driver is older than that PTX): a cubin for sm_90, no spills."""
    try:
        from cuda.bindings import nvjitlink
    except Exception as exc:
        pytest.skip(f"nvJitLink bindings unavailable ({type(exc).__name__}: {exc}); "
                    "pip install 'numba-cuda[cu13]'")
    for label, ptx in numba_ptx:
        handle = nvjitlink.create(3, ["-arch=sm_90", "-verbose", "-Xptxas=-v"])
        try:
            data = ptx.encode()
            nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), label)
            try:
                nvjitlink.complete(handle)
            except Exception:
                log = bytearray(nvjitlink.get_error_log_size(handle))
                nvjitlink.get_error_log(handle, log)
                raise AssertionError(f"{label}: nvJitLink failed on PTX ISA "
                                     f"{ptx_version(ptx)}: {log.decode(errors='replace')}")
            log = bytearray(nvjitlink.get_info_log_size(handle))
            nvjitlink.get_info_log(handle, log)
            found, none = spills(log.decode(errors="replace"))
            assert found and none, (label, found)
            assert nvjitlink.get_linked_cubin_size(handle) > 0
        finally:
            nvjitlink.destroy(handle)


def ptxas_isa(ptxas) -> tuple:
    """The newest PTX ISA this ptxas reads, from its own refusal of a too-new one."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.ptx")
        with open(path, "w") as fh:
            fh.write(".version 99.0\n.target sm_90\n.address_size 64\n")
        proc = subprocess.run([ptxas, "-arch=sm_90", path, "-o", path + ".o"],
                              capture_output=True, text=True, timeout=60)
    m = re.search(r"current version is '(\d+)\.(\d+)'", proc.stdout + proc.stderr)
    return tuple(int(x) for x in m.groups()) if m else None


def test_numba_update_kernel_assembles_with_ptxas_on_path(numba_ptx, tmp_path):
    """The same PTX, unrewritten, through the ptxas on PATH (the CUDA toolkit's).  A ptxas
    older than the PTX ISA cannot read it: that is a fact about this machine's toolkit, not
    the kernel, so the test skips naming both versions (the nvJitLink test above assembles it)."""
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("ptxas not found (CUDA toolkit)")
    release = re.search(r"release (\S+),", subprocess.run([ptxas, "--version"],
                        capture_output=True, text=True).stdout)
    isa = ptxas_isa(ptxas)
    for label, ptx in numba_ptx:
        need = ptx_version(ptx)
        if isa is not None and need > isa:
            pytest.skip(f"ptxas {release.group(1) if release else '?'} on PATH reads PTX ISA up "
                        f"to {isa[0]}.{isa[1]}; numba-cuda's NVVM emits PTX ISA "
                        f"{need[0]}.{need[1]} (not rewritten); nvJitLink assembled it instead")
        path = tmp_path / f"{label}.ptx"
        path.write_text(ptx)
        proc = subprocess.run([ptxas, "-arch=sm_90", "-v", str(path), "-o",
                               str(path.with_suffix(".cubin"))], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        found, none = spills(proc.stderr)
        assert found and none, proc.stderr
