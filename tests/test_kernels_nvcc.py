"""Every kernels/*.cu compiles for sm_90 with nvcc, warnings as errors, and spills nothing.

The source compiled is the loader's (headers inlined), i.e. exactly what CuPy hands NVRTC.
ptxas's resource report (registers, spills per kernel) is printed;
benchmarks/static_evidence.py turns the same report (and the SASS) into RESULTS.md tables.
"""
import os
import re
import shutil
import subprocess

import pytest

from gpulinear.cuda import _loader

ARCH = "sm_90"
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc"
                                if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (install the CUDA toolkit "
                                                     "or put nvcc on PATH)")


def parse_ptxas(text):
    """{kernel: {"registers": int, "spill_stores": int, "spill_loads": int, "stack": int}} from
    `ptxas -v` output; spills of functions a kernel calls are charged to that kernel."""
    out, current = {}, None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            current = m.group(1)
            out[current] = {"registers": None, "spill_stores": 0, "spill_loads": 0, "stack": 0}
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                      line)
        if m:
            rec = out[current]
            rec["stack"] = max(rec["stack"], int(m.group(1)))
            rec["spill_stores"] += int(m.group(2))
            rec["spill_loads"] += int(m.group(3))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[current]["registers"] = int(m.group(1))
    return out


def demangle(names):
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool:
        return {n: n for n in names}
    res = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    lines = res.stdout.splitlines()
    return dict(zip(names, lines)) if len(lines) == len(names) else {n: n for n in names}


def short(name):
    """gl_opt_adam<double>(long long, ...) -> gl_opt_adam<double>; Numba's mangling -> fused."""
    if "fused" in name and "kernel" in name:
        return "fused._width1_steps<" + ("double" if "ArrayIdLi" in name else "float") + ">"
    return name.split("(")[0].replace("void ", "")


def compile_cu(name, tmp_path):
    """(returncode, nvcc output, parsed report) for kernels/<name> compiled to a cubin."""
    src = tmp_path / name
    src.write_text(_loader.kernel_source(name))
    cmd = [NVCC, f"-arch={ARCH}", "-Werror", "all-warnings", "-Xptxas", "-v", "--cubin",
           "-o", str(tmp_path / (name + ".cubin")), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    return proc.returncode, text, parse_ptxas(text)


@needs_nvcc
@pytest.mark.parametrize("name", _loader.kernel_names())
def test_compiles_without_warnings_or_spills(name, tmp_path):
    rc, text, report = compile_cu(name, tmp_path)
    assert rc == 0, text
    assert report, f"ptxas reported no entry function for {name}:\n{text}"
    names = demangle(list(report))
    for mangled, rec in report.items():
        print(f"{short(names[mangled])}: {rec['registers']} registers, "
              f"{rec['spill_stores']}/{rec['spill_loads']} bytes spill stores/loads")
        assert rec["spill_stores"] == 0 and rec["spill_loads"] == 0, (names[mangled], rec)
    # --ptx too: what NVRTC emits for a driver newer than the toolkit
    proc = subprocess.run([NVCC, f"-arch={ARCH}", "-Werror", "all-warnings", "--ptx", "-o",
                           str(tmp_path / (name + ".ptx")), str(tmp_path / name)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr



@needs_nvcc
def test_xpass_registers_and_occupancy_are_what_the_planner_assumes(tmp_path):
    """gpulinear.cuda.xpass.REGISTERS is what ptxas measures for sm_90 (the command: compile_cu,
    i.e. `nvcc -arch=sm_90 -Xptxas -v --cubin` on the loader's source), and with them and the
    block's shared memory the occupancy calculator gives the blocks per SM that
    __launch_bounds__ plans for (MIN_BLOCKS): the splits plan_xpass picks rest on these."""
    from gpulinear.cuda import xpass
    rc, text, report = compile_cu("xpass.cu", tmp_path)
    assert rc == 0, text
    names = demangle(list(report))
    got = {short(names[k]): rec["registers"] for k, rec in report.items()}
    for dt, ctype in (("float32", "float"), ("float64", "double")):
        regs = got[f"gl_xpass<{ctype}>"]
        print(f"gl_xpass<{ctype}>: {regs} registers, {xpass.shared_bytes(dt)} B shared, "
              f"{xpass.blocks_per_sm(regs, xpass.shared_bytes(dt))} blocks/SM")
        assert regs == xpass.REGISTERS[dt], (dt, regs)
        assert xpass.blocks_per_sm(regs, xpass.shared_bytes(dt)) == xpass.MIN_BLOCKS[dt]
