"""gpulinear.protocol and the experiments' verdict rules: variants combine into a headline only
where they agree; quick runs never print a verdict their own first half contradicts; the Fig
5-left stall rule needs progress between 30k and the end; the report renders the robustness
table and figure from claims."""
import numpy as np
import pytest

from gpulinear import analysis, protocol
from gpulinear.report import load_experiment, robustness_figure, robustness_lines


def test_settled_keeps_a_verdict_only_where_the_first_half_agrees():
    steps = np.arange(100)
    flips = lambda n: "holds" if n > 60 else "does not hold"      # noqa: E731
    assert protocol.settled(flips, steps, "full") == "holds"
    assert protocol.settled(flips, steps, "quick") == analysis.NOT_TESTABLE
    assert protocol.settled(lambda n: "does not hold", steps, "quick") == "does not hold"


def test_claim_record_headline_and_reason():
    v = {("zscore, y x1", "final"): "holds", ("maxabs, y x1", "final"): "does not hold"}
    c = protocol.claim_record("depth accelerates", v, ("data", "rule"), "numbers",
                              grid_variants={k: "does not hold" for k in v})
    assert c["verdict"] == "depends on data" and "zscore" in c["reason"]
    assert c["grid_verdict"] == "does not hold" and len(c["variants"]) == 2
    quick = protocol.claim_record("x", {**v, ("zscore, y x10", "final"):
                                        analysis.NOT_TESTABLE}, ("data", "rule"), "n",
                                  mode="quick", needs="100k steps")
    assert quick["verdict"] == analysis.NOT_TESTABLE and "100k steps" in quick["reason"]


def test_ethanol_variant_scales_the_target_only():
    X1, y1 = protocol.ethanol_variant("zscore", 1.0)
    X10, y10 = protocol.ethanol_variant("zscore", 10.0)
    np.testing.assert_array_equal(X1, X10)
    np.testing.assert_allclose(y10, 10 * y1)
    Xm, _ = protocol.ethanol_variant("maxabs", 1.0)
    assert np.abs(Xm).max() == pytest.approx(1.0)


@pytest.mark.parametrize("first4, first8, expected", [
    (65_000, np.nan, "holds"),                 # the paper's reading
    (np.nan, np.nan, "partly"),                # depth 4 never starts: not "holds"
    (5_000, np.nan, "partly"),                 # depth 4 starts far too early
    (65_000, 90_000, "partly"),                # depth 8 is not stuck
    (500, 900, "does not hold")])
def test_fig5_left_stall_rule(first4, first8, expected):
    fig5 = load_experiment("fig5_left")
    assert fig5.stall_verdict(first4, first8, 100_000) == expected


def test_fig3_and_fig4_left_judges():
    fig3 = load_experiment("fig3")
    assert fig3.judge("l4", 1.6, 2.0) == "holds" and fig3.judge("l4", 1.0, 1.2) == "partly"
    assert fig3.judge("l2", 0.8, 0.9) == "holds" and fig3.judge("l2", 1.2, 1.5) == \
        "does not hold"
    fig4 = load_experiment("fig4_left")
    models = fig4.models()
    assert models[("adagrad", "tf1")]["initial_accumulator"] == 0.1
    assert models[("adadelta", "tf1")]["rho"] == 0.95 and "rho" not in models[("adadelta", "torch")]


def test_robustness_table_and_figure(tmp_path):
    claim = protocol.claim_record("c", {("a", "r"): "holds", ("b", "r"): "partly"},
                                  ("data", "rule"), "m")
    sections = [("fig3", "t", {"claims": [claim, {"claim": "plain", "measured": "",
                                                  "verdict": "holds"}]}, "ran", 1.0)]
    lines = robustness_lines(sections)
    rows = [row for row in lines if row.startswith("| fig3")]
    assert len(rows) == 2 and "1 of 2" in rows[0] and "depends on data" in rows[0]
    # a claim with no variant run is listed too, saying it has one reading
    assert "plain" in rows[1] and "one reading" in rows[1] and "1 of 1" in rows[1]
    assert robustness_figure(sections, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000
    assert not robustness_figure([("x", "t", {"claims": []}, "ran", 0)], tmp_path / "n.png")


def test_span_is_the_range_of_the_finite_values():
    assert protocol.span([1.23, float("nan"), 0.5, 2.0]) == "0.5-2x"
    assert protocol.span([float("nan")]) == "n/a" and protocol.span([]) == "n/a"
