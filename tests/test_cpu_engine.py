"""The CPU engine's exact-algebra shortcuts against the plain computation they replace:
l2 through the Gram matrix (gpulinear.gram), the chain on its cheaper side (gpulinear.chain),
lp loss values read off the gradient GEMM, and gd written in place (gpulinear.step)."""
import numpy as np
import pytest

import gpulinear as gl
from gpulinear import step as step_mod
from gpulinear.chain import cheapest_side, forward, layer_gradients, prefix_products
from gpulinear.gram import GramL2, use_gram
from gpulinear.losses import evaluate, lp_terms

RNG = np.random.default_rng
EPS64 = np.finfo(np.float64).eps


def regression(m=200, d=9, k=1, rank=None, seed=0):
    """Correlated features (as Ethanol's), optionally of rank < d, and noisy targets."""
    rng = RNG(seed)
    X = rng.normal(size=(m, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    if rank is not None:
        X = X[:, :rank] @ rng.normal(size=(rank, d))
    Y = X @ rng.normal(size=(d, k)) / np.sqrt(d) + 0.3 * rng.normal(size=(m, k))
    return X, Y


# ---- the Gram matrix --------------------------------------------------------------------------

@pytest.mark.parametrize("k,rank", [(1, None), (3, None), (2, 5)])
def test_gram_loss_and_gradient_equal_the_data_path(k, rank):
    X, Y = regression(k=k, rank=rank)
    g = GramL2.from_data(X, Y)
    We = RNG(1).normal(size=(6, k, X.shape[1]))
    We[0] = g.w_star                                    # at the optimum: L*, zero gradient
    want_v, want_G = evaluate("l2", We, X, Y)
    G = np.empty_like(We)
    got_v = g.value_and_grad(We, G, g.sigma, g.w_star)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-12)
    np.testing.assert_allclose(G, want_G, rtol=1e-10, atol=1e-12 * np.abs(want_G).max())
    assert abs(got_v[0] - g.l_star) <= 4 * EPS64 * g.l_star and np.abs(G[0]).max() < 1e-12


@pytest.mark.parametrize("k,rank", [(1, None), (3, None), (2, 5)])
def test_compressed_data_has_the_same_loss_and_gradient(k, rank):
    X, Y = regression(k=k, rank=rank)
    Xc, Yc = GramL2.from_data(X, Y).compressed_data()
    assert Xc.shape == ((rank or X.shape[1]) + 1, X.shape[1]) and Yc.shape == (Xc.shape[0], k)
    We = RNG(2).normal(size=(5, k, X.shape[1]))
    want_v, want_G = evaluate("l2", We, X, Y)
    got_v, got_G = evaluate("l2", We, Xc, Yc)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-10)
    np.testing.assert_allclose(got_G, want_G, rtol=1e-9, atol=1e-12 * np.abs(want_G).max())


def test_gram_default_is_where_it_is_cheaper_and_the_switch_is_checked():
    assert use_gram(None, m=2565, d=128) and not use_gram(None, m=100, d=128)
    assert use_gram(True, 10, 20) and not use_gram(False, 20, 10)
    with pytest.raises(TypeError, match="gram must be None, True or False"):
        use_gram("yes", 20, 10)
    X, Y = regression()
    cfgs = gl.grid(depth=[1, 2], lr=1e-2)
    assert gl.train(X, Y, cfgs, steps=2).meta["step"] == "array+gram"
    assert gl.train(X, Y, cfgs, steps=2, gram=False).meta["step"] == "array"
    assert gl.train(X, Y, cfgs, steps=2, loss="l4").meta["step"] == "array"   # no l2 config
    Xw, Yw = X[:8], Y[:8]                                                    # d > m: data path
    assert gl.train(Xw, Yw, cfgs, steps=2).meta["step"] == "array"


def mixed_grid():
    """Every optimizer, depths 1/3, widths 1/4, e2e, a diverging config, l2 among l4 and xent
    rows of other losses so that the Gram rows sit between the others in user order."""
    return (gl.grid(depth=[1, 3], width=[1, 4], lr=[3e-3, 1e-2],
                    optimizer=["gd", "momentum", "nesterov", "adagrad", "adadelta", "adam",
                               "rmsprop"], init_scale=0.2, seed=1)
            + [gl.Config(depth=2, lr=1e-2, loss="l4", seed=2)]
            + gl.grid(depth=[2, 3], lr=1e-2, parameterization="e2e", init="balanced", seed=3)
            + [gl.Config(depth=2, width=(5,), lr=1e-2, weight_decay=1e-3, seed=4)]
            + [gl.Config(depth=1, lr=30.0, optimizer="momentum", seed=5)])        # diverges


def test_gram_trajectories_equal_the_data_path_float64():
    X, Y = regression(k=2)
    cfgs = mixed_grid()
    kw = dict(loss="l2", steps=300, log_every=25, diverge_above=1e6, target=0.2)
    ref = gl.train(X, Y, cfgs, gram=False, **kw)
    got = gl.train(X, Y, cfgs, **kw)
    assert got.meta["step"] == "array+gram" and ref.meta["step"] == "array"
    assert ref.diverged.any() and not ref.diverged.all()
    np.testing.assert_array_equal(got.diverged_at, ref.diverged_at)
    np.testing.assert_array_equal(got.steps_to_target, ref.steps_to_target)
    ok = ~ref.diverged
    # adaptive optimizers divide by the gradient's own size, so near an optimum they amplify
    # the rounding of ANY two summation orders (rmsprop here: 1e-16 -> 3e-3 by step 300): every
    # config is compared over the first 100 steps, the others over the whole run
    early = ref.steps <= 100
    np.testing.assert_allclose(got.loss[ok][:, early], ref.loss[ok][:, early], rtol=1e-10)
    steady = ok & np.array([c.optimizer in ("gd", "momentum", "nesterov") for c in cfgs])
    np.testing.assert_allclose(got.loss[steady], ref.loss[steady], rtol=1e-10)
    np.testing.assert_allclose(got.end_to_end[steady], ref.end_to_end[steady], rtol=1e-10,
                               atol=1e-13)


def test_gram_float32_near_the_optimum_is_no_worse_than_the_data_path():
    """float32 near L*: the data path sums m rounded residuals, the Gram path computes the gap
    L - L* from W - W* (L* itself in float64, rounded once to float32).  Measured against the
    float64 run: the gap's error is what a user reading convergence curves sees."""
    X, Y = regression(m=400, d=12, seed=3)
    cfgs = gl.grid(depth=[1, 2], lr=[0.05, 0.1], init="identity", seed=1)
    kw = dict(loss="l2", steps=2000, log_every=500)
    ref = gl.train(X, Y, cfgs, gram=False, **kw)
    l_star = GramL2.from_data(X, Y).l_star
    gap_ref = ref.loss[:, -1] - l_star
    assert (gap_ref > 0).all() and (gap_ref < 2e-2 * l_star).all()        # near the optimum
    errs = {}
    for gram in (True, False):
        r32 = gl.train(X, Y, cfgs, dtype="float32", gram=gram, **kw)
        errs[gram] = np.abs(r32.loss[:, -1] - ref.loss[:, -1]).max() / l_star
    eps32 = np.finfo(np.float32).eps
    # both are float32 runs of the same trajectory (weights rounded each step): a few hundred
    # eps32 of L* apart from float64 after 2000 steps; the Gram path no worse than the data path
    assert errs[True] <= max(2 * errs[False], 64 * eps32), errs
    assert errs[True] < 1e-4, errs


def test_mixed_losses_with_gram_keep_user_order_and_numbers():
    X, Y = regression(k=3)
    Yx = np.eye(3)[np.argmax(Y, axis=1)]
    cfgs = mixed_grid()
    cfgs[3] = gl.Config(depth=2, lr=1e-2, loss="l3", seed=6)
    kw = dict(loss="l2", steps=60, log_every=20, diverge_above=1e6)
    ref = gl.train(X, Y, cfgs, gram=False, **kw)
    got = gl.train(X, Y, cfgs, **kw)
    ok = ~ref.diverged
    np.testing.assert_allclose(got.loss[ok], ref.loss[ok], rtol=1e-10)
    np.testing.assert_array_equal(got.diverged_at, ref.diverged_at)
    # xent needs one-hot targets: its own call, beside l2 rows on the Gram path
    xcfgs = [gl.Config(depth=2, lr=1e-2, loss="xent"), gl.Config(depth=1, lr=1e-2)]
    got = gl.train(X, Yx, xcfgs, steps=30, log_every=10)
    ref = gl.train(X, Yx, xcfgs, steps=30, log_every=10, gram=False)
    np.testing.assert_allclose(got.loss, ref.loss, rtol=1e-10)


# ---- the chain on its cheaper side -------------------------------------------------------------

def layers_of(dims, B=3, seed=0):
    rng = RNG(seed)
    return [rng.normal(size=(B, dims[j + 1], dims[j])) / np.sqrt(dims[j])
            for j in range(len(dims) - 1)]


@pytest.mark.parametrize("dims", [(9, 7, 1), (9, 5, 6, 2), (3, 4, 5, 7), (6, 1, 1, 1),
                                  (4, 6, 6, 6, 6, 6, 6, 6, 1)])
def test_both_sides_give_the_same_product_and_gradients(dims):
    layers = layers_of(dims)
    G = RNG(1).normal(size=(3, dims[-1], dims[0]))
    We, saved = forward(layers)
    assert saved[0] == cheapest_side(dims[-1], dims[0])
    explicit = layers[0]
    for W in layers[1:]:
        explicit = np.einsum("bij,bjk->bik", W, explicit)
    np.testing.assert_allclose(We, explicit, rtol=1e-12, atol=1e-14)
    # the other side, by hand: prefixes (input side) / suffixes (output side)
    pre = prefix_products(layers)
    suffixes = [None] * len(layers)
    T = layers[-1]
    for j in range(len(layers) - 2, -1, -1):
        suffixes[j] = T
        T = T @ layers[j]
    a = layer_gradients(layers, G, ("input", pre))
    b = layer_gradients(layers, G, ("output", suffixes))
    for ga, gb, W in zip(a, b, layers):
        assert ga.shape == gb.shape == W.shape
        np.testing.assert_allclose(ga, gb, rtol=1e-11, atol=1e-13)


def test_output_side_gradients_match_finite_differences():
    dims = (5, 4, 3, 1)
    layers = layers_of(dims, B=1, seed=3)
    rng = RNG(4)
    X, Y = rng.normal(size=(17, 5)), rng.normal(size=(17, 1))

    def loss(ls):
        return evaluate("l4", forward(ls)[0], X, Y)[0][0]

    G = evaluate("l4", forward(layers)[0], X, Y)[1]
    grads = layer_gradients(layers, G)
    assert forward(layers)[1][0] == "output"
    h = 1e-6
    for j, W in enumerate(layers):
        for idx in np.ndindex(W.shape):
            E = np.zeros_like(W)
            E[idx] = h
            up = [w + E if i == j else w for i, w in enumerate(layers)]
            dn = [w - E if i == j else w for i, w in enumerate(layers)]
            fd = (loss(up) - loss(dn)) / (2 * h)
            assert abs(grads[j][idx] - fd) <= 1e-6 * max(1.0, abs(fd)), (j, idx)


def test_cheapest_side_counts_the_work():
    # k = 1 at width 100 on Ethanol's d: the output side is ~100x cheaper for W_2 W_1 alone
    assert cheapest_side(1, 128) == "output" and cheapest_side(10, 3) == "input"


# ---- lp values read off the gradient GEMM; gd in place -----------------------------------------

@pytest.mark.parametrize("p", [2.0, 2.5, 3.0, 4.0, 6.0])
@pytest.mark.parametrize("k", [1, 2])
def test_loss_values_equal_the_lp_formula(p, k):
    X, Y = regression(m=50, d=6, k=k, seed=int(10 * p))
    cfgs = gl.grid(depth=[1, 2, 3], width=[1, 3], lr=1e-3, init_scale=0.5, seed=2)
    res = gl.train(X, Y, cfgs, loss=gl.Lp(p), steps=0, gram=False)
    We = np.stack([forward([w[None] for w in gl.init_weights(c, 6, k)])[0][0] for c in cfgs])
    R = np.einsum("bkd,md->bkm", We, X) - Y.T
    want = lp_terms(R, p)[0].sum(axis=(1, 2)) / (p * X.shape[0])
    np.testing.assert_allclose(res.loss[:, 0], want, rtol=1e-12)


@pytest.mark.parametrize("block_bytes", [None, 1024])     # 1024: the blocked branch runs too
@pytest.mark.parametrize("k", [1, 3])
def test_gd_in_place_is_bitwise_the_pure_update(monkeypatch, k, block_bytes):
    if block_bytes is not None:
        monkeypatch.setattr(step_mod, "_BLOCK_BYTES", block_bytes)
    X, Y = regression(k=k, d=7)
    cfgs = gl.grid(depth=[1, 2, 3], width=[1, 4, 60], lr=[1e-3, 2e-3], init_scale=0.3, seed=1)
    kw = dict(loss="l4", steps=25, log_every=5)
    used = []
    real = step_mod._gd_in_place
    monkeypatch.setattr(step_mod, "_gd_in_place", lambda *a: (used.append(1), real(*a)))
    fast = gl.train(X, Y, cfgs, **kw)
    assert used                                   # the test exercises the in-place path
    monkeypatch.setattr(step_mod, "_gd_in_place_applies", lambda b, saved: False)
    pure = gl.train(X, Y, cfgs, **kw)
    np.testing.assert_array_equal(fast.loss, pure.loss)
    np.testing.assert_array_equal(fast.end_to_end, pure.end_to_end)


def test_gd_in_place_never_writes_a_frozen_config():
    X, Y = regression(d=5)
    cfgs = [gl.Config(depth=2, width=3, lr=1e-3), gl.Config(depth=2, width=3, lr=50.0)]
    res = gl.train(X, Y, cfgs, loss="l4", steps=40, log_every=1, diverge_above=1e8)
    t = res.diverged_at[1]
    assert res.diverged_at[0] == -1 and 0 < t < 40
    # frozen at the step where it was seen: its end-to-end matrix is that step's, unchanged
    # (a one-config run: other BLAS blocking, so equal to rounding, not bitwise)
    frozen = gl.train(X, Y, cfgs[1:], loss="l4", steps=int(t), log_every=1)
    np.testing.assert_allclose(res.end_to_end[1], frozen.end_to_end[0], rtol=1e-12)
