"""Static performance evidence for benchmarks/RESULTS.md, without a GPU: prints markdown tables.

    python benchmarks/static_evidence.py [--cuobjdump PATH] [--tr 64 --splits 4 ...]

a. Every kernels/*.cu, as the loader hands it to NVRTC (gpulinear.cuda._loader.kernel_source,
   headers inlined), plus a line taking the address of every name expression (gl_x<float>,
   gl_x<double>: what CuPy's name_expressions instantiate), compiled by
   `nvcc -arch=sm_90 -std=c++17 -Xptxas -v --cubin`: registers, stack, spills, static shared
   memory per kernel.  Then `cuobjdump -sass` of the cubin: the hottest innermost loop of each
   kernel (benchmarks/sass.py): its instructions, FFMA / DFMA, their share, LDS and LDG.
   cuobjdump is not part of the toolkit here: `pip download --no-deps nvidia-cuda-cuobjdump
   nvidia-cuda-nvdisasm -d /tmp/x`, unzip both wheels into one folder and pass --cuobjdump
   (cuobjdump -sass runs nvdisasm, which it finds beside itself or on PATH).
b. The Numba update kernel (gpulinear/cuda/update.py, when present: its
   `kernel_signatures()` -> [(label, py_func, numba signature)] if it has one, else kernel().py_func
   typed from the arguments kernel_args() builds for a small packed grid): compile_ptx(...,
   cc=(9, 0)), then ptxas -v, or nvJitLink (-Xptxas=-v) where this ptxas is older than the PTX
   ISA numba-cuda emits (the PTX is never rewritten), and the SASS loop mix when cuobjdump is
   found.  Skipped, with the
   reason, when the module or that function is missing or numba cannot find NVRTC/libNVVM.
c. A roofline ESTIMATE of one training step (depth 3, width 1, l4, Ethanol, float32, k = 1) for
   B = 60 (the Fig-3 grid), 1024, 8192 and 10^6: the X-pass's flops and L2 bytes from its tile plan
   (gpulinear.cuda.xpass.plan_xpass when it exists, else --tr/--tm/--splits/--threads), the
   update kernel's bytes, waves over 132 SMs, the FFMA share of the X-pass's hot loop as an
   issue-rate ceiling, and an assumed 2.5 us per graph-replayed kernel node.
d. The estimate re-derived (issue 17): the update kernel priced by LATENCY, not bytes (a chain
   of dependent L2 round trips, warp-shuffle steps and barriers per config, times the rounds of
   configs the SMs hold at once from the kernel's registers), the old one-block-per-config kernel
   and the new one-warp-per-config kernel side by side, and a JAX jit(vmap)+scan peer priced the
   same way (its GEMMs at an assumed cuBLAS efficiency, Z and D through L2 or HBM, one graph
   node per XLA kernel).  Old vs new table for B = 60, 1024, 8192, 10^6.
Nothing is downloaded or run on a GPU.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.join(HERE, ".."))
import sass  # noqa: E402

ARCH = "sm_90"
H200 = {"sms": 132, "fp32_flops": 67e12, "regs_per_sm": 65536, "smem_per_sm": 228 * 1024,
        "threads_per_sm": 2048, "blocks_per_sm": 32, "l2_bytes_per_s": 6e12, "hbm_bytes_per_s": 4.8e12}
GET_CUOBJDUMP = ("cuobjdump not found: `pip download --no-deps nvidia-cuda-cuobjdump "
                 "nvidia-cuda-nvdisasm -d /tmp/x`, unzip both wheels into one folder "
                 "(`cd /tmp/x && for w in *.whl; do unzip -oq $w -d cu; done`) and pass "
                 "--cuobjdump /tmp/x/cu/nvidia/cu13/bin/cuobjdump (nvdisasm lands beside it)")


def _package_bins(tool):
    """`tool` inside pip-installed nvidia-* wheels (nvidia/cu13/bin, nvidia/cuda_*/bin)."""
    spec = importlib.util.find_spec("nvidia")
    found = []
    for root in (spec.submodule_search_locations if spec else []) or []:
        found += sorted(glob.glob(os.path.join(root, "*", "bin", tool)))
    return found


def find_tool(name, explicit=None):
    for cand in ([explicit] if explicit else []) + [shutil.which(name)] + _package_bins(name) \
            + [f"/usr/local/cuda/bin/{name}"]:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def tool_env(cuobjdump):
    """PATH with cuobjdump's folder and nvdisasm's (cuobjdump -sass needs nvdisasm)."""
    dirs = [os.path.dirname(cuobjdump)]
    nvdisasm = find_tool("nvdisasm", os.environ.get("NVDISASM_PATH"))
    if nvdisasm:
        dirs.append(os.path.dirname(nvdisasm))
    return dict(os.environ, PATH=os.pathsep.join(dirs + [os.environ.get("PATH", "")]))


def loop_mix(cubin, cuobjdump):
    """{mangled: LoopMix or None} from cuobjdump -sass, or (None, why) when it cannot run."""
    if cuobjdump is None:
        return None, GET_CUOBJDUMP
    proc = subprocess.run([cuobjdump, "-sass", cubin], capture_output=True, text=True,
                          env=tool_env(cuobjdump), timeout=120)
    if proc.returncode != 0:
        return None, f"cuobjdump -sass failed: {(proc.stderr or proc.stdout).strip()[:300]}"
    return {k: sass.hot_loop(v) for k, v in sass.parse_sass(proc.stdout).items()}, ""


def compile_cu(name, workdir, nvcc):
    """(ptxas report, cubin path, error) for kernels/<name> with every name expression built."""
    from gpulinear.cuda import _loader
    source = _loader.kernel_source(name)
    inst = "\n".join(f"static void* const gl_static_evidence_{i} = reinterpret_cast<void*>(&{e});"
                     for i, e in enumerate(_loader.name_expressions(source)))
    src = os.path.join(workdir, name)
    with open(src, "w") as fh:
        fh.write(source + "\n// static_evidence.py: instantiate what CuPy's name_expressions do\n"
                 + inst + "\n")
    cubin = src + ".cubin"
    proc = subprocess.run([nvcc, f"-arch={ARCH}", "-std=c++17", "-Xptxas", "-v", "--cubin",
                           "-o", cubin, src], capture_output=True, text=True, timeout=600)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return {}, None, text.strip()[-600:]
    return sass.parse_ptxas(text), cubin, ""


def kernel_rows(source_label, report, mixes):
    """One dict per kernel: resources and the hot loop's mix (None fields when unknown)."""
    names = sass.demangle(report)
    rows = []
    for mangled, rec in report.items():
        kname = sass.short(names[mangled])
        mix = (mixes or {}).get(mangled)
        fma_kind = "DFMA" if "double" in kname or "float64" in kname else "FFMA"
        row = dict(source=source_label, kernel=kname, **rec, loop=mix, fma_kind=fma_kind)
        if mix is not None and mix.instructions:
            fma = mix.dfma if fma_kind == "DFMA" else mix.ffma
            row["fma"], row["share"] = fma, fma / mix.instructions
        rows.append(row)
    return sorted(rows, key=lambda r: r["kernel"])


def ptxas_isa(ptxas) -> str:
    """The newest PTX ISA version this ptxas reads (from its own error on a too-new one)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.ptx")
        with open(path, "w") as fh:
            fh.write(".version 99.0\n.target sm_90\n.address_size 64\n")
        proc = subprocess.run([ptxas, f"-arch={ARCH}", path, "-o", path + ".o"],
                              capture_output=True, text=True, timeout=60)
    m = re.search(r"current version is '(\d+\.\d+)'", proc.stdout + proc.stderr)
    return m.group(1) if m else "9.0"


def numba_update_rows(workdir, ptxas, cuobjdump):
    """Part b: (rows, note)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return [], "skipped: NUMBA_ENABLE_CUDASIM=1 in this process (no PTX from the simulator)"
    if importlib.util.find_spec("gpulinear.cuda.update") is None:
        return [], "skipped: gpulinear/cuda/update.py does not exist yet"
    mod = importlib.import_module("gpulinear.cuda.update")
    try:
        import types

        import numba.cuda.dispatcher as numba_dispatcher
        from numba import cuda
    except Exception as exc:
        return [], f"skipped: numba-cuda not importable ({type(exc).__name__}: {exc})"
    # Without a driver: compiling the kernel's @cuda.jit device functions asks the current
    # device for its compute capability only; answer sm_90, the target of compile_ptx below.
    numba_dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    fn = getattr(mod, "kernel_signatures", None) or (
        (lambda: update_signatures(mod)) if hasattr(mod, "kernel_args") else None)
    if fn is None:
        return [], ("skipped: gpulinear.cuda.update has neither kernel_signatures() -> "
                    "[(label, py_func, numba signature)] nor kernel() + kernel_args()")
    rows, notes = [], []
    for label, py_func, sig in fn():
        try:
            ptx, _ = cuda.compile_ptx(py_func, sig, cc=(9, 0))
        except Exception as exc:  # NVRTC / libNVVM not found, or a typing error
            notes.append(f"{label}: compile_ptx failed ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]}); numba-cuda needs NVRTC and libNVVM "
                         "(pip install 'numba-cuda[cu13]')")
            continue
        path = os.path.join(workdir, f"update_{len(rows)}.ptx")
        with open(path, "w") as fh:
            fh.write(ptx)                          # as numba-cuda emits it: .version not rewritten
        cubin = path[:-4] + ".cubin"
        need = re.search(r"^\.version (\d+\.\d+)", ptx, re.M).group(1)
        have = ptxas_isa(ptxas)
        if tuple(map(int, need.split("."))) > tuple(map(int, have.split("."))):
            # this ptxas cannot read numba-cuda's PTX ISA: assemble it with nvJitLink, as
            # numba-cuda itself links where the driver is older than its PTX
            log, err = nvjitlink_cubin(ptx, cubin)
            if err:
                notes.append(f"{label}: PTX ISA {need} is newer than ptxas's {have}, and "
                             f"nvJitLink failed: {err}")
                continue
            notes.append(f"PTX ISA {need} (numba-cuda's NVVM) is newer than this ptxas's "
                         f"{have}: assembled with nvJitLink (-Xptxas=-v), version not rewritten")
            proc = subprocess.CompletedProcess([], 0, log, "")
        else:
            proc = subprocess.run([ptxas, f"-arch={ARCH}", "-v", path, "-o", cubin],
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                notes.append(f"{label}: ptxas failed: {proc.stderr.strip()[:300]}")
                continue
        report = sass.parse_ptxas(proc.stdout + proc.stderr)
        mixes, why = loop_mix(cubin, cuobjdump)
        for row in kernel_rows("gpulinear/cuda/update.py (Numba)", report, mixes):
            row["kernel"] = label
            rows.append(row)
        if why:
            notes.append(why)
    return rows, "; ".join(dict.fromkeys(notes))


def nvjitlink_cubin(ptx, cubin_path):
    """(ptxas-style info log, error): assemble `ptx` for sm_90 with nvJitLink (cuda-bindings;
    numba-cuda[cu13] installs it) and write the cubin."""
    try:
        from cuda.bindings import nvjitlink
    except Exception as exc:
        return "", f"no nvJitLink bindings ({type(exc).__name__}: {exc})"
    handle = nvjitlink.create(3, [f"-arch={ARCH}", "-verbose", "-Xptxas=-v"])
    try:
        data = ptx.encode()
        nvjitlink.add_data(handle, nvjitlink.InputType.PTX, data, len(data), "update.ptx")
        try:
            nvjitlink.complete(handle)
        except Exception as exc:
            buf = bytearray(nvjitlink.get_error_log_size(handle))
            nvjitlink.get_error_log(handle, buf)
            return "", f"{type(exc).__name__}: {buf.decode(errors='replace')[:300]}"
        buf = bytearray(nvjitlink.get_info_log_size(handle))
        nvjitlink.get_info_log(handle, buf)
        out = bytearray(nvjitlink.get_linked_cubin_size(handle))
        nvjitlink.get_linked_cubin(handle, out)
        with open(cubin_path, "wb") as fh:
            fh.write(out)
        return buf.decode(errors="replace"), ""
    finally:
        nvjitlink.destroy(handle)


def update_signatures(mod):
    """[(label, py_func, signature)] of the update kernel per dtype, typed from the arguments
    `mod.kernel_args` builds for a small packed grid (one depth-3 width-1 gd config, d = 8):
    what launch_update hands the kernel (C-contiguous arrays, then int64/float64 scalars)."""
    import numba
    import numpy as np
    import gpulinear as gl
    from gpulinear.cuda import layout
    d, k, S, m = 8, 1, 2, 16
    cfg = gl.Config(depth=3, width=1, lr=1e-3)
    out = []
    for dt in ("float32", "float64"):
        packed = layout.pack([cfg], [gl.Lp(4.0)], [gl.init_weights(cfg, d, k)], d, k, dt, 3)
        args = mod.kernel_args(packed, np.zeros((S, k, d), dt), np.zeros((S, k), dt),
                               np.zeros((k, d), dt), np.zeros(1, np.int64), S, m, k, d, 10, 5,
                               np.inf)
        sig = tuple(numba.typeof(a) for a in args)
        out.append((f"update_kernel<{'float' if dt == 'float32' else 'double'}>",
                    mod.kernel().py_func, sig))
    return out


def resources_table(rows):
    head = ["| source | kernel | registers | stack B | spill st/ld B | static smem B | "
            "hot-loop instrs | FMA in loop | FMA share | LDS | LDG |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mix = r["loop"]
        loop = (f"{mix.instructions} | {r.get('fma', 0)} {r['fma_kind']} | "
                f"{r.get('share', 0):.0%} | {mix.lds} | {mix.ldg}") if mix else "- | - | - | - | -"
        head.append(f"| {r['source']} | `{r['kernel']}` | {r['registers']} | {r['stack']} | "
                    f"{r['spill_stores']} / {r['spill_loads']} | {r['smem']} | {loop} |")
    return "\n".join(head)


def xpass_tiles(R, m, d, k, dtype, args):
    """The X-pass's launch shape for R rows (dict: grid, threads, S splits, tr rows per block,
    ldx/ldg/ldw): from gpulinear.cuda.xpass.plan_xpass when it exists (source: 'plan_xpass'), else the
    command-line tile sizes (source: 'arguments')."""
    if importlib.util.find_spec("gpulinear.cuda.xpass") is not None:
        plan = importlib.import_module("gpulinear.cuda.xpass").plan_xpass(R, m, d, k, dtype,
                                                                           n_sm=H200["sms"])
        get = lambda *names, default=None: next(  # noqa: E731
            (getattr(plan, n) for n in names if hasattr(plan, n)), default)
        grid, block = tuple(get("grid")), get("block")
        threads = math.prod(block) if isinstance(block, (tuple, list)) else int(block)
        tr = get("TR", "tr", "tile_rows", "rows_per_block", default=math.ceil(R / grid[0]))
        return dict(source="plan_xpass", grid=grid, threads=threads, S=int(get("S", "splits")),
                     tr=int(tr), ldx=int(get("ldx", default=d)), ldg=int(get("ldg", default=d)),
                     ldw=int(get("ldw", default=d)))
    ld = 4 * math.ceil(d / 4)                              # rows padded to 16 B (float32)
    n_row_tiles = math.ceil(R / args.tr)
    # ~2 blocks per SM, rounded to whole waves of 132 (never more splits than example tiles)
    S = args.splits or min(max(1, round(2 * H200["sms"] / n_row_tiles)), math.ceil(m / args.tm))
    return dict(source="arguments", grid=(n_row_tiles, S, 1), threads=args.threads, S=S,
                 tr=args.tr, ldx=ld, ldg=ld, ldw=ld)


def roofline(args, kernel_info):
    """Part c: markdown lines, every number an ESTIMATE with its reasoning."""
    import gpulinear as gl
    X, _ = gl.datasets.ethanol()
    m, d = X.shape
    k, item, depth = 1, 4, 3
    xp = kernel_info.get("gl_xpass<float>")
    if xp and xp.get("share"):
        share, share_src = xp["share"], "the FFMA share of gl_xpass<float>'s hot loop (part a)"
    else:
        share = args.ffma_share
        share_src = ("ASSUMED (no gl_xpass<float> SASS: kernels/xpass.cu missing or cuobjdump "
                     "not found); pass --ffma-share to change it")
    regs = (xp or {}).get("registers") or args.regs
    smem = (xp or {}).get("smem", 0) if xp else args.smem
    lines = ["| quantity | " + " | ".join(f"B = {B}" for B in args.B) + " | reasoning |",
             "|---|" + "---:|" * len(args.B) + "---|"]
    cols = {}
    for B in args.B:
        R = B * k
        t = xpass_tiles(R, m, d, k, "float32", args)
        n_dchunks = t["grid"][2] if len(t["grid"]) > 2 else 1
        blocks = math.prod(t["grid"])
        per_sm = max(1, min(H200["regs_per_sm"] // (8 * math.ceil(regs / 8) * t["threads"]),
                            H200["smem_per_sm"] // max(smem + 1024, 1),
                            H200["threads_per_sm"] // t["threads"], H200["blocks_per_sm"]))
        waves = blocks / H200["sms"]             # blocks per SM, if spread evenly
        fill = waves / math.ceil(waves)          # the busiest SM runs ceil(waves) blocks' work
        flops = 4 * m * d * R
        t_floor = flops / H200["fp32_flops"]
        t_issue = t_floor / share
        row_tiles = t["grid"][0]
        x_bytes = (row_tiles * n_dchunks * m * t["ldx"] + row_tiles * k * m
                   + t["S"] * R * t["ldw"] + t["S"] * R * (t["ldg"] + 1)) * item
        t_l2 = x_bytes / H200["l2_bytes_per_s"]
        t_x = max(t_issue / fill, t_l2)
        params = d + (depth - 1)                               # width 1: W_1 (1, d), 2 scalars
        u_bytes = (t["S"] * R * (t["ldg"] + 1) + R * t["ldw"] + B * 2 * params) * item
        t_u = u_bytes / H200["l2_bytes_per_s"]
        t_nodes = 2 * args.node_us * 1e-6
        t_step = t_x + t_u + t_nodes
        rate = B / t_step
        cols[B] = dict(tiles=f"{t['source']}: grid {tuple(t['grid'])}, {t['threads']} threads, "
                             f"S={t['S']}, TR={t['tr']}", blocks=blocks, per_sm=per_sm,
                       waves=waves, fill=fill, flops=flops, t_floor=t_floor, t_issue=t_issue,
                       x_bytes=x_bytes, t_l2=t_l2, t_x=t_x, u_bytes=u_bytes, t_u=t_u,
                       t_nodes=t_nodes, t_step=t_step, rate=rate,
                       pct=100 * rate * 4 * m * d / H200["fp32_flops"])
    rows = [
        ("X-pass launch shape", "tiles", "{}", "from " + ("plan_xpass" if cols[args.B[0]]["tiles"].startswith("plan") else "--tr/--tm/--splits/--threads (no gpulinear.cuda.xpass yet)")),
        ("blocks; resident per SM", None, None, f"residency from {regs} registers/thread, {smem} B static smem, the block's threads (all blocks co-resident when blocks <= 132 x resident)"),
        ("blocks per SM; SM fill", None, None, "work of the busiest SM is ceil(blocks / 132) blocks: fill = (blocks / 132) / ceil(blocks / 132); assumes one resident block can keep an SM's FMA pipes busy (optimistic when few warps per scheduler)"),
        ("X-pass FLOPs", "flops", "{:.3g}", "4 m d per config-step (two passes over X), k = 1"),
        ("t at the FP32 floor (us)", "t_floor", "{:.2f}", "FLOPs / 67 TFLOP/s"),
        ("t at the issue ceiling (us)", "t_issue", "{:.2f}", f"floor / FFMA share {share:.2f}: one instruction per cycle per scheduler, so only that share of issue slots are FFMAs; share from {share_src}"),
        ("X-pass L2 bytes", "x_bytes", "{:.3g}", "X once per row tile and d-chunk, Y per row tile, W rows per split, Gpart/Lpart written once"),
        ("t from L2 (us)", "t_l2", "{:.2f}", f"at an assumed {H200['l2_bytes_per_s'] / 1e12:g} TB/s L2 bandwidth (X, 1.3 MB, stays in the 50 MB L2)"),
        ("X-pass time (us)", "t_x", "{:.2f}", "max(issue-bound time / SM fill, L2 time)"),
        ("update bytes", "u_bytes", "{:.3g}", "reads Gpart (S R d) + Lpart, writes W rows, reads and writes the params"),
        ("update time (us)", "t_u", "{:.2f}", "bytes at the L2 bandwidth (Gpart was just written; its compute is O(d) per config)"),
        ("graph node overhead (us)", "t_nodes", "{:.2f}", f"ASSUMED {args.node_us:g} us per graph-replayed kernel node, 2 nodes per step"),
        ("time per step (us)", "t_step", "{:.2f}", "X-pass + update + node overhead, run one after the other"),
        ("config-steps/s", "rate", "{:,.0f}", "B / time per step"),
        ("% of the 67 TFLOP/s floor", "pct", "{:.0f} %", "config-steps/s x 4 m d / 67e12"),
    ]
    us = {"t_floor", "t_issue", "t_l2", "t_x", "t_u", "t_nodes", "t_step"}
    for label, key, f, why in rows:
        vals = []
        for B in args.B:
            c = cols[B]
            if label.startswith("blocks;"):
                vals.append(f"{c['blocks']}; {c['per_sm']}")
            elif label.startswith("blocks per SM"):
                vals.append(f"{c['waves']:.2f}; {c['fill']:.0%}")
            else:
                v = c[key] * (1e6 if key in us else 1)
                vals.append(f.format(v))
        lines.append(f"| {label} (ESTIMATE) | " + " | ".join(vals) + f" | {why} |")
    return lines, cols


# ---- part d: latency pricing (ESTIMATES; every constant is an assumption, stated) ---------------

T_RT = 0.2e-6        # one dependent global load that hits L2: ~260-300 cycles at ~1.7 GHz plus
                     # queueing (range 0.15-0.3 us)
T_SHFL = 0.02e-6     # one warp-shuffle step (shfl.sync latency ~25-35 cycles)
T_BAR = 0.05e-6      # one __syncthreads of a 128-thread block, with the skew of its 4 warps
T_FP64 = 0.1e-6      # the optimizer's float64 arithmetic of one element (gd: a few DFMAs)
OLD_UPDATE = dict(registers=98, threads=128, barriers=21, round_trips=45)   # issue 17's reading
NEW_UPDATE = dict(round_trips=4, shuffle_steps=20, syncwarps=2)             # width-1 fast path
CUBLAS_EFF = {"large": 0.75, "k_small": 0.6, "split_k": 0.5, "tiny": 0.15}  # of 67 TFLOP/s


def _resident_blocks(regs, threads, smem=0):
    per_thread = 8 * math.ceil(regs / 8)
    return max(1, min(H200["regs_per_sm"] // (per_thread * threads),
                      H200["threads_per_sm"] // threads, H200["blocks_per_sm"],
                      H200["smem_per_sm"] // max(smem, 1) if smem else 99))


def update_old(B):
    """One 128-thread block per config; per block a chain of barriers and dependent L2 round
    trips (the review's count for the landed kernel); rounds of resident blocks."""
    o = OLD_UPDATE
    per_sm = _resident_blocks(o["registers"], o["threads"])
    rounds = math.ceil(B / (H200["sms"] * per_sm))
    t_block = o["barriers"] * T_BAR + o["round_trips"] * T_RT
    return rounds * t_block, dict(per_sm=per_sm, rounds=rounds, t_unit=t_block)


def update_new(B, regs, configs_per_block=4):
    """One warp per config, configs_per_block warps a block; the width-1 fast path's chain:
    ~4 dependent L2 round trips (bookkeeping loads; offsets; Gpart/theta; state/scratch),
    4 warp reductions of 5 shuffle steps, 2 __syncwarp, the float64 update."""
    n = NEW_UPDATE
    blocks = _resident_blocks(regs, 32 * configs_per_block)
    per_sm = blocks * configs_per_block
    rounds = math.ceil(B / (H200["sms"] * per_sm))
    t_warp = n["round_trips"] * T_RT + n["shuffle_steps"] * T_SHFL + n["syncwarps"] * 0.01e-6 \
        + T_FP64
    return rounds * t_warp, dict(per_sm=per_sm, rounds=rounds, t_unit=t_warp)


def jax_peer(B, m, d, node_s):
    """jit(vmap(step)) under lax.scan at "highest" precision: per step ~6.5 XLA kernels
    (W_e product, GEMM Z = W_e X^T, the lp epilogue loop fusion, GEMM G = D X (split-K: its
    output is only B x d), the layer update fusion, the loss reduction), each one graph node
    (XLA command buffers), the GEMMs at an assumed cuBLAS FP32 efficiency for their shapes, and
    Z and D (B x m) written and read through L2 (<= 40 MB) or HBM."""
    gemm = 2 * m * d * B
    if B < 256:
        eff1 = eff2 = CUBLAS_EFF["tiny"]
    else:
        eff1, eff2 = (CUBLAS_EFF["k_small"] if B < 4096 else CUBLAS_EFF["large"],
                      CUBLAS_EFF["split_k"])
    t_gemm = gemm / (eff1 * H200["fp32_flops"]) + gemm / (eff2 * H200["fp32_flops"])
    zd = 4 * B * m * 4                       # Z written, Z read, D written, D read (float32)
    bw = H200["l2_bytes_per_s"] if B * m * 4 * 2 <= 40e6 else H200["hbm_bytes_per_s"]
    t_mem = zd / bw
    t_nodes = 6.5 * node_s
    return t_gemm + t_mem + t_nodes, dict(t_gemm=t_gemm, t_mem=t_mem, t_nodes=t_nodes)


def latency_table(args, cols, upd_row):
    """Part d: markdown lines (every number an ESTIMATE)."""
    import gpulinear as gl
    X, _ = gl.datasets.ethanol()
    m, d = X.shape
    regs = (upd_row or {}).get("registers") or 148
    regs_src = "part b" if upd_row and upd_row.get("registers") else "ASSUMED (part b missing)"
    node = args.node_us * 1e-6
    floor = 4 * m * d / H200["fp32_flops"]
    head = ["| B | X-pass us | update us, old -> new | step us, old -> new | config-steps/s, "
            "old -> new | % FP32 floor, old -> new | JAX peer us (config-steps/s) | new / JAX |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows, notes = [], []
    for B in args.B:
        if B not in cols:
            continue
        tx = cols[B]["t_x"]
        uo, io = update_old(B)
        un, inew = update_new(B, regs)
        so, sn = tx + uo + 2 * node, tx + un + 2 * node
        tj, ij = jax_peer(B, m, d, node)
        ro, rn, rj = B / so, B / sn, B / tj
        rows.append(f"| {B:,} (ESTIMATE) | {tx * 1e6:.1f} | {uo * 1e6:.1f} -> {un * 1e6:.1f} | "
                    f"{so * 1e6:.1f} -> {sn * 1e6:.1f} | {ro / 1e6:.1f} M -> {rn / 1e6:.1f} M | "
                    f"{100 * ro * floor:.0f} % -> {100 * rn * floor:.0f} % | "
                    f"{tj * 1e6:.0f} ({rj / 1e6:.1f} M) | {rn / rj:.1f}x |")
        notes.append(f"B = {B:,}: update old {io['rounds']} round(s) of {io['per_sm']} blocks/SM x "
                     f"{io['t_unit'] * 1e6:.1f} us; new {inew['rounds']} round(s) of "
                     f"{inew['per_sm']} warps/SM x {inew['t_unit'] * 1e6:.2f} us; JAX GEMMs "
                     f"{ij['t_gemm'] * 1e6:.0f} us, Z/D {ij['t_mem'] * 1e6:.0f} us, nodes "
                     f"{ij['t_nodes'] * 1e6:.0f} us")
        if B == 60:
            notes.append(f"Fig-3 grid (60 configs in one call) x 100,000 steps: old "
                         f"{so * 1e5:.2f} s -> new {sn * 1e5:.2f} s (goal < 1 s); JAX peer "
                         f"{tj * 1e5:.1f} s")
    lines = head + rows
    lines += ["", "Every cell is an ESTIMATE (no GPU ran). Per B:"] + [f"- {n}" for n in notes]
    lines += ["", f"Constants (assumed): dependent L2 round trip {T_RT * 1e6:.2f} us, shuffle "
              f"step {T_SHFL * 1e6:.2f} us, block barrier {T_BAR * 1e6:.2f} us, float64 update "
              f"{T_FP64 * 1e6:.2f} us, {args.node_us:g} us per graph kernel node (2 per step "
              f"for ours, 6.5 for JAX); old update kernel {OLD_UPDATE}; new update kernel "
              f"{regs} registers ({regs_src}), 4 configs (warps) per 128-thread block, chain "
              f"{NEW_UPDATE}; JAX cuBLAS FP32 efficiencies {CUBLAS_EFF}. The X-pass column is "
              "part c's (the same for old and new here: its own changes are priced there).",
              f"FP32 floor: {1 / floor / 1e6:.1f} M config-steps/s (4 m d flops at 67 TFLOP/s)."]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cuobjdump", default=None, help="path of cuobjdump (else PATH, pip wheels)")
    ap.add_argument("--nvcc", default=None)
    ap.add_argument("--B", type=int, nargs="+", default=[60, 1024, 8192, 1000000])
    ap.add_argument("--tr", type=int, default=64, help="X-pass rows per block (no plan_xpass)")
    ap.add_argument("--tm", type=int, default=32, help="X-pass examples per tile (no plan_xpass)")
    ap.add_argument("--splits", type=int, default=0, help="X-pass example splits; 0: auto")
    ap.add_argument("--threads", type=int, default=256, help="X-pass threads per block")
    ap.add_argument("--regs", type=int, default=128, help="X-pass registers (no xpass.cu)")
    ap.add_argument("--smem", type=int, default=32768, help="X-pass static smem (no xpass.cu)")
    ap.add_argument("--ffma-share", type=float, default=0.75,
                    help="X-pass hot-loop FFMA share when its SASS is not available")
    ap.add_argument("--node-us", type=float, default=2.5, help="us per graph kernel node")
    args = ap.parse_args(argv)

    from gpulinear.cuda import _loader
    nvcc = find_tool("nvcc", args.nvcc)
    ptxas = find_tool("ptxas")
    cuobjdump = find_tool("cuobjdump", args.cuobjdump)
    out = ["### a. CUDA C++ kernels: ptxas resources and the hot loop's SASS (sm_90)", ""]
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as workdir:
        if nvcc is None:
            notes.append("nvcc not found: part a skipped (install the CUDA toolkit)")
        else:
            ver = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
            out.append(f"nvcc: {ver.strip().splitlines()[-1] if ver.strip() else '?'}; "
                       f"cuobjdump: {cuobjdump or 'not found'}")
            for name in _loader.kernel_names():
                report, cubin, err = compile_cu(name, workdir, nvcc)
                if err:
                    notes.append(f"{name}: nvcc failed: {err}")
                    continue
                mixes, why = loop_mix(cubin, cuobjdump)
                if why:
                    notes.append(why)
                rows += kernel_rows(name, report, mixes)
        b_rows, b_note = numba_update_rows(workdir, ptxas, cuobjdump) if ptxas else \
            ([], "skipped: ptxas not found")
    out += ["", resources_table(rows)] if rows else []
    out += [""] + [f"- {n}" for n in dict.fromkeys(notes)]
    out += ["", "FMA share = FFMA (float) or DFMA (double) instructions / all instructions of the "
            "hottest innermost loop (the loop body between a backward branch and its target; "
            "NOPs not counted).", "",
            "### b. Numba update kernel (numba.cuda.compile_ptx, cc 9.0, then ptxas -v, or "
            "nvJitLink where ptxas is older than the PTX)", ""]
    out += [resources_table(b_rows)] if b_rows else []
    out += [f"- {b_note}"] if b_note else []
    info = {r["kernel"]: r for r in rows}
    out += ["", "### c. Roofline ESTIMATE: one step, depth 3, width 1, l4, Ethanol (m 2565, d 128), "
            "float32, k = 1", ""]
    roof_lines, cols = roofline(args, info)
    out += roof_lines
    upd = next((r for r in b_rows if "float32" in r["kernel"]), None)
    out += ["", "### d. The estimate re-derived: the update kernel priced by latency, old vs new, "
            "and a JAX jit(vmap)+scan peer priced the same way (depth 3, width 1, l4, gd, "
            "Ethanol, float32)", ""] + latency_table(args, cols, upd)
    out += ["", "Every number above is an ESTIMATE from instruction counts and published or "
            "assumed H200 figures (132 SMs, 67 TFLOP/s FP32, ~6 TB/s L2 assumed); no kernel ran."]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
