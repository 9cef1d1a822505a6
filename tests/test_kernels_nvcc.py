"""Every kernels/*.cu compiles for sm_90 with nvcc, warnings as errors, and spills nothing.

The source compiled is the loader's (headers inlined), i.e. exactly what CuPy hands NVRTC.
ptxas's resource report (registers, spills per kernel) is printed; run this file as a script
(`python tests/test_kernels_nvcc.py`) to print it as the markdown table of benchmarks/RESULTS.md.
The Numba fused kernel is compiled to PTX by numba-cuda and assembled by ptxas the same way,
where numba-cuda can find NVVM/NVRTC.  No GPU is needed; nothing here runs a kernel.
"""
import os
import re
import shutil
import subprocess
import sys

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


def numba_fused_report(tmp_path):
    """ptxas report of the Numba fused kernel, float32 and float64 (compiled for sm_90)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("the CUDA simulator is on: numba-cuda cannot compile PTX in this process")
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    import numpy as np
    from numba import cuda, types
    from gpulinear.cuda import fused
    ptxas = shutil.which("ptxas") or os.path.join(os.path.dirname(NVCC), "ptxas")
    report = {}
    for name in ("float32", "float64"):
        T = getattr(types, name)
        a1, a2 = types.Array(T, 1, "C"), types.Array(T, 2, "C")
        i1, b1, i8 = types.Array(types.int64, 1, "C"), types.Array(types.boolean, 1, "C"), types.int64
        sig = (a2, a1, a2, a2, i1, a1, a1, T, i8, T, i8, i8, i8, i8, i8, b1, i1, a2, a2)
        try:
            ptx, _ = cuda.compile_ptx(fused._KERNELS[np.dtype(name)].py_func, sig, cc=(9, 0))
        except Exception as exc:  # NVVM / NVRTC libraries missing: pip install "numba-cuda[cu13]"
            pytest.skip(f"numba-cuda cannot compile PTX here: {type(exc).__name__}: {exc}"[:300])
        path = tmp_path / f"fused_{name}.ptx"
        path.write_text(ptx)
        proc = subprocess.run([ptxas, f"-arch={ARCH}", "-v", str(path), "-o",
                               str(path.with_suffix(".cubin"))], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        for k, v in parse_ptxas(proc.stdout + proc.stderr).items():
            report[f"fused._width1_steps<{'float' if name == 'float32' else 'double'}>"] = v
    return report


@needs_nvcc
def test_numba_fused_kernel_compiles_for_sm90_without_spills(tmp_path):
    for name, rec in numba_fused_report(tmp_path).items():
        print(f"{name}: {rec['registers']} registers, {rec['stack']} bytes stack (local array), "
              f"{rec['spill_stores']}/{rec['spill_loads']} bytes spill stores/loads")
        assert rec["spill_stores"] == 0 and rec["spill_loads"] == 0, (name, rec)


def markdown_report(tmp_path):
    rows = []
    for name in _loader.kernel_names():
        rc, text, report = compile_cu(name, tmp_path)
        if rc != 0:
            rows.append(f"| {name} | FAILED | | | |")
            continue
        names = demangle(list(report))
        for mangled, rec in sorted(report.items(), key=lambda kv: short(names[kv[0]])):
            rows.append(f"| {name} | `{short(names[mangled])}` | {rec['registers']} | "
                        f"{rec['stack']} | {rec['spill_stores']} / {rec['spill_loads']} |")
    try:
        for kname, rec in numba_fused_report(tmp_path).items():
            rows.append(f"| gpulinear/cuda/fused.py (Numba) | `{kname}` | {rec['registers']} | "
                        f"{rec['stack']} | {rec['spill_stores']} / {rec['spill_loads']} |")
    except BaseException as exc:  # pytest.skip outside pytest
        rows.append(f"| gpulinear/cuda/fused.py (Numba) | not compiled: {exc} | | | |")
    head = ["| source | kernel | registers | stack bytes | spill stores / loads (bytes) |",
            "|---|---|---|---|---|"]
    return "\n".join(head + rows)


if __name__ == "__main__":
    import pathlib
    import tempfile
    if NVCC is None:
        sys.exit("nvcc not found")
    with tempfile.TemporaryDirectory() as d:
        print(markdown_report(pathlib.Path(d)))


# ---- the CUDA C kernels' arithmetic, run on the CPU -----------------------------------------------
# With one thread per block, gl_block_sum is the identity (every shuffle partner is out of the
# warp), so each kernel compiled by g++ against a tiny shim runs its real source sequentially:
# the math and the indexing are checked against the twins here; the parallel reductions and
# launch shapes only on a GPU (tests/test_cuda_gpu.py).

SHIM = r"""
#include <cmath>
struct gl_dim3 { unsigned x, y, z; };
static gl_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1},
               gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict
inline void __syncthreads() {}
template <typename T> inline T __shfl_down_sync(unsigned, T, int) { return T(0); }
using std::sqrt; using std::pow; using std::fabs;
#define GRID(B, ...) do { gridDim.x = (B); for (unsigned b_ = 0; b_ < (unsigned)(B); ++b_) \
    { blockIdx.x = b_; __VA_ARGS__; } blockIdx.x = 0; gridDim.x = 1; } while (0)
"""

LAUNCHERS = r"""
#define GL_LAUNCHERS(T, S)                                                                   \
extern "C" void lp_##S(T* Z, const T* Yt, T* out, T* v, int B, int km, int m, T p, int mode, \
                       int has_y) { GRID(B, gl_lp_value_grad<T>(Z, Yt, out, v, km, m, p, mode,  \
                                                                has_y)); }                    \
extern "C" void e2e_##S(const T* W, const T* G, T* Wo, const T* lr, const T* wd,            \
                        const bool* alive, int B, int d, int N, long long gsc)               \
    { GRID(B, gl_e2e_k1<T>(W, G, Wo, lr, wd, alive, d, N, gsc)); }                           \
extern "C" void gd_##S(GL_OPT_ARGS(T), const T* lr, const T* wd, const bool* a)              \
    { gl_opt_gd<T>(n, per, p, g, gcols, gsc, gsr, lr, wd, a); }                              \
extern "C" void momentum_##S(GL_OPT_ARGS(T), T* buf, const T* lr, const T* wd, const T* mu,  \
                             int nest, const bool* a)                                         \
    { gl_opt_momentum<T>(n, per, p, g, gcols, gsc, gsr, buf, lr, wd, mu, nest, a); }         \
extern "C" void adagrad_##S(GL_OPT_ARGS(T), T* s, const T* lr, const T* wd, const T* lrd,    \
                            const T* eps, const long long* cnt, const bool* a)                \
    { gl_opt_adagrad<T>(n, per, p, g, gcols, gsc, gsr, s, lr, wd, lrd, eps, cnt, a); }       \
extern "C" void adadelta_##S(GL_OPT_ARGS(T), T* sq, T* acc, const T* lr, const T* wd,        \
                             const T* rho, const T* eps, const bool* a)                       \
    { gl_opt_adadelta<T>(n, per, p, g, gcols, gsc, gsr, sq, acc, lr, wd, rho, eps, a); }     \
extern "C" void adam_##S(GL_OPT_ARGS(T), T* m1, T* v2, const T* lr, const T* wd, const T* b1, \
                         const T* b2, const T* eps, const long long* cnt, const bool* a)      \
    { gl_opt_adam<T>(n, per, p, g, gcols, gsc, gsr, m1, v2, lr, wd, b1, b2, eps, cnt, a); }  \
extern "C" void rmsprop_##S(GL_OPT_ARGS(T), T* sq, T* ga, T* buf, const T* lr, const T* wd,  \
                            const T* al, const T* eps, const T* mu, const T* cen,            \
                            const bool* a)                                                    \
    { gl_opt_rmsprop<T>(n, per, p, g, gcols, gsc, gsr, sq, ga, buf, lr, wd, al, eps, mu, cen, \
                        a); }
GL_LAUNCHERS(float, f32)
GL_LAUNCHERS(double, f64)
extern "C" void count_step(int B, long long* count, const bool* alive)
{
    blockDim.x = (unsigned)B;
    for (int t = 0; t < B; ++t) { threadIdx.x = (unsigned)t; gl_count_step(B, count, alive); }
    threadIdx.x = 0; blockDim.x = 1;
}
"""


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    import ctypes
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: cannot run the CUDA C kernels' arithmetic on the CPU")
    d = tmp_path_factory.mktemp("hostcu")
    # each source carries its own inlined copy of gl_common.cuh: keep one, ahead of them all
    body = "".join(_loader.kernel_source(n) for n in ("lp_loss.cu", "e2e.cu", "optim.cu"))
    body = re.sub(r"// ---- begin gl_common\.cuh ----.*?// ---- end gl_common\.cuh ----", "",
                  body, flags=re.S)
    common = _loader.inline_headers('#include "gl_common.cuh"\n', _loader.kernel_dir())
    src = SHIM + common + body + LAUNCHERS
    (d / "host.cpp").write_text(src)
    proc = subprocess.run([gxx, "-O1", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Werror",
                           "-Wno-unused-variable", "-o", str(d / "host.so"), str(d / "host.cpp")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ctypes.CDLL(str(d / "host.so"))


def _call(lib, name, *args):
    import ctypes
    import numpy as np
    conv = []
    for a in args:
        if isinstance(a, np.ndarray):
            assert a.flags.c_contiguous
            conv.append(ctypes.c_void_p(a.ctypes.data))
        elif isinstance(a, np.float32):
            conv.append(ctypes.c_float(a))
        elif isinstance(a, np.float64):
            conv.append(ctypes.c_double(a))
        elif isinstance(a, np.int64):
            conv.append(ctypes.c_longlong(a))
        else:
            conv.append(ctypes.c_int(int(a)))
    getattr(lib, name)(*conv)


DTYPES = [("f64", "float64"), ("f32", "float32")]


def _tol(dt):
    import numpy as np
    return 4 * np.sqrt(np.finfo(dt).eps) if dt == "float32" else 1e-12


@pytest.mark.parametrize("sfx,dt", DTYPES)
@pytest.mark.parametrize("p", [2.0, 4.0, 3.0, 2.5])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 2, 37), (2, 1, 100)])
def test_lp_kernel_arithmetic_on_cpu(host_lib, sfx, dt, p, shape):
    import numpy as np
    from gpulinear.cuda import twins
    rng = np.random.default_rng(0)
    Z, Yt = rng.normal(size=shape).astype(dt), rng.normal(size=shape[1:]).astype(dt)
    out, values = np.empty_like(Z), np.empty(shape[0], dtype=dt)
    ref_v, ref_R, ref_out = twins.lp_value_grad(Z, Yt, p)
    mode = 2 if p == 2 else 4 if p == 4 else 0
    tol = _tol(dt)
    for has_y in (1, 0):                 # 0: Z already is the residual (train() folds -Y in)
        Zk = Z.copy() if has_y else (Z - Yt).astype(dt)
        _call(host_lib, f"lp_{sfx}", Zk, Yt, out, values, shape[0], shape[1] * shape[2],
              shape[2], np.dtype(dt).type(p), mode, has_y)
        np.testing.assert_allclose(values, ref_v, rtol=tol)
        np.testing.assert_allclose(Zk, ref_R, rtol=tol, atol=tol)
        np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol * np.abs(ref_out).max())


@pytest.mark.parametrize("sfx,dt", DTYPES)
@pytest.mark.parametrize("N", [1, 2, 3, 5])
def test_e2e_kernel_arithmetic_on_cpu(host_lib, sfx, dt, N):
    import numpy as np
    from gpulinear.cuda import twins
    rng = np.random.default_rng(N)
    B, d = 4, 7
    W = rng.normal(size=(B, 1, d)).astype(dt)
    Ga = rng.normal(size=(B, 1, d + 1)).astype(dt)     # the engine's G is a view of [G, G_y]
    G = Ga[:, :, :d]
    W[1] = 0
    lr, wd = rng.uniform(0.01, 0.1, B).astype(dt), rng.uniform(0, 0.1, B).astype(dt)
    alive = np.array([True, True, False, True])
    ref = twins.e2e_k1(W, G, N, lr, wd, alive)
    for inplace in (False, True):
        Wk = W.copy()
        out = Wk if inplace else np.full_like(W, np.nan)
        _call(host_lib, f"e2e_{sfx}", Wk, Ga, out, lr, wd, alive, B, d, N, np.int64(d + 1))
        np.testing.assert_allclose(out, ref, rtol=_tol(dt), atol=_tol(dt))
        assert np.array_equal(out[2], W[2])                     # frozen: untouched / copied


def _opt_args(name, p, ga, state, hyper, fields, extra, uses_count, alive):
    """ga: a (B, a, b + 1) buffer whose [:, :, :b] view is the gradient (strided, as in train)."""
    import numpy as np
    B, _, cols = p.shape
    args = [np.int64(p.size), np.int64(p.size // B), p, ga, np.int64(cols),
            np.int64(ga.shape[1] * ga.shape[2]), np.int64(ga.shape[2]),
            *[getattr(state, f)[0] for f in fields], hyper["lr"], hyper["weight_decay"]]
    if name in ("momentum", "nesterov"):
        args += [hyper["momentum"], int(name == "nesterov")]
    else:
        args += [hyper[k] for k in extra]
    if uses_count:
        args.append(state.count)
    return args + [alive]


@pytest.mark.parametrize("sfx,dt", DTYPES)
@pytest.mark.parametrize("name", ["gd", "momentum", "nesterov", "adagrad", "adadelta", "adam",
                                  "rmsprop"])
def test_optimizer_kernels_arithmetic_on_cpu(host_lib, sfx, dt, name):
    import numpy as np
    from gpulinear import optim
    from gpulinear.cuda import twins
    from gpulinear.cuda.ops import OPTIMIZER_KERNELS
    fields, extra, uses_count = OPTIMIZER_KERNELS[name]
    per_cfg = {"rmsprop": [dict(), dict(lr=0.005, centered=True, weight_decay=0.1),
                           dict(momentum=0.9), dict(momentum=0.5, centered=True)]}.get(
        name, [dict(), dict(lr=0.05, weight_decay=0.1), dict(lr=0.02), dict(lr=0.1)])
    B = len(per_cfg)
    rng = np.random.default_rng(7)
    params = [rng.normal(size=(B, 3, 2)).astype(dt)]
    hyper = optim.hyper_arrays(name, per_cfg, dt)
    opt = optim.get_optimizer(name)
    state_k, state_t = opt.init([params[0].copy()]), opt.init([params[0].astype(np.float64)])
    pk, pt = params[0].copy(), params[0].astype(np.float64)
    alive = np.array([True, True, False, True])
    for step in range(5):
        ga = rng.normal(size=pk.shape[:2] + (pk.shape[2] + 1,)).astype(dt)
        g = ga[:, :, :-1]
        kname = "momentum" if name == "nesterov" else name
        _call(host_lib, f"{kname}_{sfx}",
              *_opt_args(name, pk, ga, state_k, hyper, fields, extra, uses_count, alive))
        _call(host_lib, "count_step", B, state_k.count, alive)
        (pt,), state_t = twins.optimizer_update(name, [g], state_t, [pt], hyper, alive)
        pt = pt.copy()
    tol = _tol(dt)
    np.testing.assert_allclose(pk, pt, rtol=tol, atol=tol)
    np.testing.assert_array_equal(state_k.count, state_t.count)
    for f in fields:
        np.testing.assert_allclose(getattr(state_k, f)[0], getattr(state_t, f)[0], rtol=tol,
                                   atol=tol)
    assert np.array_equal(pk[2], params[0][2])                  # frozen config untouched
