"""Find the CUDA C sources, inline their local headers, and build each RawModule once per device.

Sources live in the repository's top-level `kernels/` and ship in the wheel as
`gpulinear/_kernels` (pyproject force-include).  `kernel_dir()` looks there first through
importlib.resources (an installed wheel) and falls back to `<repo>/kernels` (a source tree or an
editable install).  `#include "x.cuh"` lines are replaced by the header text (each header once),
so NVRTC needs no include path and CuPy's on-disk cache keys on the complete source string.
Entry points are found in the source: every `__global__ void gl_<op>` (templates on T get
`gl_<op><float>` and `gl_<op><double>` name expressions).  Nothing here imports CuPy until a
kernel is asked for.
"""
from __future__ import annotations

import functools
import importlib.resources
import pathlib
import re

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.M)
_PRAGMA_ONCE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+once[ \t]*$", re.M)
# `__global__ void [__launch_bounds__(...)] gl_<op>(`
_BOUNDS = r"(?:__launch_bounds__\s*\([^()]*\)\s*)?"
_TEMPLATE_ENTRY = re.compile(r"template\s*<\s*typename\s+T\s*>\s*__global__\s+void\s+" + _BOUNDS
                             + r"(gl_\w+)\s*\(")
_PLAIN_ENTRY = re.compile(r"(?<!>)\s__global__\s+void\s+" + _BOUNDS + r"(gl_\w+)\s*\(")
_CTYPES = {"float32": "float", "float64": "double"}
# The options gpulinear hands cupy.RawModule.  -ftz=false is deliberately NOT among them: CuPy
# appends -ftz=true after the caller's options (CUPY_APPENDS below) and NVRTC obeys the last -ftz
# it sees, so it would change nothing.  The kernels are written so that no -ftz setting changes
# their float32 results (gl_fma / gl_widen / gl_narrow in kernels/gl_common.cuh);
# tests/test_fp_contract.py checks that on the PTX NVRTC makes with cupy_nvrtc_options().
NVRTC_OPTIONS = ("-std=c++17",)
# What CuPy adds to NVRTC_OPTIONS, in its order, for a RawModule on an sm_<arch> device (read from
# cupy/cuda/compiler.py, CuPy main of 2026-08-20, commit 6b6d956: _compile_with_cache_cuda appends
# '-ftz=true', then _compile_using_nvrtc_no_warning appends '-arch=sm_<arch>' (a cubin; PTX only
# when the NVRTC is older than the device) and '--device-as-default-execution-space'; include
# paths and '--pch' change no code and are left out).  tests/test_fp_contract.py compares this
# with the installed CuPy's source when CuPy is installed.
CUPY_APPENDS = ("-ftz=true", "-arch=sm_{arch}", "--device-as-default-execution-space")
SOURCE_TREE_KERNELS = pathlib.Path(__file__).resolve().parents[2] / "kernels"


def kernel_dir():
    """The folder holding the .cu/.cuh sources: the wheel's gpulinear/_kernels, else <repo>/kernels."""
    try:
        packaged = importlib.resources.files("gpulinear") / "_kernels"
        if packaged.is_dir():
            return packaged
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    if SOURCE_TREE_KERNELS.is_dir():
        return SOURCE_TREE_KERNELS
    raise FileNotFoundError(
        "gpulinear's CUDA kernel sources were not found: neither gpulinear/_kernels (an installed "
        f"wheel) nor {SOURCE_TREE_KERNELS} (a source tree) exists. Reinstall gpulinear, or check "
        "that pyproject's [tool.hatch.build.targets.wheel.force-include] still maps kernels/")


def kernel_names(folder=None) -> list[str]:
    """The .cu sources of `folder` (default kernel_dir()), sorted."""
    folder = kernel_dir() if folder is None else folder
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".cu"))


def inline_headers(text: str, folder, _seen=None) -> str:
    """`text` with each local `#include "x.cuh"` replaced by that file of `folder`, recursively,
    each header at most once (`#pragma once` semantics); <system> includes are left alone."""
    seen = set() if _seen is None else _seen

    def replace(match):
        name = match.group(1)
        if name in seen:
            return f"// {name}: already inlined above"
        seen.add(name)
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f'#include "{name}": no such header in {folder}')
        body = _PRAGMA_ONCE.sub("", path.read_text())
        return f"// ---- begin {name} ----\n{inline_headers(body, folder, seen)}\n// ---- end {name} ----"

    return _INCLUDE.sub(replace, text)


@functools.lru_cache(maxsize=None)
def kernel_source(name: str) -> str:
    """The complete source of kernels/<name> (e.g. "xpass.cu") with its headers inlined."""
    folder = kernel_dir()
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"no kernel source {name!r} in {folder}; have {kernel_names(folder)}")
    return inline_headers(path.read_text(), folder)


def entry_points(source: str) -> tuple[list[str], list[str]]:
    """(templated, plain) `gl_*` kernel names defined in `source`."""
    templated = sorted(set(_TEMPLATE_ENTRY.findall(source)))
    plain = sorted(set(_PLAIN_ENTRY.findall(source)) - set(templated))
    return templated, plain


def name_expressions(source: str) -> list[str]:
    """What RawModule must instantiate: gl_x<float>, gl_x<double> per template, plain names as is."""
    templated, plain = entry_points(source)
    return [f"{n}<{c}>" for n in templated for c in _CTYPES.values()] + plain


def cupy_nvrtc_options(arch="90", virtual=False) -> list[str]:
    """The code-generating NVRTC options CuPy will use for our RawModules on an sm_<arch> GPU, in
    CuPy's order (NVRTC_OPTIONS, then CUPY_APPENDS); virtual=True asks for compute_<arch> (PTX,
    to read the generated instructions) instead of sm_<arch> (a cubin, what CuPy loads)."""
    opts = list(NVRTC_OPTIONS) + [o.format(arch=arch) for o in CUPY_APPENDS]
    if virtual:
        opts = [o.replace("-arch=sm_", "-arch=compute_") for o in opts]
    return opts


@functools.lru_cache(maxsize=None)
def _module(name: str, device_id: int):
    import cupy
    code = kernel_source(name)
    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=code, options=NVRTC_OPTIONS,
                              name_expressions=name_expressions(code))


def get_kernel(source: str, entry: str, dtype=None):
    """The RawKernel `entry` of kernels/<source> for `dtype` (None for a non-template kernel),
    on the current device; the module is compiled once per (source, device)."""
    import cupy
    import numpy as np
    mod = _module(source, cupy.cuda.Device().id)
    if dtype is None:
        return mod.get_function(entry)
    dt = np.dtype(dtype).name
    if dt not in _CTYPES:
        raise TypeError(f"{entry}: dtype must be float32 or float64, got {dt}")
    return mod.get_function(f"{entry}<{_CTYPES[dt]}>")
