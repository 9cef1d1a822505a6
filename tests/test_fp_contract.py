"""One floating-point contract for the CUDA C kernels, whatever CuPy's compile flags.

CuPy compiles every RawModule with -ftz=true appended after the caller's options (so a
-ftz=false of ours would be overridden; see gpulinear/cuda/_loader.py, NVRTC_OPTIONS).  Under it
NVRTC emits .ftz float32 instructions, which flush denormals (|x| < 1.2e-38) to zero, while the
float64 twin and the g++ emulation do not.  The kernels therefore route their float32 arithmetic
through gl_fma / gl_widen / gl_narrow (kernels/gl_common.cuh).  Here NVRTC compiles every
kernels/*.cu with CuPy's exact options (_loader.cupy_nvrtc_options) to PTX, and every .ftz
instruction in it must be one of:
  - flag-independent: also emitted with -ftz=false (libdevice's rcp.approx.ftz.f64 seed), or
  - a compare / abs of a bit pattern moved from an integer register (libdevice's double-precision
    log2 / exp2 test the high word of a double as a float; flushing a pattern changes no value the
    kernel computes).
A probe kernel shows that the same options do flush plain float32 code, so the check can fail.
Also here, as the same NVRTC compile: the registers and spills of the cubin CuPy would load.
"""
import os
import re
import subprocess
import sys

import pytest

from gpulinear.cuda import _loader

CHILD = r"""
import json, sys
try:
    from cuda.bindings import nvrtc
    ok = nvrtc.nvrtcVersion()[0] == nvrtc.nvrtcResult.NVRTC_SUCCESS
except Exception as exc:
    print("UNAVAILABLE", type(exc).__name__, exc); sys.exit(0)
if not ok:
    print("UNAVAILABLE nvrtcVersion failed"); sys.exit(0)
S = nvrtc.nvrtcResult.NVRTC_SUCCESS
def ptx(src, opts):
    err, prog = nvrtc.nvrtcCreateProgram(src.encode(), b"k.cu", 0, [], [])
    assert err == S, err
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
    if err != S:
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = bytes(max(size, 2))        # a fresh buffer, never a shared bytes object
        nvrtc.nvrtcGetProgramLog(prog, log)
        raise SystemExit(f"NVRTC failed: {err}\n{log.decode(errors='replace')}")
    _, n = nvrtc.nvrtcGetPTXSize(prog)
    out = bytes(n)
    nvrtc.nvrtcGetPTX(prog, out)
    return out.decode().rstrip("\0")
src, opts_a, opts_b = json.loads(sys.stdin.read())
print(json.dumps([ptx(src, opts_a), ptx(src, opts_b)]))
"""

PROBE = 'extern "C" __global__ void probe(float* a) { a[0] = a[1] * a[2] + a[3]; }'


def compile_pair(src, flush_opts):
    """PTX of `src` under flush_opts, and under the same options with -ftz=false last."""
    import json
    plain = list(flush_opts) + ["-ftz=false"]
    proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps([src, flush_opts, plain]),
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    if proc.stdout.startswith("UNAVAILABLE"):
        pytest.skip(f"NVRTC is not available ({proc.stdout.strip()}); pip install 'numba-cuda[cu13]'")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def entries(ptx):
    """{entry name: body} of a PTX module."""
    parts = re.split(r"^\s*(?:\.visible\s+|\.weak\s+)?\.entry\s+", ptx, flags=re.M)[1:]
    return {p.split("(")[0].strip(): p for p in parts}


def flushing_instructions(body, flag_free):
    """The .ftz instructions of one entry that a -ftz flag can change values of (see module doc)."""
    patterns = set()                       # float registers that hold an integer's bit pattern
    bad = []
    for line in body.splitlines():
        ins = line.strip().rstrip(";")
        m = re.match(r"mov\.b32\s+(%f\d+),\s*%r\d+$", ins)
        if m:
            patterns.add(m.group(1))
            continue
        m = re.match(r"abs\.ftz\.f32\s+(%f\d+),\s*(%f\d+)$", ins)
        if m and m.group(2) in patterns:
            patterns.add(m.group(1))
            continue
        if ".ftz" not in ins or ins in flag_free:
            continue
        m = re.match(r"setp\.\w+\.ftz\.f32\s+%p\d+,\s*(%f\d+),\s*(%f\d+|0f[0-9A-F]{8})$", ins)
        if m and all(op in patterns or op.startswith("0f") for op in m.groups()):
            continue
        bad.append(ins)
    return bad


def test_cupy_options_flush_a_plain_float_kernel():
    """The yardstick can fail: with CuPy's options, plain float32 code flushes denormals."""
    opts = _loader.cupy_nvrtc_options("90", virtual=True)
    assert opts.index("-ftz=true") > max(opts.index(o) for o in _loader.NVRTC_OPTIONS)
    flushed, plain = compile_pair(PROBE, opts)
    assert ".ftz" not in plain
    assert [i.split()[0] for i in flushing_instructions(entries(flushed)["probe"], set())] == \
        ["fma.rn.ftz.f32"]


@pytest.mark.parametrize("name", _loader.kernel_names())
def test_kernels_do_not_depend_on_ftz(name):
    src = _loader.kernel_source(name)
    flushed, plain = compile_pair(src, _loader.cupy_nvrtc_options("90", virtual=True))
    got, ref = entries(flushed), entries(plain)
    # every entry point (gl_x<float> and gl_x<double> of each template) is checked
    assert len(got) == len(_loader.name_expressions(src)) and set(got) == set(ref), sorted(got)
    for entry, body in got.items():
        flag_free = {l.strip().rstrip(";") for l in ref[entry].splitlines() if ".ftz" in l}
        bad = flushing_instructions(body, flag_free)
        assert not bad, f"{entry}: {len(bad)} instructions flush under CuPy's -ftz=true: {bad[:8]}"


def test_cupy_still_appends_ftz_true():
    """CUPY_APPENDS mirrors the installed CuPy (skips where CuPy is not installed)."""
    compiler = pytest.importorskip("cupy.cuda.compiler")
    import inspect
    text = inspect.getsource(compiler)
    assert "options += ('-ftz=true',)" in text
    assert "'--device-as-default-execution-space'" in text


def test_check_catches_plain_float_arithmetic_in_the_kernel():
    """Writing the Z accumulation as plain `+= *` (what the kernel did before) is caught."""
    src = _loader.kernel_source("xpass.cu")
    target = "zw[a][b] = gl_fma(wv.v[e], xv[b].v[e], zw[a][b]);"
    assert src.count(target) == 1
    flushed, plain = compile_pair(src.replace(target, "zw[a][b] += wv.v[e] * xv[b].v[e];"),
                                  _loader.cupy_nvrtc_options("90", virtual=True))
    got, ref = entries(flushed), entries(plain)
    (fentry,) = [e for e in got if "gl_xpassIf" in e]
    flag_free = {l.strip().rstrip(";") for l in ref[fentry].splitlines() if ".ftz" in l}
    bad = flushing_instructions(got[fentry], flag_free)
    assert bad and all(b.startswith("fma.rn.ftz.f32") for b in bad), bad


RESOURCES_CHILD = r"""
import sys
try:
    from cuda.bindings import nvrtc
    ok = nvrtc.nvrtcVersion()[0] == nvrtc.nvrtcResult.NVRTC_SUCCESS
except Exception as exc:
    print("UNAVAILABLE", type(exc).__name__, exc); sys.exit(0)
from gpulinear.cuda import _loader
src = _loader.kernel_source("xpass.cu")
S = nvrtc.nvrtcResult.NVRTC_SUCCESS
err, prog = nvrtc.nvrtcCreateProgram(src.encode(), b"xpass.cu", 0, [], [])
for e in _loader.name_expressions(src):
    nvrtc.nvrtcAddNameExpression(prog, e.encode())
opts = [o.encode() for o in _loader.cupy_nvrtc_options("90") + ["-Xptxas=-v"]]
(err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
_, size = nvrtc.nvrtcGetProgramLogSize(prog)
log = bytes(max(size, 2))
nvrtc.nvrtcGetProgramLog(prog, log)
print(log.decode(errors="replace"))
sys.exit(0 if err == S else 1)
"""


def test_xpass_resources_as_cupy_compiles_it():
    """The cubin CuPy would load (NVRTC's own ptxas, CuPy's options, sm_90) has the registers
    gpulinear.cuda.xpass.REGISTERS records and spills nothing, like nvcc's
    (tests/test_kernels_nvcc.py): the planner's 4 blocks/SM hold for the kernel that runs."""
    from gpulinear.cuda import xpass
    from test_kernels_nvcc import parse_ptxas
    proc = subprocess.run([sys.executable, "-c", RESOURCES_CHILD], capture_output=True,
                          text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    if proc.stdout.startswith("UNAVAILABLE"):
        pytest.skip(f"NVRTC is not available ({proc.stdout.strip()})")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = parse_ptxas(proc.stdout)
    regs = {("float32" if "gl_xpassIf" in k else "float64"): r for k, r in report.items()
            if "gl_xpass" in k}
    assert regs.keys() == {"float32", "float64"}, proc.stdout[-2000:]
    for dt, r in regs.items():
        assert r["registers"] == xpass.REGISTERS[dt] and r["spill_stores"] == r["spill_loads"] == 0, \
            (dt, r)
