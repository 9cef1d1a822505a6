"""The atlas's cell reading (speed-up, its direction, settled or not) on synthetic curves with
known answers, and a tiny end-to-end run of experiments/atlas.py."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from gpulinear import analysis

ROOT = Path(__file__).resolve().parents[1]


def _atlas():
    spec = importlib.util.spec_from_file_location("atlas", ROOT / "experiments" / "atlas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STEPS = np.arange(0, 1001, 5)


def _decay(rate, offset=0.0):
    """Gap 1 until `offset`, then exp(-rate (t - offset))."""
    return np.exp(-rate * np.clip(STEPS - offset, 0, None))


def test_speedup_direction_words():
    assert analysis.speedup_direction(2.0) == "faster"
    assert analysis.speedup_direction(0.5) == "slower"
    assert analysis.speedup_direction(1.0) == "neither"
    assert analysis.speedup_direction(float("nan")) == "no progress"
    assert analysis.speedup_direction(analysis.FASTER * 1.01) == "faster"
    assert analysis.speedup_direction(1 / analysis.FASTER * 0.99) == "slower"


def test_twice_the_rate_reads_two_and_is_settled():
    cell = _atlas().read_cell(STEPS, _decay(0.01), _decay(0.02))
    assert cell["speedup"] == pytest.approx(2.0, rel=0.05)
    assert cell["speedup_first_half"] == pytest.approx(2.0, rel=0.05)
    assert cell["direction"] == "faster" and cell["settled"] and not cell["upper_bound"]


def test_a_plateau_offset_is_unsettled_when_the_direction_moves():
    # model: flat until t0 = 200, then twice depth 1's rate.  Depth 1 reaches its level at f T,
    # the model at t0 + f T / 2; the median over f = .1/.25/.5/1 is the mean of the .25 and .5
    # values: (250/325 + 500/450) / 2 = 0.94 on the whole run (neither) and
    # (125/262.5 + 250/325) / 2 = 0.62 on the first half (slower)
    cell = _atlas().read_cell(STEPS, _decay(0.01), _decay(0.02, offset=200))
    assert cell["speedup"] == pytest.approx((250 / 325 + 500 / 450) / 2, rel=0.03)
    assert cell["speedup_first_half"] == pytest.approx((125 / 262.5 + 250 / 325) / 2, rel=0.03)
    assert (cell["direction"], cell["direction_first_half"]) == ("neither", "slower")
    assert not cell["settled"]


def test_stall_is_an_upper_bound_and_no_progress_is_nan():
    flat = np.ones_like(STEPS, dtype=float)
    stall = _atlas().read_cell(STEPS, _decay(0.01), flat)
    assert stall["upper_bound"] and stall["direction"] == "slower"
    assert stall["speedup"] == pytest.approx(np.median([0.1, 0.25, 0.5, 1.0]), rel=0.02)
    neither = _atlas().read_cell(STEPS, flat, flat)
    assert np.isnan(neither["speedup"]) and neither["direction"] == "no progress"
    assert not neither["settled"]


def test_tiny_atlas_run_writes_every_cell(tmp_path):
    pytest.importorskip("matplotlib")
    atlas = _atlas()
    data = atlas.run(tmp_path, tiny=True, backend="numpy")
    m = atlas.MODES["tiny"]
    assert len(data["cells"]) == len(m["p"]) * len(m["inits"]) * len(atlas.DEPTHS) * len(
        m["y_scales"])
    for c in data["cells"]:
        assert c["direction"] in ("faster", "slower", "neither", "no progress")
        assert c["settled"] == (c["direction"] == c["direction_first_half"]
                                and c["direction"] != "no progress")
        assert c["lr"] > 0 and c["lr_depth1"] > 0
    assert (tmp_path / "atlas.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "atlas.json").read_text())
    assert len(saved["markdown"]) == 2 + len(m["p"]) * len(atlas.DEPTHS)
    assert "not settled" in saved["evidence"][0]
