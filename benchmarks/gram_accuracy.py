"""float32 accuracy of the l2 Gram path near the optimum, against the data path (gram=False).

The same problem and configs as tests/test_cpu_engine.py::test_gram_float32_near_the_optimum_...:
a correlated regression (m 400, d 12), depths 1/2, lr 0.05/0.1, identity init, 2000 gd steps;
the float64 data-path run is the reference.  Prints, per path, the largest |L32 - L64| / L* at
the last step and the relative error of the gap L - L* per config.

    python benchmarks/gram_accuracy.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import gpulinear as gl
from gpulinear.gram import GramL2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_cpu_engine import regression  # noqa: E402  (the test's problem, not a copy of it)


def main():
    X, Y = regression(m=400, d=12, seed=3)
    cfgs = gl.grid(depth=[1, 2], lr=[0.05, 0.1], init="identity", seed=1)
    kw = dict(loss="l2", steps=2000, log_every=500)
    ref = gl.train(X, Y, cfgs, gram=False, **kw)
    l_star = GramL2.from_data(X, Y).l_star
    gap_ref = ref.loss[:, -1] - l_star
    print(f"L* {l_star:.6g}; float64 gap / L* at step 2000: "
          + ", ".join(f"{g / l_star:.2e}" for g in gap_ref))
    print(f"eps32 = {np.finfo(np.float32).eps:.2e}")
    for gram in (True, False):
        r32 = gl.train(X, Y, cfgs, dtype="float32", gram=gram, **kw)
        loss_err = np.abs(r32.loss[:, -1] - ref.loss[:, -1]).max() / l_star
        gap_err = np.abs((r32.loss[:, -1] - l_star) - gap_ref) / gap_ref
        print(f"{'Gram path' if gram else 'data path'} float32: max |L32 - L64| / L* = "
              f"{loss_err:.2e}; gap relative error " + ", ".join(f"{e:.1e}" for e in gap_err))


if __name__ == "__main__":
    main()
