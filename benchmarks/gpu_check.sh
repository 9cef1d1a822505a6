#!/usr/bin/env bash
# GPU check for a session with one CUDA GPU (H100 or H200): ONE script, under 8 minutes, downloads
# nothing.  The device machines have NO network: pip cannot reach PyPI there, so CuPy and
# numba-cuda[cu12|cu13] must already be importable (a virtual environment carried over with the
# repository, PYTHON=<its python>) or installable from a carried folder of wheels
# (GPULINEAR_WHEELS, --no-index).  In order, each step with its own timeout so one hang cannot
# eat the slot: the device and `gpulinear info` (which compiles and loads both fused-step kernels
# and says which step a call takes), benchmarks/timing_split.py (CUDA events around graphs of
# the X-pass alone, the update alone and the whole step: where the time goes, no nsys), every
# test marked `gpu`, then benchmarks/bench_gpu.py with what is left, and one summary table.
#   bash benchmarks/gpu_check.sh                 # from anywhere; PYTHON=... to pick the interpreter
#   GPULINEAR_WHEELS=/path/to/wheels bash benchmarks/gpu_check.sh   # install CuPy/numba-cuda from there
# Outputs: benchmarks/gpu_check.json (every benchmark number, rewritten after each point),
# benchmarks/timing_split.json, benchmarks/gpu_check.log (everything printed).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
start=$(date +%s)
TOTAL=470                                        # seconds: the 8-minute slot less a margin
elapsed() { echo $(( $(date +%s) - start )); }
exec > >(tee benchmarks/gpu_check.log) 2>&1

# This source tree wins over any installed gpulinear; nothing is installed for it.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.max.sm --format=csv \
    2>/dev/null || echo "nvidia-smi: not found"
cuda_major=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\)\..*/\1/p' | head -1)
extra=cuda${cuda_major:-12}
[ "$extra" = cuda12 ] || [ "$extra" = cuda13 ] || extra=cuda13

missing=$("$PY" - <<'EOF'
import importlib.util
print(" ".join(n for n, mod in (("cupy", "cupy"), ("numba-cuda", "numba.cuda"))
               if importlib.util.find_spec(mod.split(".")[0]) is None
               or (mod == "numba.cuda" and importlib.util.find_spec(mod) is None)))
EOF
)
if [ -n "$missing" ]; then
    # the extra's requirements, read from pyproject.toml (one list of them, not two)
    reqs=$("$PY" -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['project']['optional-dependencies']['$extra']))")
    echo "gpu_check: missing: $missing.  This driver supports CUDA ${cuda_major:-?}: install the"
    echo "  project's '$extra' extra:  pip install -e '.[$extra]'   (that is: $reqs)"
    if [ -n "${GPULINEAR_WHEELS:-}" ] && [ -d "$GPULINEAR_WHEELS" ]; then
        echo "gpu_check: installing $reqs from $GPULINEAR_WHEELS (no index)"
        # shellcheck disable=SC2086
        "$PY" -m pip install -q --no-index --find-links "$GPULINEAR_WHEELS" $reqs \
            || echo "gpu_check: the install from $GPULINEAR_WHEELS failed (see above)"
    else
        echo "  (or carry the wheels in a folder and set GPULINEAR_WHEELS to it)"
    fi
fi
timeout 120 "$PY" -c "import gpulinear.cuda as c; print(c.format_device_info())" \
    || echo "gpu_check: device info failed or timed out (120 s)"

echo "== timing split: X-pass vs update, CUDA events around graphs  ($(elapsed) s)"
timeout 120 "$PY" benchmarks/timing_split.py --B 60 1024 8192 --json benchmarks/timing_split.json
rc_split=$?
[ "$rc_split" -eq 124 ] && echo "gpu_check: the timing split hit its 120 s timeout (JSON has the finished points)"

echo "== pytest -m gpu  ($(elapsed) s)"
timeout 120 "$PY" -m pytest -m gpu -q -rs --durations=8 -p no:cacheprovider
rc_tests=$?
[ "$rc_tests" -eq 124 ] && echo "gpu_check: pytest -m gpu hit its 120 s timeout"

# The benchmark gets what is left up to TOTAL - 20 s; its --budget keeps 45 s of that back for the
# call in flight when the budget runs out (and JAX's start), `timeout` is the hard stop.
left=$(( TOTAL - 20 - $(elapsed) ))
[ "$left" -lt 90 ] && left=90
budget=$(( left - 45 ))
echo "== benchmarks/bench_gpu.py --budget $budget  ($(elapsed) s; hard stop after $left s)"
timeout "$left" "$PY" benchmarks/bench_gpu.py --budget "$budget" --json benchmarks/gpu_check.json
rc_bench=$?
[ "$rc_bench" -eq 124 ] && echo "gpu_check: the benchmark hit its timeout; the JSON holds every finished point"

echo "== summary  ($(elapsed) s)"
if [ -f benchmarks/gpu_check.json ]; then
    "$PY" benchmarks/bench_gpu.py --summary benchmarks/gpu_check.json
fi
echo "gpu_check: timing split rc=$rc_split, pytest -m gpu rc=$rc_tests, bench rc=$rc_bench, $(elapsed) s in all"
[ "$rc_tests" -eq 0 ] && [ "$rc_bench" -eq 0 ]
