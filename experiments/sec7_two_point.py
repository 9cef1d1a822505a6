"""Section 7 and Appendix B: the two-point problem, where depth 2 accelerates l4 regression.

Two training points ([1, 0], y1) and ([0, 1], y2), y1 >> y2, l4 loss.  gpulinear's loss is the
MEAN over the two points, half the paper's sum, so GD with our lr follows the paper's iteration
with eta = lr / 2.  In our units:
    GD diverges unless lr < 4 / y1^2                 (paper: eta_GD < 2 / y1^2, Eq 45)
    App B's lr for the N = 2 rule: 1 / (eps1 y1^2)   (paper: 1 / (2 eps1 y1^2))
    the w2-rate it induces:        1 / (eps1 y1)     (paper: eta_OP = 1 / (2 eps1 y1), Eq 47)
and the ratio eta_OP / eta_GD > y1 / (4 eps1) is the same in both units.

App B starts from w(0) = (eps1, eps2) with eps1 / eps2 = y1 / y2, which no Config init can
produce (train() starts from the product of Gaussian factors), so the App B runs iterate the
library's own rules directly: gl.end_to_end_update with depth 2 (Eq 12 = Eq 46) and with depth 1
(plain GD), on gradients from gpulinear.losses.evaluate, one run per lr, all lrs at once.
A second comparison uses gl.train as a user would: N(0, 0.01^2) init, depth 1 against depth 2
(factors, and the e2e rule), each with its best lr from one grid.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import gpulinear as gl
from gpulinear.losses import evaluate
from gpulinear.report import finish_figure, save_json, steps_to_reach, verdict

NAME = "sec7"
TITLE = "Two-point problem: depth 2 accelerates l4 GD (Sec 7, App B bound y1 / 4 eps1)"
CLAIMS = {
    "sec7": "In this case the coordinates are coupled, and as Δ_1 gets small (w_1 gets close to "
            "y_1), the learning rate is effectively scaled by y_1^{2-2/N} (in addition to a "
            "scaling by N in coordinate 1 only), allowing (if y_1 > 1) faster convergence of Δ_2.",
    "appb": "Since both η^GD and η^OP are well below 1/y_2^2, we obtain acceleration by at least "
            "η^OP/η^GD > y_1/4ε_1",
    "grid": "We now illustrate qualitatively, on a very simple hypothetical learning problem, the "
            "potential of these to accelerate optimization.",
}

# (y1, y2, eps1); eps2 = eps1 y2 / y1.  App B wants y1 >> y2 ~ 1 >> eps1 and eps1 y1 >> 1:
# y1 = 30, eps1 = 0.2 gives eps1 y1 = 6; y1 = 100, eps1 = 0.1 gives 10 (full runs only).
# Full runs take 200k steps: GD's best lr at y1 = 100 needs ~130k to reach L <= 1e-4 (measured
# 38k steps to 1e-3 and a 3-4x longer way on to 1e-4).
MODES = {
    "tiny": {"settings": [(30.0, 1.0, 0.2)], "levels": (1e-1, 1e-2), "steps": 2000,
             "n_gd": 8, "n_op": 9, "grid_steps": 500, "grid_per_decade": 2},
    "quick": {"settings": [(30.0, 1.0, 0.2)], "levels": (1e-1, 1e-2, 1e-3, 1e-4),
              "steps": 15_000, "n_gd": 30, "n_op": 25, "grid_steps": 10_000, "grid_per_decade": 4},
    "full": {"settings": [(30.0, 1.0, 0.2), (100.0, 1.0, 0.1)], "levels": (1e-1, 1e-2, 1e-3, 1e-4),
             "steps": 200_000, "n_gd": 40, "n_op": 41, "grid_steps": 40_000,
             "grid_per_decade": 8},
}
GRID_RANGE = (1e-5, 1e-1)   # lrs of the gl.train comparison (the paper's App C range)
OP_SPAN = (0.5, 2.0)        # App B's lr times this span: the N = 2 rule's own lr grid
EFFECTIVE_BAND = (0.8, 1.25)  # rule: the measured w2-rate / (lr * y1^(2-2/N)) lies in this band


def gd_bound(y1: float) -> float:
    """Largest stable GD lr on our (mean) l4 loss from w1 = 0: 4 / y1^2 (paper's 2 / y1^2 x 2)."""
    return 4.0 / y1 ** 2


def appb_lr(y1: float, eps1: float) -> float:
    """App B's lr for the N = 2 rule, eta = 1 / (2 eps1 y1^2) in the paper's units, ours x 2."""
    return 1.0 / (eps1 * y1 ** 2)


def appb_bound(y1: float, eps1: float) -> float:
    """The acceleration App B guarantees: eta_OP / eta_GD > y1 / (4 eps1) (unit-free)."""
    return y1 / (4.0 * eps1)


def iterate(depth, lrs, w0, X, y, steps, levels):
    """Run w <- end_to_end_update(w, dL/dw, depth, lr) for every lr at once from w0.

    depth 1 is plain GD.  A run whose loss turns non-finite or exceeds 10 L(w0) is frozen and
    marked diverged.  Returns reached (B, levels) first step with L <= level (-1: never),
    diverged (B,), recorded steps (r,), loss (B, r) and w (B, r, 2) on a log-spaced record.
    """
    lrs = np.asarray(lrs, dtype=float)
    Y = y[:, None]
    W = np.broadcast_to(np.asarray(w0, dtype=float), (len(lrs), 1, 2)).copy()
    levels = np.asarray(levels, dtype=float)
    reached = np.full((len(lrs), len(levels)), -1)
    alive = np.ones(len(lrs), dtype=bool)
    rec_steps = np.unique(np.r_[0, np.geomspace(1, steps, 300).astype(int)])
    loss_log = np.full((len(lrs), len(rec_steps)), np.nan)
    w_log = np.full((len(lrs), len(rec_steps), 2), np.nan)
    start = None
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps + 1):
            loss, G = evaluate("l4", W, X, Y)
            start = loss if start is None else start
            alive &= np.isfinite(loss) & (loss <= 10 * start)
            hit = alive[:, None] & (loss[:, None] <= levels) & (reached < 0)
            reached[hit] = t
            n = np.searchsorted(rec_steps, t)
            if n < len(rec_steps) and rec_steps[n] == t:
                loss_log[:, n] = np.where(alive, loss, np.nan)
                w_log[:, n] = np.where(alive[:, None], W[:, 0], np.nan)
            if t == steps or (alive & (reached < 0).any(axis=1)).sum() == 0:
                break
            W = np.where(alive[:, None, None], gl.end_to_end_update(W, G, depth, lrs), W)
    keep = rec_steps <= t
    return {"lrs": lrs, "reached": reached, "diverged": ~alive, "steps": rec_steps[keep],
            "loss": loss_log[:, keep], "w": w_log[:, keep]}


def best_run(reached) -> int:
    """Index of the fastest run: most levels reached, then fewest steps to the deepest of them."""
    def key(i):
        hit = reached[i] >= 0
        return (-hit.sum(), reached[i][hit][-1] if hit.any() else 0)
    return min(range(len(reached)), key=key)


def speedups(slow, fast):
    """slow / fast steps per level (inf where only `fast` got there, nan where it did not)."""
    slow, fast = np.asarray(slow, float), np.asarray(fast, float)
    out = np.where(slow >= 0, slow / np.maximum(fast, 1), np.inf)
    return np.where(fast >= 0, out, np.nan)


def w2_rate(X, y, w0, lr, steps):
    """Per-step rate of the N = 2 rule on w2: (w2(t) - w2(t+1)) / (dL/dw2 at t), t = 1..steps."""
    W = np.asarray(w0, dtype=float).reshape(1, 1, 2)
    rates, w1_after_one = [], None
    for t in range(steps + 1):
        _, G = evaluate("l4", W, X, y[:, None])
        new = gl.end_to_end_update(W, G, 2, lr)
        if t == 1:
            w1_after_one = float(W[0, 0, 0])
        if t >= 1 and abs(G[0, 0, 1]) > 1e-300:
            rates.append((W[0, 0, 1] - new[0, 0, 1]) / G[0, 0, 1])
        W = new
    return np.array(rates), w1_after_one


def appb_setting(y1, y2, eps1, mode):
    """GD (fine grid) against the N = 2 rule (App B's lr and its own grid) from (eps1, eps2)."""
    eps2 = eps1 * y2 / y1
    X, y = gl.datasets.two_point_problem(y1, y2)
    w0 = (eps1, eps2)
    levels, steps = mode["levels"], mode["steps"]
    # GD: up to 1.25 x the bound from w1 = 0; from w1 = eps1 it is 4 / (y1 - eps1)^2, a bit more
    gd = iterate(1, gd_bound(y1) * np.geomspace(1e-2, 1.25, mode["n_gd"]), w0, X, y, steps, levels)
    lr_b = appb_lr(y1, eps1)
    op_grid = np.unique(np.r_[lr_b * np.geomspace(*OP_SPAN, mode["n_op"]), lr_b])
    op = iterate(2, op_grid, w0, X, y, steps, levels)
    i_gd, i_op = best_run(gd["reached"]), best_run(op["reached"])
    i_b = int(np.argmin(np.abs(op_grid - lr_b)))
    horizon = max(int(op["reached"][i_b].max()), 20)
    rates, w1_one = w2_rate(X, y, w0, lr_b, horizon)
    rate = float(np.median(rates))
    return {
        "y1": y1, "y2": y2, "eps1": eps1, "eps2": eps2, "levels": levels,
        "gd_bound": gd_bound(y1), "appb_lr": lr_b, "bound": appb_bound(y1, eps1),
        "predicted_w2_rate": 1.0 / (eps1 * y1), "measured_w2_rate": rate,
        "w2_rate_over_lr_y1": rate / (lr_b * y1), "w1_after_one_step": w1_one,
        "gd": gd, "op": op, "gd_best": i_gd, "op_best": i_op, "op_appb": i_b,
        "gd_best_lr": float(gd["lrs"][i_gd]), "op_best_lr": float(op_grid[i_op]),
        "largest_converging_gd_lr": float(gd["lrs"][~gd["diverged"]].max()),
        "gd_steps": gd["reached"][i_gd], "op_appb_steps": op["reached"][i_b],
        "op_best_steps": op["reached"][i_op],
        "speedup_appb": speedups(gd["reached"][i_gd], op["reached"][i_b]),
        "speedup_best": speedups(gd["reached"][i_gd], op["reached"][i_op]),
        "lr_ratio": rate / float(gd["lrs"][i_gd]),
        "op_converging_fraction": float(np.mean(~op["diverged"])),
    }


def grid_comparison(y1, y2, mode, seed, backend):
    """gl.train from N(0, 0.01^2): depth 1 vs depth 2 (factors) vs depth 2 (e2e), best lr each."""
    X, y = gl.datasets.two_point_problem(y1, y2)
    decades = np.log10(GRID_RANGE[1] / GRID_RANGE[0])
    lrs = [float(v) for v in np.geomspace(*GRID_RANGE, int(decades * mode["grid_per_decade"]) + 1)]
    models = {"depth 1": gl.grid(depth=1, lr=lrs, seed=seed),
              "depth 2": gl.grid(depth=2, width=1, lr=lrs, seed=seed),
              "depth 2, e2e rule": gl.grid(depth=2, width=1, lr=lrs, seed=seed,
                                           parameterization="e2e")}
    cfgs = [c for group in models.values() for c in group]
    res = gl.train(X, y, cfgs, loss="l4", steps=mode["grid_steps"], log_every=10,
                   backend=backend, diverge_above=1e12)
    reached = steps_to_reach(res.steps, res.loss, mode["levels"])
    reached[res.diverged] = -1
    out, start = {}, 0
    for name, group in models.items():
        block = reached[start:start + len(group)]
        i = best_run(block)
        out[name] = {"lr": lrs[i], "steps": block[i], "curve": res.loss[start + i],
                     "diverged_lrs": [lrs[j] for j in range(len(group))
                                      if res.diverged[start + j]]}
        start += len(group)
    return {"lrs": lrs, "record_steps": res.steps, "models": out, "y1": y1, "y2": y2}


def _steps_text(levels, steps):
    return ", ".join(f"{lv:g}: {int(s) if s >= 0 else 'never'}" for lv, s in zip(levels, steps))


def run(out: Path, quick: bool = True, backend: str = "auto", tiny: bool = False,
        seed: int = 0) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mode = MODES["tiny" if tiny else ("quick" if quick else "full")]
    settings = [appb_setting(*s, mode) for s in mode["settings"]]
    grid = grid_comparison(*mode["settings"][0][:2], mode, seed, backend)
    levels = mode["levels"]

    sec7_ok, sec7_part, appb_ok, appb_part = True, True, True, True
    sec7_text, appb_text = [], []
    for s in settings:
        faster = bool(np.all(s["speedup_appb"] > 1))
        scaled = EFFECTIVE_BAND[0] <= s["w2_rate_over_lr_y1"] <= EFFECTIVE_BAND[1]
        sec7_ok &= faster and scaled
        sec7_part &= faster or scaled
        appb_ok &= bool(np.all(s["speedup_appb"] >= s["bound"]))
        appb_part &= faster or s["lr_ratio"] >= s["bound"]
        tag = f"y1 = {s['y1']:g}, y2 = {s['y2']:g}, w(0) = ({s['eps1']:g}, {s['eps2']:.3g})"
        sec7_text.append(
            f"{tag}: N = 2 rule at App B's lr {s['appb_lr']:.3g} puts w1 at "
            f"{s['w1_after_one_step']:.4g} after one step, then moves w2 at rate "
            f"{s['measured_w2_rate']:.4g} = {s['w2_rate_over_lr_y1']:.3f} x lr y1^(2-2/N) "
            f"(GD's best lr {s['gd_best_lr']:.3g}); steps to L <= level, GD best "
            f"[{_steps_text(levels, s['gd_steps'])}] vs N = 2 rule "
            f"[{_steps_text(levels, s['op_appb_steps'])}]")
        appb_text.append(
            f"{tag}: bound y1/(4 eps1) = {s['bound']:.3g}; measured rate ratio eta_OP/eta_GD = "
            f"{s['measured_w2_rate']:.4g} / {s['gd_best_lr']:.4g} = {s['lr_ratio']:.3g}; step "
            f"speed-up per level " + ", ".join(f"{lv:g}: {v:.3g}" for lv, v in
                                                zip(levels, s["speedup_appb"]))
            + f" (N = 2 rule at its own best lr {s['op_best_lr']:.3g}: "
            + ", ".join(f"{v:.3g}" for v in s["speedup_best"])
            + f"; {s['op_converging_fraction']:.0%} of its lr grid "
              f"[{OP_SPAN[0]}, {OP_SPAN[1]}] x App B's lr converged)")

    g = grid["models"]
    base = g["depth 1"]["steps"]
    deep_wins = {name: bool(np.all(speedups(base, g[name]["steps"]) > 1))
                 for name in ("depth 2", "depth 2, e2e rule")}
    grid_text = "; ".join(f"{name} (best lr {v['lr']:.3g}; {len(v['diverged_lrs'])} of "
                          f"{len(grid['lrs'])} lrs diverged): [{_steps_text(levels, v['steps'])}]"
                          for name, v in g.items())
    rates = [s["w2_rate_over_lr_y1"] for s in settings]
    n_faster = sum(bool(np.all(s["speedup_appb"] > 1)) for s in settings)
    n_bound = sum(bool(np.all(s["speedup_appb"] >= s["bound"])) for s in settings)
    worst = min(settings, key=lambda s: float(np.min(s["speedup_appb"]) / s["bound"]))
    claims = [
        {"claim": CLAIMS["sec7"], "measured": "; ".join(sec7_text),
         "verdict": verdict(sec7_ok, sec7_part),
         "reason": f"w2's measured rate is {min(rates):.3g}-{max(rates):.3g} x lr y1^(2-2/N) "
                   f"(rule: within [{EFFECTIVE_BAND[0]:g}, {EFFECTIVE_BAND[1]:g}]) and the rule "
                   f"beats GD at every level in {n_faster} of {len(settings)} settings"},
        {"claim": CLAIMS["appb"], "measured": "; ".join(appb_text),
         "verdict": verdict(appb_ok, appb_part),
         "reason": f"the step speed-up is at least the bound y1/(4 eps1) at every level in "
                   f"{n_bound} of {len(settings)} settings (closest: "
                   f"{float(np.min(worst['speedup_appb'])):.3g} vs bound "
                   f"{worst['bound']:.3g} at y1 = {worst['y1']:g})"},
        {"claim": CLAIMS["grid"],
         "measured": f"gl.train, N(0, 0.01^2) init, y1 = {grid['y1']:g}, y2 = {grid['y2']:g}, "
                     f"{len(grid['lrs'])} lrs in [{GRID_RANGE[0]:g}, {GRID_RANGE[1]:g}], "
                     f"{mode['grid_steps']:,} steps (log every 10): steps to L <= level: "
                     + grid_text,
         "verdict": verdict(all(deep_wins.values()), any(deep_wins.values())),
         "reason": "; ".join(f"{name} {'reaches' if won else 'does not reach'} every level in "
                             f"fewer steps than depth 1" for name, won in deep_wins.items())
                   + " (each at its own best lr)"},
    ]
    _plot(out / f"{NAME}.png", settings[0], grid, levels)
    data = {
        "claims": claims, "figures": [f"{NAME}.png"],
        "setup": (f"gl.datasets.two_point_problem(y1, y2), l4 loss as the mean over the two "
                  f"points (paper's eta = our lr / 2). App B runs: w(0) = (eps1, eps1 y2/y1), "
                  f"settings (y1, y2, eps1) = {mode['settings']}; GD = gl.end_to_end_update with "
                  f"depth 1 over {mode['n_gd']} lrs in [0.01, 1.25] x 4/y1^2, the N = 2 rule = "
                  f"depth 2 at App B's lr 1/(eps1 y1^2) and over {mode['n_op']} lrs in "
                  f"{list(OP_SPAN)} x that; up to {mode['steps']:,} steps; levels L <= "
                  f"{list(levels)} (L* = 0). Grid comparison: gl.train from gl.init_weights "
                  f"(N(0, 0.01^2), seed {seed}), depth 1 / depth 2 width 1 / depth 2 e2e, "
                  f"{len(grid['lrs'])} lrs, {mode['grid_steps']:,} steps."),
        "settings": [{k: v for k, v in s.items() if k not in ("gd", "op")} for s in settings],
        "grid": {"lrs": grid["lrs"], "models": {n: {"lr": v["lr"], "steps": v["steps"],
                                                    "diverged_lrs": v["diverged_lrs"]}
                                                for n, v in g.items()}},
        "rules": {"sec7": f"N = 2 rule at App B's lr beats GD's best at every level and its "
                          f"w2-rate / (lr y1) lies in {EFFECTIVE_BAND}",
                  "appb": "step speed-up >= y1/(4 eps1) at every level (partly: > 1 everywhere, "
                          "or the measured rate ratio >= the bound)",
                  "grid": "both depth-2 models reach every level before depth 1 (partly: one)"},
    }
    return save_json(out, NAME, data)


def _plot(path, s, grid, levels):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    runs = [("GD, best lr", s["gd"], s["gd_best"]), ("N = 2 rule, App B lr", s["op"], s["op_appb"]),
            ("N = 2 rule, best lr", s["op"], s["op_best"])]
    ax = axes[0]
    for label, r, i in runs:
        ax.loglog(np.maximum(r["steps"], 0.5), r["loss"][i], label=f"{label} {r['lrs'][i]:.3g}")
    for lv in levels:
        ax.axhline(lv, color="gray", lw=0.6, ls=":")
    ax.set(xlabel="iteration (0 drawn at 0.5)", ylabel="training loss (L* = 0)",
           title=f"App B setting: y1 = {s['y1']:g}, w(0) = ({s['eps1']:g}, {s['eps2']:.3g})")
    ax.legend(fontsize=8)
    ax = axes[1]
    for label, r, i in runs[:2]:
        for c, name in ((0, "|w1 - y1|"), (1, "|w2 - y2|")):
            target = s["y1"] if c == 0 else s["y2"]
            ax.loglog(np.maximum(r["steps"], 0.5), np.abs(r["w"][i, :, c] - target),
                      ls="-" if c else "--", label=f"{label}: {name}")
    ax.set(xlabel="iteration (0 drawn at 0.5)", title="the two coordinates")
    ax.legend(fontsize=7)
    ax = axes[2]
    for name, v in grid["models"].items():
        ax.semilogy(grid["record_steps"], v["curve"], label=f"{name}, lr {v['lr']:.3g}")
    for lv in levels:
        ax.axhline(lv, color="gray", lw=0.6, ls=":")
    ax.set(xlabel="iteration", ylabel="training loss (L* = 0)",
           title=f"gl.train, N(0, 0.01^2) init, best lr per model (y1 = {grid['y1']:g})")
    ax.legend(fontsize=8)
    finish_figure(fig, path, axes)


if __name__ == "__main__":
    from gpulinear.report import experiment_cli
    sys.exit(experiment_cli(sys.modules[__name__]))
