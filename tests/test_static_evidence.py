"""benchmarks/static_evidence.py and its parsers (benchmarks/sass.py), without a GPU."""
import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Shaped like `cuobjdump -sass` (addresses, predicates, the encoding comments): an outer loop
# 0x40..0x100 around an inner one 0x60..0xc0, and the `BRA self` padding after EXIT.
SASS = """
\t\tFunction : _Z6gl_fooIfEvPT_i
        /*0000*/                   LDC R1, c[0x0][0x28] ;                 /* 0x00000a00ff017b82 */
        /*0040*/                   LDG.E R2, desc[UR6][R4.64] ;          /* 0x0000000604027981 */
        /*0050*/                   NOP ;                                  /* 0x0000000000007918 */
        /*0060*/                   LDS.128 R8, [R3] ;                     /* 0x0000000003087984 */
        /*0070*/                   FFMA R9, R0, R8, R9 ;                  /* 0x0000000800097223 */
        /*0080*/                   FFMA R10, R0, R8, R10 ;                /* 0x0000000800097223 */
        /*0090*/                   LDS R11, [R3+0x10] ;                   /* 0x0000000003087984 */
        /*00a0*/                   IADD3 R3, R3, 0x4, RZ ;                /* 0x0000000403037810 */
        /*00b0*/                   ISETP.NE.AND P0, PT, R3, R5, PT ;      /* 0x000000050300720c */
        /*00c0*/              @P0 BRA 0x60 ;                              /* 0xfffffffc00e48947 */
        /*00d0*/                   FFMA R12, R9, R10, R12 ;               /* 0x0000000800097223 */
        /*00e0*/                   FADD R13, R12, R12 ;                   /* 0x0000000800097223 */
        /*00f0*/                   ISETP.NE.AND P1, PT, R3, R6, PT ;      /* 0x000000050300720c */
        /*0100*/             @!P1 BRA 0x40 ;                              /* 0xfffffffc00e48947 */
        /*0110*/                   EXIT ;                                 /* 0x000000000000794d */
        /*0120*/                   BRA 0x120;                             /* 0xfffffffc00fc7947 */
\t\tFunction : _Z6gl_barv
        /*0000*/                   DFMA R2, R6, R8, R2 ;                  /* 0x000000080602722b */
        /*0010*/                   EXIT ;                                 /* 0x000000000000794d */
        /*0020*/                   BRA 0x20;                              /* 0xfffffffc00fc7947 */
"""

PTXAS = """ptxas info    : Compiling entry function '_Z6gl_fooIfEvPT_i' for 'sm_90'
ptxas info    : Function properties for _Z6gl_fooIfEvPT_i
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 6144 bytes smem
ptxas info    : Compiling entry function '_Z6gl_barv' for 'sm_90'
ptxas info    : Function properties for _Z6gl_barv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, used 0 barriers
"""


def test_hot_loop_is_the_innermost_backward_branch_body():
    sass = _load("sass")
    funcs = sass.parse_sass(SASS)
    assert set(funcs) == {"_Z6gl_fooIfEvPT_i", "_Z6gl_barv"}
    mix = sass.hot_loop(funcs["_Z6gl_fooIfEvPT_i"])
    # 0x60..0xc0: LDS.128, FFMA, FFMA, LDS, IADD3, ISETP, BRA (the outer loop's FFMA is outside)
    assert (mix.start, mix.end, mix.instructions) == (0x60, 0xC0, 7)
    assert (mix.ffma, mix.dfma, mix.lds, mix.ldg, mix.loops) == (2, 0, 2, 0, 2)
    assert sass.hot_loop(funcs["_Z6gl_barv"]) is None          # `BRA self` is not a loop


def test_parse_ptxas_reads_registers_spills_stack_and_shared_memory():
    sass = _load("sass")
    rep = sass.parse_ptxas(PTXAS)
    assert rep["_Z6gl_fooIfEvPT_i"] == {"registers": 40, "stack": 8, "spill_stores": 4,
                                        "spill_loads": 4, "smem": 6144}
    assert rep["_Z6gl_barv"]["smem"] == 0 and rep["_Z6gl_barv"]["registers"] == 8


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found (CUDA toolkit)")
def test_every_name_expression_of_every_kernel_is_compiled_and_reported(tmp_path):
    """What CuPy instantiates (loader name expressions) is what the table reports, float and
    double, with registers read for each; and the SASS mix when cuobjdump is found."""
    se = _load("static_evidence")
    from gpulinear.cuda import _loader
    cuobjdump = se.find_tool("cuobjdump")
    for name in _loader.kernel_names():
        report, cubin, err = se.compile_cu(name, str(tmp_path), se.find_tool("nvcc"))
        assert not err, err
        mixes, why = se.loop_mix(cubin, cuobjdump)
        rows = se.kernel_rows(name, report, mixes)
        expected = {e.replace(" ", "") for e in _loader.name_expressions(_loader.kernel_source(name))}
        assert {r["kernel"].replace(" ", "") for r in rows} == expected
        assert all(isinstance(r["registers"], int) and r["registers"] > 0 for r in rows)
        if cuobjdump is None:
            assert mixes is None and "pip download" in why      # says how to get it
        else:
            assert any(r["loop"] is not None for r in rows)


def test_main_prints_the_three_parts_and_a_labelled_roofline():
    env_path = ROOT
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "static_evidence.py"),
                           "--tr", "32", "--splits", "4", "--ffma-share", "0.5"],
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(env_path), "PATH": "/usr/local/bin:/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for head in ("### a.", "### b.", "### c.", "### d."):
        assert head in out
    roof = out[out.index("### c."):out.index("### d.")]
    latency = out[out.index("### d."):]
    table = [line for line in latency.splitlines() if line.startswith("| ") and
             not line.startswith("| B |")]
    assert [line.split("|")[1].split()[0] for line in table] == ["60", "1,024", "8,192",
                                                                 "1,000,000"]
    assert all("(ESTIMATE)" in line for line in table)
    assert "Fig-3 grid (60 configs in one call) x 100,000 steps" in latency
    rows = [line for line in roof.splitlines() if line.startswith("| ") and "quantity" not in line]
    assert rows and all("(ESTIMATE)" in line for line in rows)
    # with --ffma-share 0.5 the issue ceiling is twice the floor time (unless xpass.cu's SASS
    # supplied a measured share)
    floor = next(r for r in rows if r.startswith("| t at the FP32 floor"))
    issue = next(r for r in rows if r.startswith("| t at the issue ceiling"))
    f, i = (float(r.split("|")[2]) for r in (floor, issue))
    if "ASSUMED (no gl_xpass" in issue:
        assert i == pytest.approx(2 * f, abs=0.02)    # both printed to 0.01 us


def test_timing_split_runs_on_a_cpu_only_as_far_as_its_help():
    """benchmarks/timing_split.py imports CuPy only inside a point: --help works anywhere."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "timing_split.py"), "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--K" in proc.stdout, proc.stderr


@pytest.mark.gpu
def test_timing_split_point_on_a_gpu():
    pytest.importorskip("cupy")
    from gpulinear.backend import cuda_status
    if not cuda_status()[0]:
        pytest.skip("no usable CUDA GPU")
    ts = _load("timing_split")
    r = ts.point(60, K=4, reps=1)
    assert r["xpass_us"] > 0 and r["update_us"] > 0 and r["step_us"] > 0, r
    assert r["alive_after"] == 60
