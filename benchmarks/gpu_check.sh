#!/usr/bin/env bash
# GPU check, for a session that has a CUDA GPU (written for one H200).  Under 8 minutes; downloads
# nothing.  Runs every test marked `gpu` (kernels vs twins, gl.train cuda vs numpy, graphs,
# chunking), then benchmarks/bench_gpu.py, and prints a short table.
#   bash benchmarks/gpu_check.sh            # from the repository root or anywhere
# Outputs: benchmarks/gpu_check.json (the benchmark's numbers), the pytest summary on stdout.
set -u
cd "$(dirname "$0")/.."
start=$(date +%s)

# The project itself, without touching its dependencies (they must already be installed).
if python -c "import hatchling" 2>/dev/null \
        && pip install --no-deps --no-build-isolation -e . -q 2>/dev/null; then
    echo "gpu_check: gpulinear installed editable"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu_check: using PYTHONPATH=$PWD"
fi
python -c "import gpulinear.cuda as c; print(c.format_device_info())"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv 2>/dev/null

echo "== pytest -m gpu"
timeout 240 python -m pytest -m gpu -q -rs --durations=8 -p no:cacheprovider
rc_tests=$?

echo "== benchmarks/bench_gpu.py"
left=$(( 450 - ($(date +%s) - start) ))
[ "$left" -lt 120 ] && left=120
timeout "$left" python benchmarks/bench_gpu.py --budget $(( left / 3 )) --fig3-cap $(( left / 6 )) \
    --json benchmarks/gpu_check.json
rc_bench=$?

echo "gpu_check: tests rc=$rc_tests, bench rc=$rc_bench, $(( $(date +%s) - start )) s"
[ "$rc_tests" -eq 0 ] && [ "$rc_bench" -eq 0 ]
