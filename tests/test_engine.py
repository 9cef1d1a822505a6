"""train() against independent per-config loops, divergence isolation, targets, Theorem 1."""
import numpy as np
import pytest

import gpulinear as gl


def _data(m=40, d=6, k=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d))
    Y = X @ rng.normal(size=(d, k)) / np.sqrt(d) + 0.1 * rng.normal(size=(m, k))
    return X, (Y[:, 0] if k == 1 else Y)


def _plain_gd_loop(cfg, X, Y, p, steps):
    """One config, plain NumPy, gradients by hand: the oracle for train()'s batched step."""
    Ws = [w.copy() for w in gl.init_weights(cfg, X.shape[1], Y.shape[1])]
    m = X.shape[0]
    losses = []
    for t in range(steps + 1):
        We = Ws[0]
        for W in Ws[1:]:
            We = W @ We
        R = X @ We.T - Y
        losses.append(np.mean(np.sum(np.abs(R) ** p, axis=1)) / p)
        if t == steps:
            break
        G = (np.abs(R) ** (p - 2) * R).T @ X / m
        grads = []
        for j in range(len(Ws)):
            left = np.eye(Y.shape[1])
            for W in Ws[j + 1:][::-1]:
                left = left @ W
            right = np.eye(X.shape[1])
            for W in Ws[:j]:
                right = W @ right
            grads.append(left.T @ G @ right.T)
        Ws = [W - cfg.lr * (g + cfg.weight_decay * W) for W, g in zip(Ws, grads)]
    return np.array(losses)


@pytest.mark.parametrize("k", [1, 2])
def test_train_matches_a_plain_loop_mixed_depths_and_widths(k):
    X, y = _data(k=k)
    Y = y[:, None] if k == 1 else y
    cfgs = (gl.grid(depth=[1, 2, 3], lr=[0.01, 0.03], init_scale=0.3, seed=[0, 1])
            + [gl.Config(depth=3, width=(4, 2), lr=0.02, init_scale=0.3, weight_decay=0.01),
               gl.Config(depth=2, width=5, init="identity", lr=0.005, init_scale=0.1)])
    res = gl.train(X, y, cfgs, loss="l4", steps=60, log_every=1, backend="numpy")
    assert res.loss.shape == (len(cfgs), 61)
    np.testing.assert_array_equal(res.steps, np.arange(61))
    for i, cfg in enumerate(cfgs):
        np.testing.assert_allclose(res.loss[i], _plain_gd_loop(cfg, X, Y, 4.0, 60), rtol=1e-11)
    assert not res.diverged.any()


def test_train_against_torch_autograd_and_optim_for_every_optimizer():
    torch = pytest.importorskip("torch", reason="torch (test extra) is the optimizer oracle")
    X, y = _data(m=30, d=5)
    hp = {"gd": {}, "momentum": {"momentum": 0.8}, "nesterov": {"momentum": 0.7},
          "adagrad": {"eps": 1e-9}, "adadelta": {"rho": 0.8}, "adam": {"beta1": 0.8},
          "rmsprop": {"alpha": 0.9}}
    cfgs = [gl.Config(depth=d, lr=lr, optimizer=name, init_scale=0.3, weight_decay=wd, **extra)
            for name, extra in hp.items() for d in (1, 2) for lr, wd in ((0.01, 0.0), (0.003, 0.02))]
    steps = 25
    res = gl.train(X, y, cfgs, loss="l4", steps=steps, log_every=1, backend="numpy")
    Xt, Yt = torch.tensor(X), torch.tensor(y[:, None])
    cls = {"gd": torch.optim.SGD, "momentum": torch.optim.SGD, "nesterov": torch.optim.SGD,
           "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
           "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
    for i, cfg in enumerate(cfgs):
        Ws = [torch.tensor(w, requires_grad=True) for w in gl.init_weights(cfg, 5, 1)]
        kw = dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.optimizer in ("momentum", "nesterov"):
            kw.update(momentum=cfg.momentum, nesterov=cfg.optimizer == "nesterov")
        elif cfg.optimizer == "adagrad":
            kw.update(eps=cfg.eps)
        elif cfg.optimizer == "adadelta":
            kw.update(rho=cfg.rho)
        elif cfg.optimizer == "adam":
            kw.update(betas=(cfg.beta1, 0.999))
        elif cfg.optimizer == "rmsprop":
            kw.update(alpha=cfg.alpha)
        opt = cls[cfg.optimizer](Ws, **kw)
        losses = []
        for t in range(steps + 1):
            We = Ws[0]
            for W in Ws[1:]:
                We = W @ We
            loss = ((Xt @ We.T - Yt) ** 4).sum(1).mean() / 4
            losses.append(loss.item())
            if t == steps:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
        np.testing.assert_allclose(res.loss[i], losses, rtol=1e-10, err_msg=cfg.optimizer)


def test_e2e_parameterization_follows_eq12_written_out():
    X, y = _data(m=25, d=4)
    cfgs = gl.grid(depth=[1, 2, 3], lr=[0.01], parameterization="e2e", init_scale=0.2)
    res = gl.train(X, y, cfgs, loss="l4", steps=30, log_every=30, backend="numpy")
    for i, cfg in enumerate(cfgs):
        Ws = gl.init_weights(cfg, 4, 1)
        w = Ws[0][0]
        for W in Ws[1:]:
            w = (W @ Ws[0])[0] if W is Ws[1] else w * W[0, 0]
        w = np.linalg.multi_dot([*Ws[::-1], np.eye(4)])[0] if cfg.depth > 1 else Ws[0][0]
        N = cfg.depth
        for _ in range(30):
            r = X @ w - y
            g = (r ** 3) @ X / len(y)
            n = np.linalg.norm(w)
            w = w - cfg.lr * n ** (2 - 2 / N) * (g + (N - 1) * (w / n @ g) * w / n)
        np.testing.assert_allclose(res.end_to_end[i, 0], w, rtol=1e-11)


def test_diverging_config_never_changes_the_others():
    X, y = _data(m=50, d=6)
    stable = gl.grid(depth=[1, 2, 3], lr=[0.002, 0.01], init_scale=0.2)
    wild = gl.grid(depth=[1, 2, 3], lr=[50.0], init_scale=0.2)
    alone = gl.train(X, y, stable, loss="l4", steps=300, log_every=10, backend="numpy")
    mixed = gl.train(X, y, wild + stable, loss="l4", steps=300, log_every=10, backend="numpy")
    assert mixed.diverged[:3].all() and not mixed.diverged[3:].any()
    assert (mixed.diverged_at[:3] > 0).all()
    np.testing.assert_allclose(mixed.loss[3:], alone.loss, rtol=1e-12)
    np.testing.assert_allclose(mixed.end_to_end[3:], alone.end_to_end, rtol=1e-12)
    # frozen at their last weights: the final W_e is the one at divergence, not NaN-propagated junk
    assert mixed.final_loss[:3].tolist() == [np.inf] * 3


def test_diverge_above_flags_and_freezes():
    X, y = _data()
    cfgs = gl.grid(depth=1, lr=[0.001, 0.01])
    start = gl.train(X, y, cfgs, loss="l2", steps=0, backend="numpy").loss[0, 0]
    res = gl.train(X, y, cfgs + gl.grid(depth=1, lr=3.0), loss="l2", steps=50, log_every=10,
                   diverge_above=2 * start, backend="numpy")
    assert not res.diverged[:2].any() and res.diverged[2] and res.diverged_at[2] > 0
    after = res.steps > res.diverged_at[2]
    assert (res.loss[2, after] == res.loss[2, after][0]).all()      # frozen: the loss stops moving
    assert res.loss[2, after][0] > 2 * start


def test_steps_to_target_and_early_stop():
    X, y = _data()
    cfgs = gl.grid(depth=[1, 2], lr=[0.01, 0.05], init_scale=0.3)
    target = 0.02
    full = gl.train(X, y, cfgs, loss="l2", steps=2000, log_every=1, target=target,
                    backend="numpy")
    for i in range(len(cfgs)):
        hit = np.flatnonzero(full.loss[i] <= target)
        assert full.steps_to_target[i] == (hit[0] if len(hit) else -1)
    assert (full.steps_to_target > 0).all()
    early = gl.train(X, y, cfgs, loss="l2", steps=2000, log_every=50, target=target,
                     stop_at_target=True, backend="numpy")
    np.testing.assert_array_equal(early.steps_to_target, full.steps_to_target)
    assert early.steps[-1] < 2000 and early.steps[-1] >= full.steps_to_target.max()


def test_float32_tracks_float64():
    X, y = _data()
    cfgs = gl.grid(depth=[1, 3], lr=[0.01], init_scale=0.3)
    r64 = gl.train(X, y, cfgs, loss="l4", steps=200, log_every=50, backend="numpy")
    r32 = gl.train(X, y, cfgs, loss="l4", steps=200, log_every=50, backend="numpy",
                   dtype="float32")
    assert r32.meta["dtype"] == "float32"
    np.testing.assert_allclose(r32.loss, r64.loss, rtol=2e-4)


def test_record_steps_include_zero_and_last():
    X, y = _data()
    res = gl.train(X, y, gl.Config(), loss="l2", steps=25, log_every=10, backend="numpy")
    np.testing.assert_array_equal(res.steps, [0, 10, 20, 25])
    zero = gl.train(X, y, gl.Config(), loss="l2", steps=0, log_every=10, backend="numpy")
    np.testing.assert_array_equal(zero.steps, [0])


def test_theorem1_balanced_init_deep_net_follows_the_e2e_rule():
    """Balanced init (Eq 7) and small lr: W_e of the deep net stays close to the e2e rule's,
    and the gap shrinks with the learning rate (Theorem 1 is the lr -> 0 limit)."""
    X, y = _data(m=40, d=5, k=2)
    gaps = []
    for lr in (4e-3, 1e-3):
        steps = int(round(0.8 / lr))                 # the same time horizon t = lr * steps
        cfgs = [gl.Config(depth=3, width=(4, 3), init="balanced", init_scale=0.3, lr=lr,
                          parameterization=par, seed=2) for par in ("deep", "e2e")]
        res = gl.train(X, y, cfgs, loss="l4", steps=steps, log_every=steps, backend="numpy")
        deep, e2e = res.end_to_end
        moved = np.linalg.norm(e2e - gl.init_weights(cfgs[0], 5, 2)[-1]
                               @ gl.init_weights(cfgs[0], 5, 2)[-2]
                               @ gl.init_weights(cfgs[0], 5, 2)[0])
        assert moved > 0.1                            # it travelled, so the match means something
        gaps.append(np.linalg.norm(deep - e2e) / np.linalg.norm(e2e))
    assert gaps[0] < 2e-2
    assert gaps[1] < gaps[0] / 2.5                    # O(lr): 4x smaller lr, >2.5x smaller gap


def test_two_point_problem_section7():
    """y1 >> y2, l4: GD's stable lr is capped by y1 (Eq 15), so w2 crawls; the N = 2
    overparameterized rule (Eq 12) reaches the optimum far sooner (Appendix B)."""
    X, y = gl.datasets.two_point_problem(10.0, 1.0)
    # our loss is the mean over the 2 points: GD on it is GD on the paper's sum with lr / 2
    eps1 = 1e-2
    lrs = [float(f"{a}e{b}") for b in range(-5, 1) for a in (1, 2, 5)]
    gd = gl.grid(depth=1, lr=lrs, init_scale=eps1)
    op = gl.grid(depth=2, lr=lrs, init_scale=eps1, parameterization="e2e")
    res = gl.train(X, y, gd + op, loss="l4", steps=3000, log_every=10, target=1e-4,
                   backend="numpy")
    reach = np.where(res.steps_to_target < 0, np.inf, res.steps_to_target)
    best_gd, best_op = reach[:len(gd)].min(), reach[len(gd):].min()
    assert np.isfinite(best_op)
    assert best_op * 10 < best_gd                     # at least 10x faster
    # GD diverges above the bound eta < 2 / y1^(p-2) (with the mean, eta < 4 / y1^2)
    for i, c in enumerate(gd):
        if c.lr > 4 / 10.0 ** 2 * 1.2:
            assert res.diverged[i] or res.final_loss[i] > 1e-4
