"""Model math against independent oracles: finite differences, Claim 1 written out, Eq 12, Eq 7."""
import numpy as np
import pytest

import gpulinear as gl
from gpulinear.chain import chain_product, layer_gradients, prefix_products
from gpulinear.losses import evaluate

RNG = np.random.default_rng


def _fd_grad(f, W, h=1e-6):
    """Central differences of a scalar f at every entry of W."""
    G = np.zeros_like(W)
    for idx in np.ndindex(W.shape):
        E = np.zeros_like(W)
        E[idx] = h
        G[idx] = (f(W + E) - f(W - E)) / (2 * h)
    return G


@pytest.mark.parametrize("loss", ["l2", "l4", "l3", "l2.5", gl.Lp(6), "xent"])
@pytest.mark.parametrize("k", [1, 3])
def test_loss_gradient_matches_finite_differences(loss, k):
    rng = RNG(1)
    m, d = 23, 4
    X = rng.normal(size=(m, d))
    Y = rng.normal(size=(m, k))
    if loss == "xent":
        Y = np.eye(k)[rng.integers(0, k, m)]
    W = rng.normal(scale=0.5, size=(2, k, d))
    values, G = evaluate(loss, W, X, Y)
    for b in range(2):
        fd = _fd_grad(lambda w: evaluate(loss, w[None], X, Y)[0][0], W[b])
        np.testing.assert_allclose(G[b], fd, rtol=1e-6, atol=1e-8)


def test_lp_value_is_the_papers_formula():
    rng = RNG(2)
    X, Y = rng.normal(size=(11, 3)), rng.normal(size=(11, 2))
    W = rng.normal(size=(1, 2, 3))
    for p in (2.0, 3.0, 4.0, 2.7):
        direct = np.mean(np.sum(np.abs(X @ W[0].T - Y) ** p, axis=1) / p)
        assert evaluate(gl.Lp(p), W, X, Y)[0][0] == pytest.approx(direct, rel=1e-13)


def test_xent_value_is_log_softmax():
    rng = RNG(3)
    X = rng.normal(size=(9, 4))
    labels = rng.integers(0, 3, 9)
    Y = np.eye(3)[labels]
    W = rng.normal(size=(1, 3, 4))
    Z = X @ W[0].T
    direct = np.mean(np.log(np.exp(Z).sum(1)) - Z[np.arange(9), labels])
    assert evaluate("xent", W, X, Y)[0][0] == pytest.approx(direct, rel=1e-12)


@pytest.mark.parametrize("shapes", [
    [(1, 5)], [(1, 5), (1, 1)], [(1, 5), (1, 1), (1, 1)], [(3, 5), (4, 3), (2, 4)],
    [(6, 5), (1, 6)], [(2, 5), (7, 2), (7, 7), (2, 7)]])
def test_layer_gradients_match_finite_differences(shapes):
    rng = RNG(4)
    m, d = 17, 5
    k = shapes[-1][0]
    X, Y = rng.normal(size=(m, d)), rng.normal(size=(m, k))
    layers = [rng.normal(scale=0.7, size=(2, *s)) for s in shapes]

    def loss_of(ls):
        return evaluate("l4", chain_product(ls), X, Y)[0]

    _, G = evaluate("l4", chain_product(layers), X, Y)
    grads = layer_gradients(layers, G)
    for j in range(len(layers)):
        for b in range(2):
            def f(Wj, j=j, b=b):
                ls = [L.copy() for L in layers]
                ls[j][b] = Wj
                return loss_of(ls)[b]
            np.testing.assert_allclose(grads[j][b], _fd_grad(f, layers[j][b]), rtol=1e-5,
                                       atol=1e-9)


def test_prefix_products_end_with_the_chain_product():
    rng = RNG(5)
    layers = [rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 1, 5))]
    explicit = np.stack([layers[2][b] @ layers[1][b] @ layers[0][b] for b in range(3)])
    np.testing.assert_allclose(prefix_products(layers)[-1], explicit, rtol=1e-14)


# --- the end-to-end rule -------------------------------------------------------------------

def _claim1_matrix(We, N, svd=None):
    """P of Claim 1 written from the paper: eigenvectors vec(u_r v_r'^T), eigenvalues
    sum_j s_r^(2(N-j)/N) s_r'^(2(j-1)/N), s_r = 0 beyond min(k, d), 0^0 = 1.
    svd=(U (k,k), s, Vt (d,d)) gives the exact decomposition instead of computing one."""
    k, d = We.shape
    U, s, Vt = np.linalg.svd(We, full_matrices=True) if svd is None else svd
    sig_u = np.zeros(k)
    sig_v = np.zeros(d)
    sig_u[:len(s)] = s
    sig_v[:len(s)] = s

    def pw(x, e):
        return 1.0 if e == 0 else x ** e

    P = np.zeros((k * d, k * d))
    for r in range(k):
        for rp in range(d):
            vec = np.outer(U[:, r], Vt[rp]).ravel(order="F")
            lam = sum(pw(sig_u[r], 2 * (N - j) / N) * pw(sig_v[rp], 2 * (j - 1) / N)
                      for j in range(1, N + 1))
            P += lam * np.outer(vec, vec)
    return P


@pytest.mark.parametrize("k,d", [(1, 6), (2, 5), (3, 3), (4, 2)])
@pytest.mark.parametrize("N", [1, 2, 3, 5])
def test_eq10_equals_claim1_preconditioner(k, d, N):
    rng = RNG(6)
    We = rng.normal(size=(k, d))
    G = rng.normal(size=(k, d))
    P = _claim1_matrix(We, N)
    expected = (P @ G.ravel(order="F")).reshape((k, d), order="F")
    np.testing.assert_allclose(gl.precondition(We, G, N), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gl.preconditioner(We, N), P, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("N", [1, 2, 3, 4, 8])
def test_eq12_equals_eq10_for_one_output(N):
    rng = RNG(7)
    We, G = rng.normal(size=(5, 1, 7)), rng.normal(size=(5, 1, 7))
    np.testing.assert_allclose(gl.precondition_k1(We, G, N), gl.precondition(We, G, N),
                               rtol=1e-12, atol=1e-14)
    lr = np.array([1e-3, 1e-2, 0.1, 0.5, 1.0])
    a = gl.end_to_end_update(We, G, N, lr, weight_decay=0.01)
    direct = []
    for b in range(5):  # Eq 12 from the text, one config at a time
        w, g = We[b, 0], G[b, 0]
        nrm = np.linalg.norm(w)
        pr = (w / nrm) @ g * (w / nrm)
        direct.append((1 - lr[b] * 0.01 * N) * w - lr[b] * nrm ** (2 - 2 / N) * (g + (N - 1) * pr))
    np.testing.assert_allclose(a[:, 0], np.array(direct), rtol=1e-12)


def test_zero_singular_values_stay_zero():
    """A rank-1 W (k = 3) has two zero singular values; the preconditioner must not inflate
    their rounding-level estimates ((1e-17)^(2/8) ~ 6e-5 would leak into the update)."""
    rng = RNG(8)
    U = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    Vt = np.linalg.qr(rng.normal(size=(6, 6)))[0].T
    s = np.array([1e-3, 0.0, 0.0])                      # exact zeros, known to the oracle
    We = U[:, :1] * s[0] @ Vt[:1]
    G = rng.normal(size=(3, 6))
    got = gl.precondition(We, G, 8)
    expected = (_claim1_matrix(We, 8, svd=(U, s, Vt)) @ G.ravel(order="F")).reshape((3, 6),
                                                                                     order="F")
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
    assert np.allclose(gl.precondition(np.zeros((3, 6)), G, 4), 0.0)
    assert np.allclose(gl.precondition_k1(np.zeros((1, 6)), G[:1], 4), 0.0)
    np.testing.assert_array_equal(gl.precondition(np.zeros((3, 6)), G, 1), G)


def test_preconditioner_is_psd_and_depth1_is_identity():
    rng = RNG(9)
    We = rng.normal(size=(2, 4))
    P = gl.preconditioner(We, 3)
    assert np.linalg.eigvalsh((P + P.T) / 2).min() > -1e-12
    np.testing.assert_allclose(gl.preconditioner(We, 1), np.eye(8), atol=1e-15)


# --- inits ---------------------------------------------------------------------------------

def test_identity_init_on_non_square_layers():
    cfg = gl.Config(depth=3, width=(4, 2), init="identity", init_scale=0.0)
    Ws = gl.init_weights(cfg, 6, 3)
    assert [W.shape for W in Ws] == [(4, 6), (2, 4), (3, 2)]
    for W in Ws:
        np.testing.assert_array_equal(W, np.eye(*W.shape))
    noisy = gl.init_weights(gl.Config(depth=2, width=3, init="identity", init_scale=0.01), 5, 1)
    assert 0 < np.abs(noisy[0] - np.eye(3, 5)).max() < 0.1


@pytest.mark.parametrize("widths,d,k", [((1,), 5, 1), ((4, 3), 5, 2), ((6, 6, 6), 4, 3)])
def test_balanced_init_satisfies_eq7(widths, d, k):
    cfg = gl.Config(depth=len(widths) + 1, width=widths, init="balanced", init_scale=0.5, seed=3)
    Ws = gl.init_weights(cfg, d, k)
    for j in range(len(Ws) - 1):
        np.testing.assert_allclose(Ws[j + 1].T @ Ws[j + 1], Ws[j] @ Ws[j].T, atol=1e-12)
    assert np.linalg.norm(chain_product([W[None] for W in Ws])) > 0.05


def test_init_is_deterministic_from_seed_and_normal_has_the_scale():
    a = gl.init_weights(gl.Config(depth=2, width=50, seed=1), 128, 1)
    b = gl.init_weights(gl.Config(depth=2, width=50, seed=1, lr=0.5), 128, 1)
    c = gl.init_weights(gl.Config(depth=2, width=50, seed=2), 128, 1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert np.std(a[0]) == pytest.approx(0.01, rel=0.05)


# --- optimal loss --------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["l2", "l4", "l3"])
def test_optimal_loss_matches_scipy(loss):
    from scipy.optimize import minimize
    rng = RNG(10)
    X = rng.normal(size=(60, 4))
    y = X @ rng.normal(size=4) + rng.normal(scale=0.5, size=60)
    p = gl.get_loss(loss).p
    ref = minimize(lambda w: np.mean(np.abs(X @ w - y) ** p) / p, np.zeros(4), method="BFGS",
                   options={"gtol": 1e-12})
    got = gl.optimal_loss(X, y, loss)
    assert got <= ref.fun * (1 + 1e-7)
    assert got == pytest.approx(ref.fun, rel=1e-6)
