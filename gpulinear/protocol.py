"""The choices the paper leaves open, as named axes, and claims judged under every reading.

Axes (each a documented list, not a constant in a script):
  features   "zscore" (each column to mean 0, std 1) and "maxabs" (each column into [-1, 1]):
             the paper does not say how it scaled Ethanol's features.  ("zscore-ystd" of the
             earlier report was z-score with the target rescaled by ~4 %: a target-scale
             variant, now covered by y_scale, so it is dropped.)
  y_scale    1 and 10: the target's unit is not given either (the bundled target is the centred
             concentration as published); x10 moves L* and the gradients' size by 10^p, so it
             tests whether a verdict is an artefact of one scale.
  rule       how "the configuration giving fastest convergence" is picked (analysis.RULES):
             (a) mean_log_gap, (b) final, (c) steps_to the level the baseline reaches at its end.
  semantics  optimizer defaults of torch.optim and of TensorFlow 1, which the paper ran
             (optim.SEMANTICS): only where an adaptive optimizer is compared.
  resolution the paper's grid vs the refined lr search (lrsearch): reported side by side; the
             headline uses "refined".

A claim's headline verdict (analysis.robust_verdict) is "holds" / "does not hold" only where every
variant agrees, else "depends on <axis>".  In quick and tiny runs a variant's verdict is kept only
where the first half of the run gives the same verdict; otherwise it reads "not testable at this
length" (never a negative verdict that a longer run could contradict).
"""
from __future__ import annotations

import numpy as np

from . import analysis

FEATURES = ("zscore", "maxabs")
Y_SCALES = (1.0, 10.0)
RULE_LABELS = {"mean_log_gap": "a: mean log gap", "final": "b: final gap",
               "steps_to": "c: steps to baseline's end level", "reach_and_stay": "d: reach & stay"}


def ethanol_variant(features: str, y_scale: float):
    """(X, y) of the bundled Ethanol data with `features` scaling and the target x y_scale."""
    from .datasets import ethanol
    X, y = ethanol(features=features, target="given")
    return X, y * float(y_scale)


def data_label(features, y_scale) -> str:
    return f"{features}, y x{y_scale:g}"


def seed_medians(steps, base_gaps, model_gaps) -> list:
    """Per seed, the median over the baseline's levels of the model's speed-up (analysis)."""
    return [analysis.median_speedup(analysis.speedups(steps, b, m))
            for b, m in zip(base_gaps, model_gaps)]


def med(values) -> float:
    v = [x for x in values if np.isfinite(x)]
    return float(np.median(v)) if v else float("nan")


def settled(judge, steps, mode: str) -> str:
    """judge(n_records) -> verdict on the first n records.  Full runs: the whole run's verdict.
    Quick/tiny: that verdict if the first half of the run gives the same, else NOT_TESTABLE."""
    whole = judge(len(steps))
    if mode == "full":
        return whole
    half = judge(max(2, len(steps) // 2))
    return whole if half == whole else analysis.NOT_TESTABLE


def claim_record(claim: str, variants: dict, axes: tuple, measured: str, grid_variants=None,
                 mode="full", needs=None) -> dict:
    """One claim for the report: the headline over `variants` ({tuple of axis values: verdict}),
    its reason, the per-variant verdicts (refined and, where given, on the paper's grid)."""
    head, reason = analysis.robust_verdict(variants, axes)
    if head == analysis.NOT_TESTABLE or (mode != "full" and analysis.NOT_TESTABLE in
                                         variants.values() and head.startswith("depends")):
        head = analysis.NOT_TESTABLE
        reason = (f"this {mode} run is too short to settle it in "
                  f"{sum(v == analysis.NOT_TESTABLE for v in variants.values())} of "
                  f"{len(variants)} variants" + (f"; {needs} settles it" if needs else ""))
    out = {"claim": claim, "measured": measured, "verdict": head, "reason": reason,
           "axes": list(axes),
           "variants": {", ".join(map(_fmt_axis, k)): v for k, v in variants.items()}}
    if grid_variants:
        out["grid_variants"] = {", ".join(map(_fmt_axis, k)): v for k, v in grid_variants.items()}
        out["grid_verdict"] = analysis.robust_verdict(grid_variants, axes)[0]
    return out


def variant_claims(texts: dict, variants: dict, lines: dict, axes: tuple, mode: str,
                   needs: str) -> tuple[list, list]:
    """(claims, evidence sentences) for claims judged per variant at both lr resolutions.

    texts {key: the paper's words}; variants {"refined"/"grid": {key: {variant: verdict}}};
    lines {key: [measured text per data variant]}."""
    claims = [claim_record(text, variants["refined"][key], axes, " || ".join(lines[key]),
                           grid_variants=variants["grid"][key], mode=mode, needs=needs)
              for key, text in texts.items()]
    evidence = [f"{c['claim']}: {c['verdict']} ({c['reason']}); on the paper's grid alone: "
                f"{c['grid_verdict']}." for c in claims]
    return claims, evidence


def spread(values) -> str:
    """'1.9x (1.7-2.2)' from per-seed speed-ups: median, then the range over seeds."""
    v = [x for x in values if np.isfinite(x)]
    if not v:
        return "n/a"
    return f"{np.median(v):.2g}x" + (f" ({min(v):.2g}-{max(v):.2g})" if len(v) > 1 else "")


def span(values) -> str:
    """'1.7-2.2x': the range of the finite values (speed-ups over variants or seeds), or 'n/a'."""
    v = [x for x in values if np.isfinite(x)]
    return f"{min(v):.2g}-{max(v):.2g}x" if v else "n/a"


def _fmt_axis(value) -> str:
    if isinstance(value, float):
        return f"y x{value:g}"
    return RULE_LABELS.get(value, str(value))
