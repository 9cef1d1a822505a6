"""Host-side bookkeeping of the CUDA backend, on the CPU: kernel sources (source tree and wheel),
header inlining, entry discovery, memory estimate and chunk planner, import hygiene and
device_info without a GPU."""
import math
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import gpulinear as gl
from gpulinear import cuda as glc
from gpulinear.cuda import _loader

REPO = pathlib.Path(__file__).resolve().parents[1]


# ---- kernel sources ---------------------------------------------------------------------------

def test_loader_finds_sources_in_source_tree():
    folder = _loader.kernel_dir()
    assert pathlib.Path(str(folder)).resolve() == (REPO / "kernels").resolve()
    names = _loader.kernel_names()
    assert "xpass.cu" in names
    for name in names:
        src = _loader.kernel_source(name)
        assert '#include "' not in src, f"{name}: a local include was not inlined"
        assert "gl_block_sum" in src                      # gl_common.cuh was inlined
        assert _loader.name_expressions(src), f"{name} defines no gl_* entry point"


def test_entry_points_and_name_expressions():
    src = _loader.kernel_source("xpass.cu")
    templated, plain = _loader.entry_points(src)
    assert templated == ["gl_xpass"] and plain == []
    assert _loader.name_expressions(src) == ["gl_xpass<float>", "gl_xpass<double>"]


def test_header_inlining(tmp_path):
    (tmp_path / "a.cuh").write_text('#pragma once\n#include "b.cuh"\nint a;\n')
    (tmp_path / "b.cuh").write_text("#pragma once\nint b;\n")
    text = '#include "a.cuh"\n#include "b.cuh"\n#include <cstdio>\nint main;\n'
    out = _loader.inline_headers(text, tmp_path)
    assert out.count("int a;") == 1 and out.count("int b;") == 1   # each header once
    assert out.index("int b;") < out.index("int a;")               # nested first
    assert "#include <cstdio>" in out and "pragma once" not in out
    with pytest.raises(FileNotFoundError, match="missing.cuh"):
        _loader.inline_headers('#include "missing.cuh"\n', tmp_path)


def test_kernel_source_unknown_name():
    with pytest.raises(FileNotFoundError, match="nope.cu"):
        _loader.kernel_source("nope.cu")


def test_loader_finds_sources_in_installed_wheel(tmp_path):
    pytest.importorskip("hatchling", reason="hatchling is not installed: cannot build the wheel "
                                            "offline (pip install hatchling)")
    tomllib = pytest.importorskip("tomllib", reason="needs Python >= 3.11 to read pyproject")
    src = tmp_path / "src"
    src.mkdir()
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    forced = meta["tool"]["hatch"]["build"]["targets"]["wheel"].get("force-include", {})
    assert forced.get("kernels") == "gpulinear/_kernels", "pyproject no longer ships kernels/"
    for item in ("pyproject.toml", "README.md", "gpulinear", *forced):
        if (REPO / item).is_dir():
            shutil.copytree(REPO / item, src / item,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif (REPO / item).exists():
            shutil.copy(REPO / item, src / item)
    if not (src / "README.md").exists():
        (src / "README.md").write_text("gpulinear\n")       # hatchling needs the readme
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-w", str(tmp_path / "whl"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheel, = (tmp_path / "whl").glob("gpulinear-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for k in ("xpass.cu", "gl_common.cuh"):
        assert f"gpulinear/_kernels/{k}" in names, f"{k} is not in the wheel: {names}"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import pathlib, gpulinear.cuda._loader as L; d = L.kernel_dir(); "
            "print(d); assert 'site' in str(d) and '_kernels' in str(d), d; "
            "assert 'gl_block_sum' in L.kernel_source('xpass.cu'); print(L.kernel_names())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "xpass.cu" in proc.stdout


# ---- import hygiene -----------------------------------------------------------------------------

def test_import_does_not_pull_cupy_or_numba():
    code = ("import sys, gpulinear, gpulinear.cuda, gpulinear.cuda.xpass, gpulinear.cuda.layout, "
            "gpulinear.cuda.update, gpulinear.cuda.step, gpulinear.cuda.launch; "
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'cupy', 'numba', 'cupyx'}); "
            "print(bad); assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- memory estimate and chunks -----------------------------------------------------------------

def test_memory_per_config_formula():
    # depth 1, k = 1: P = d; no state; prefix d; elems = 3P + P + P + 2d + 3m + 1
    d, m = 128, 2565
    got = glc.memory_per_config(1, (), 1, d, m, "float64", "gd")
    assert got == (3 * d + d + d + 2 * d + 3 * m + 1) * 8 + 24
    assert glc.memory_per_config(1, (), 1, d, m, "float32", "gd") < got
    sizes = [glc.memory_per_config(3, 100, 1, d, m, "float64", o) for o in
             ("gd", "momentum", "adadelta", "rmsprop")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert glc.memory_per_config(3, (100, 100), 1, d, m, "float64") == \
        glc.memory_per_config(3, 100, 1, d, m, "float64")
    assert glc.memory_per_config(3, 100, 1, d, m, "float64", e2e=True) < sizes[0]
    assert set(glc.STATE_COPIES) == set(gl.OPTIMIZERS)


def test_plan_chunks_fits_in_one():
    plan = glc.plan_chunks(10, 1000, free_bytes=10**9)
    assert plan.chunks == [slice(0, 10)] and plan.message == ""


@pytest.mark.parametrize("n", [1, 7, 100, 1001])
def test_plan_chunks_splits_evenly_and_says_so(n):
    plan = glc.plan_chunks(n, 1000, free_bytes=40_000, shared_bytes=2_000)   # 30 per chunk
    covered = [i for s in plan.chunks for i in range(s.start, s.stop)]
    assert covered == list(range(n))
    assert max(s.stop - s.start for s in plan.chunks) <= 30
    sizes = [s.stop - s.start for s in plan.chunks]
    assert max(sizes) - min(sizes) <= max(sizes) - 1 if len(sizes) > 1 else True
    if n > 30:
        assert len(plan.chunks) == math.ceil(n / 30) and "chunks" in plan.message
    else:
        assert plan.message == ""


def test_plan_chunks_too_big_is_a_clear_error():
    with pytest.raises(MemoryError, match="one configuration needs"):
        glc.plan_chunks(5, 10**9, free_bytes=10**8)


# ---- device info without a GPU ------------------------------------------------------------------

def test_device_info_says_why():
    info = glc.device_info()
    assert set(info) >= {"available", "why", "cupy", "numba_cuda", "tf32", "driver", "libraries",
                         "step"}
    assert set(info["libraries"]) == {"nvrtc", "nvvm", "nvJitLink"}
    text = glc.format_device_info(info)
    for name in ("CUDA driver:", "nvrtc:", "nvvm:", "nvJitLink:", "would take:"):
        assert name in text, text
    if not info["available"]:
        assert "unavailable" in text and info["why"] in text
        assert info["step"].startswith("numpy")
    else:
        assert info["name"] in text and "runtime CUDA" in text


def test_cuda_extras_bring_the_run_time_compilers():
    """cuda12 / cuda13 install numba-cuda with its own [cu12] / [cu13] extra (libNVVM,
    nvJitLink): plain numba-cuda finds no libNVVM and cannot compile the update kernel."""
    import pathlib
    import re
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")
    root = pathlib.Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for major in ("12", "13"):
        reqs = extras[f"cuda{major}"]
        assert any(re.match(rf"cupy-cuda{major}x\b", r) for r in reqs), reqs
        assert any(re.match(rf"numba-cuda\[cu{major}\]", r) for r in reqs), reqs


def test_cuda_package_imports_nothing_from_the_engine():
    """gpulinear.cuda is below the engine: the engine picks a step, the step never calls back."""
    import ast
    import pathlib
    folder = pathlib.Path(glc.__file__).parent
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")] + \
                    [f"{'.' * node.level}{node.module or ''}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not any(n.split(".")[-1] == "engine" or ".engine" in n for n in names), \
                (path.name, names)


def test_update_launch_shape_warp_per_config_and_eq10_shared_memory():
    from gpulinear.cuda.update import update_launch_shape
    assert update_launch_shape(10, 1, False, 4) == ((3,), (128,), 0)
    assert update_launch_shape(8, 3, True, 2) == ((4,), (64,), 2 * 8 * (5 * 9 + 3))
    # k = 16: 10.1 KiB of float64 scratch a warp, so at most 4 warps in a block's 48 KiB
    grid, block, shared = update_launch_shape(10, 16, True, 8)
    assert block == (128,) and grid == (3,) and shared == 4 * 8 * (5 * 256 + 16) <= 48 * 1024
    with pytest.raises(ValueError, match="configs_per_block"):
        update_launch_shape(10, 1, False, 0)
