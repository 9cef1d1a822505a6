"""Figure 4-left: depth-3 GD against AdaGrad and AdaDelta on depth 1, each at its best lr, l4.

Paper: "the implicit acceleration of overparameterization outperforms both AdaGrad and AdaDelta
(former is actually slower than plain gradient descent)".  The paper ran TensorFlow 1, whose
AdaGrad starts its accumulator at 0.1 without eps and whose AdaDelta uses rho 0.95, eps 1e-8;
torch.optim's defaults differ, so both are run (gpulinear.optim.semantics) and judged apart, with
the data variants, selection rules and lr resolution of gpulinear.protocol.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

import gpulinear as gl
from gpulinear import analysis, protocol
from gpulinear.lrsearch import RESOLUTIONS, lr_search
from gpulinear.optim import semantics
from gpulinear.report import optimal_losses, save_json, timed_train

NAME = "fig4_left"
TITLE = "Depth-3 GD vs AdaGrad and AdaDelta on depth 1, l4 (Fig 4-left)"
DATA = (("zscore", 1.0), ("maxabs", 1.0), ("zscore", 10.0))
RULES = ("mean_log_gap", "final", "steps_to")
FRAMEWORKS = ("torch", "tf1")
MODES = {
    "tiny": {"data": DATA[:1], "steps": 300, "lrs": (1e-3, 1e-2, 0.1), "seeds": 2},
    "quick": {"data": DATA, "steps": 10_000, "lrs": gl.LR_GRID, "seeds": 1},
    "full": {"data": DATA, "steps": 100_000, "lrs": gl.LR_GRID, "seeds": 3},
}
# Verdict rules, fixed before the paper-length run, on speed-ups (median over seeds of the median
# over the baseline's levels; lr chosen per model on the first seed):
#   "outperforms both": depth-3 GD over AdaGrad and over AdaDelta (same framework's semantics);
#                       holds if both > FASTER, partly if one is.
#   "AdaGrad slower than plain GD": AdaGrad over depth-1 GD; holds if < 1 / FASTER, partly if < 1.
AXES = ("data", "rule", "semantics")
CLAIMS = {"both": "the implicit acceleration of overparameterization outperforms both AdaGrad "
                  "and AdaDelta",
          "adagrad": "[AdaGrad] is actually slower than plain gradient descent"}


RULE_TEXT = {"both": f"holds if both > {analysis.FASTER:g}x, partly if one is",
             "adagrad": f"holds if < 1/{analysis.FASTER:g}, partly if < 1"}
WHY_PAIRS = {"both": ("vs AdaGrad", "vs AdaDelta"), "adagrad": ("AdaGrad vs GD",)}
WHY_NAMES = {"vs AdaGrad": "depth-3 GD over AdaGrad", "vs AdaDelta": "over AdaDelta",
             "AdaGrad vs GD": "AdaGrad over depth-1 GD"}


def why(claim_key, runs) -> str:
    """The numbers behind a headline, from the runs record (in memory or read back from the
    JSON): the range over variants (data x rule x semantics, refined lrs) of each compared
    speed-up, and the rule they were judged by."""
    parts = [f"{WHY_NAMES[name]} " + protocol.span(
        [protocol.med(rec["speedups"][key][name]) for rec in runs.values()
         for key in rec["speedups"] if key.startswith("refined ")])
        for name in WHY_PAIRS[claim_key]]
    return (", ".join(parts) + f" across the variants (refined lrs; rule: "
            f"{RULE_TEXT[claim_key]})")


def models() -> dict:
    out = {("gd", 3): dict(depth=3, loss="l4"), ("gd", 1): dict(depth=1, loss="l4")}
    for opt in ("adagrad", "adadelta"):
        for fw in FRAMEWORKS:
            out[(opt, fw)] = dict(depth=1, loss="l4", optimizer=opt, **semantics(fw, opt))
    return out


def config_steps(mode: str) -> dict:
    m = MODES[mode]
    per = 6 * (len(m["lrs"]) + 12) + 2 + 6 * 2 * (m["seeds"] - 1)
    return {"l4": per * m["steps"] * len(m["data"])}


def run(out: Path, quick: bool = True, backend: str = "auto", tiny: bool = False, seed: int = 0,
        scale: float = 1.0):
    """scale multiplies the mode's step counts (short rate measurements)."""
    out = Path(out)
    mode = "tiny" if tiny else ("quick" if quick else "full")
    m = MODES[mode]
    steps = max(10, int(m["steps"] * scale))
    seeds = tuple(seed + s for s in range(m["seeds"]))
    out.mkdir(parents=True, exist_ok=True)
    mods = models()
    # AdaDelta's torch default lr is 1.0, outside the paper's grid: include it for AdaDelta
    lrs = {k: list(m["lrs"]) + ([1.0] if k[0] == "adadelta" else []) for k in mods}
    data = {"claims": [], "figures": [], "runs": {}, "mode": mode}
    variants = {res: {c: {} for c in CLAIMS} for res in RESOLUTIONS}
    lines = {c: [] for c in CLAIMS}
    for features, y_scale in m["data"]:
        label = protocol.data_label(features, y_scale)
        X, y = protocol.ethanol_variant(features, y_scale)
        lstar = optimal_losses(X, y, ["l4"])["l4"]
        search = lr_search(X, y, mods, lrs, steps, lambda c: lstar,
                           train=functools.partial(timed_train), label=f"fig4_left {label}",
                           baseline=("gd", 1), rules=RULES, seeds=seeds,
                           log_every=max(1, steps // 400), backend=backend)
        rec = {"steps": steps, "optimal_loss": lstar, "lr_search": search.summary(),
               "seeds": list(seeds), "speedups": {}}
        for res in RESOLUTIONS:
            for rule in RULES:
                for fw in FRAMEWORKS:
                    pairs = {"vs AdaGrad": (("adagrad", fw), ("gd", 3)),
                             "vs AdaDelta": (("adadelta", fw), ("gd", 3)),
                             "AdaGrad vs GD": (("gd", 1), ("adagrad", fw))}
                    rec["speedups"][f"{res} {rule} {fw}"] = {
                        name: protocol.seed_medians(search.steps, search.gaps(res, rule, b),
                                                    search.gaps(res, rule, mdl))
                        for name, (b, mdl) in pairs.items()}

                    def at(n, res=res, rule=rule, pairs=pairs):
                        return {name: protocol.med(protocol.seed_medians(
                            search.steps[:n], [g[:n] for g in search.gaps(res, rule, b)],
                            [g[:n] for g in search.gaps(res, rule, mdl)]))
                            for name, (b, mdl) in pairs.items()}

                    def both(n, at=at):
                        v = at(n)
                        return analysis.verdict(min(v["vs AdaGrad"], v["vs AdaDelta"]) >
                                                analysis.FASTER, max(v["vs AdaGrad"],
                                                                     v["vs AdaDelta"]) >
                                                analysis.FASTER)

                    def slower(n, at=at):
                        v = at(n)["AdaGrad vs GD"]
                        return analysis.verdict(v < 1 / analysis.FASTER, v < 1)
                    key = (label, rule, fw)
                    variants[res]["both"][key] = protocol.settled(both, search.steps, mode)
                    variants[res]["adagrad"][key] = protocol.settled(slower, search.steps, mode)
        for c in CLAIMS:
            lines[c].append(_measured(label, search, rec, c, seeds))
        data["runs"][label] = rec
        fig = "fig4_left.png" if not data["figures"] else f"fig4_left_{features}_y{y_scale:g}.png"
        _plot(search, out / fig, f"Ethanol ({label}), l4, best lr per model (refined, rule a)")
        data["figures"].append(fig)
    data["claims"], data["evidence"] = protocol.variant_claims(
        CLAIMS, variants, lines, AXES, mode, needs="the paper's 100,000 steps (--full)")
    for claim, key in zip(data["claims"], CLAIMS):
        claim["reason"] += "; " + why(key, data["runs"])
    data["setup"] = (f"l4, N(0, 0.01^2) init; depth-3 GD, depth-1 GD, AdaGrad and AdaDelta on "
                     f"depth 1 each with torch.optim's and TensorFlow 1's semantics "
                     f"({ {fw: {o: semantics(fw, o) for o in ('adagrad', 'adadelta')} for fw in FRAMEWORKS} }); "
                     f"data {[protocol.data_label(*d) for d in m['data']]}; lr grid "
                     f"{list(m['lrs'])} (AdaDelta also 1.0), refined around every rule's pick to "
                     f"14 %; rules {[protocol.RULE_LABELS[r] for r in RULES]} (c: the level "
                     f"depth-1 GD reaches at its end); {steps:,} steps; seeds {list(seeds)}.")
    return save_json(out, NAME, data)


def _measured(label, search, rec, claim, seeds) -> str:
    parts = []
    for fw in FRAMEWORKS:
        for rule in RULES:
            sp = rec["speedups"][f"refined {rule} {fw}"]
            lr = {k: search.lr("refined", rule, k) for k in
                  (("gd", 3), ("gd", 1), ("adagrad", fw), ("adadelta", fw))}
            if claim == "both":
                parts.append(f"{fw} rule {protocol.RULE_LABELS[rule][0]}: depth-3 GD (lr "
                             f"{lr[('gd', 3)]:.3g}) over AdaGrad (lr {lr[('adagrad', fw)]:.3g}) "
                             f"{protocol.spread(sp['vs AdaGrad'])}, over AdaDelta (lr "
                             f"{lr[('adadelta', fw)]:.3g}) {protocol.spread(sp['vs AdaDelta'])}")
            else:
                parts.append(f"{fw} rule {protocol.RULE_LABELS[rule][0]}: AdaGrad (lr "
                             f"{lr[('adagrad', fw)]:.3g}) over depth-1 GD (lr "
                             f"{lr[('gd', 1)]:.3g}) {protocol.spread(sp['AdaGrad vs GD'])}")
    return f"[{label}, {len(seeds)} seed(s)] " + "; ".join(parts)


def _plot(search, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpulinear.report import finish_figure
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, fw in zip(axes, FRAMEWORKS):
        for k in (("gd", 3), ("gd", 1), ("adagrad", fw), ("adadelta", fw)):
            g = search.gaps("refined", "mean_log_gap", k)[0]
            ax.plot(search.steps, np.clip(g, 1e-12, 1e12),
                    label=f"{k[0]} {'depth ' + str(k[1]) if k[0] == 'gd' else fw}, lr "
                          f"{search.lr('refined', 'mean_log_gap', k):.3g}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{fw} semantics")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("L - L*")
    fig.suptitle(title)
    finish_figure(fig, path, axes)


if __name__ == "__main__":
    from gpulinear.report import experiment_cli
    sys.exit(experiment_cli(sys.modules[__name__]))
