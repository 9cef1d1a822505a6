"""The claim computations of the analytic experiments (sec3, sec7, theorem2) on known answers,
and a tiny run of each that must write its report files."""
import json

import numpy as np
import pytest

import gpulinear as gl
from gpulinear.report import VERDICTS, load_experiment


@pytest.fixture(scope="module")
def sec3():
    return load_experiment("sec3")


@pytest.fixture(scope="module")
def sec7():
    return load_experiment("sec7")


@pytest.fixture(scope="module")
def theorem2():
    return load_experiment("theorem2")


# ------------------------------------------------------------------ sec3: the warm-up identity

@pytest.mark.parametrize("seed, lr", [(0, 1e-3), (1, 0.1), (2, 0.7)])
def test_warmup_identity_on_random_inputs(sec3, seed, lr):
    rng = np.random.default_rng(seed)
    w1, w2, grad_w = rng.normal(size=7), float(rng.normal()), rng.normal(size=7)
    new_w1, new_w2, rho, gamma, rule, dropped = sec3.warmup_step(w1, w2, grad_w, lr)
    grad_w1, grad_w2 = w2 * grad_w, w1 @ grad_w           # chain rule, written out again
    np.testing.assert_allclose(new_w1, w1 - lr * grad_w1, rtol=1e-15)
    np.testing.assert_allclose(new_w2, w2 - lr * grad_w2, rtol=1e-15)
    assert rho == pytest.approx(lr * w2 ** 2, rel=1e-15)
    assert gamma == pytest.approx(lr * grad_w2 / w2, rel=1e-14)
    np.testing.assert_allclose(dropped, lr ** 2 * grad_w1 * grad_w2, rtol=1e-14)
    # w(t+1) - [w - rho grad_w - gamma w] = eta^2 grad_w1 grad_w2, exactly up to rounding
    scale = np.linalg.norm(w1 * w2) + np.linalg.norm(new_w1 * new_w2)
    assert np.linalg.norm(new_w1 * new_w2 - rule - dropped) <= 1e-14 * scale


def test_warmup_loss_gradient_matches_finite_differences(sec3):
    X, y = gl.datasets.synthetic_regression(m=30, d=5, seed=3)
    w = np.random.default_rng(0).normal(size=5) * 0.3
    value, grad = sec3.lp_value_and_grad(X, X.T.copy(), y, w)
    ref, _ = gl.losses.evaluate("l4", w[None, None], X, y[:, None])
    assert value == pytest.approx(float(ref[0]), rel=1e-13)
    h = 1e-6
    fd = [(sec3.lp_value_and_grad(X, X.T, y, w + h * np.eye(5)[i])[0]
           - sec3.lp_value_and_grad(X, X.T, y, w - h * np.eye(5)[i])[0]) / (2 * h)
          for i in range(5)]
    np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-10)


def test_loglog_slope_recovers_a_power_law(sec3):
    x = np.array([1e-4, 1e-3, 1e-2])
    assert sec3.loglog_slope(x, 3.0 * x ** 2) == pytest.approx(2.0, abs=1e-12)


# ------------------------------------------------------------------ theorem2: line integrals

def _plane(d, seed):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=d)
    e /= np.linalg.norm(e)
    u = rng.normal(size=d)
    u -= (u @ e) * e
    return e, u / np.linalg.norm(u)


def test_line_integral_of_a_gradient_field_vanishes(theorem2):
    # f(w) = sin(a.w) + (b.w)^3 + |w|^2 exp(c.w): grad f written out by hand
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 5))

    def grad_f(w):
        sq = np.sum(w * w, axis=-1, keepdims=True)
        ex = np.exp(w @ c)[..., None]
        return (np.cos(w @ a)[..., None] * a + 3 * (w @ b)[..., None] ** 2 * b
                + ex * (2 * w + sq * c))

    e, u = _plane(5, 1)
    curve = theorem2.gamma_curve(e, u, 0.3, 1.1, 64)
    integral, scale = theorem2.integrate(grad_f, curve)
    assert scale > 1.0                                   # the field does work along the pieces
    assert abs(integral) <= 1e-10 * scale


def test_line_integral_of_a_rotation_is_twice_the_area(theorem2):
    # F = (-y, x) in plane coordinates x = w.e, y = w.u: circulation = 2 x area enclosed; the
    # curve bounds the upper half annulus counter-clockwise, area pi (R^2 - r^2) / 2
    r, R = 0.4, 1.7
    for d, seed in ((2, None), (6, 2)):
        e, u = (np.eye(2)[0], np.eye(2)[1]) if seed is None else _plane(d, seed)
        rotation = np.outer(u, e) - np.outer(e, u)      # w -> -y e + x u
        integral, _ = theorem2.integrate(lambda w, rot=rotation: w @ rot.T,
                                         theorem2.gamma_curve(e, u, r, R, 32))
        assert integral == pytest.approx(np.pi * (R ** 2 - r ** 2), rel=1e-13)


@pytest.mark.parametrize("N", [1, 2, 3, 4, 8])
def test_lemma3_constant_field(theorem2, N):
    # F_e for the constant field e integrates to K_N (R^a - r^a) (App A.4, Lemma 3)
    e, u = _plane(4, 3)
    r, R = 0.2, 0.9
    curve = theorem2.gamma_curve(e, u, r, R, 96)
    field = lambda w: gl.precondition_k1(w[..., None, :], np.broadcast_to(e, w.shape)[..., None, :],
                                         N)[..., 0, :]
    integral, scale = theorem2.integrate(field, curve)
    a = 3 - 2 / N
    expected = theorem2.lemma3_constant(N) * (R ** a - r ** a)
    assert integral == pytest.approx(expected, rel=1e-12, abs=1e-13 * scale)


def test_lemma3_constant_values(theorem2):
    # K_N = 2N/(3 - 2/N) - 2: zero for N = 1, 2 (why the theorem needs N > 2), positive beyond
    known = {1: 0.0, 2: 0.0, 3: 4 / 7, 4: 1.2, 8: 16 / 2.75 - 2}
    for N, value in known.items():
        assert theorem2.lemma3_constant(N) == pytest.approx(value, abs=1e-15)


def test_exact_l4_formula_matches_the_quadrature(theorem2):
    # the experiment's closed form for an l4 loss against the numerical integral, any N
    X, y = gl.datasets.synthetic_regression(m=40, d=4, seed=5)
    Y = y[:, None]
    _, G0 = gl.losses.evaluate("l4", np.zeros((1, 1, 4)), X, Y)
    c = np.linalg.norm(G0)
    e = G0[0, 0] / c
    q3 = -np.mean((X @ e) ** 3 * y)
    _, u = _plane(4, 4)
    u -= (u @ e) * e
    u /= np.linalg.norm(u)
    for r, R in ((0.05, 0.3), (0.5, 2.0)):
        points, velocities, weights = theorem2.gamma_curve(e, u, r, R, 96)
        W = points.reshape(-1, 1, 4)
        _, G = gl.losses.evaluate("l4", W, X, Y)
        for N in (1, 2, 3, 5):
            F = gl.precondition_k1(W, G, N).reshape(points.shape)
            integral, scale = theorem2.line_integral(F, velocities, weights)
            assert integral == pytest.approx(theorem2.predicted_l4(c, q3, N, r, R),
                                             abs=1e-12 * scale)
            if N >= 3:
                assert integral > 1e-3 * scale           # clearly not a gradient field


# ------------------------------------------------------------------ sec7: App B's numbers

def test_appendix_b_formulas(sec7):
    y1, eps1 = 30.0, 0.2
    assert sec7.gd_bound(y1) == pytest.approx(4 / 900)
    assert sec7.appb_lr(y1, eps1) == pytest.approx(1 / (0.2 * 900))
    assert sec7.appb_bound(y1, eps1) == pytest.approx(37.5)
    # unit-free: the paper's eta_OP / eta_GD (sum loss) equals ours (mean loss, lr = 2 eta)
    paper_ratio = (1 / (2 * eps1 * y1)) / (2 / y1 ** 2)
    ours_ratio = (1 / (eps1 * y1)) / sec7.gd_bound(y1)
    assert paper_ratio == pytest.approx(sec7.appb_bound(y1, eps1))
    assert ours_ratio == pytest.approx(sec7.appb_bound(y1, eps1))


def test_gd_divergence_bound_and_appb_first_step(sec7):
    y1, y2, eps1 = 30.0, 1.0, 0.2
    X, y = gl.datasets.two_point_problem(y1, y2)
    bound = sec7.gd_bound(y1)
    gd = sec7.iterate(1, [0.9 * bound, 1.1 * bound], (0.0, 0.0), X, y, 300, (1e-1,))
    assert list(gd["diverged"]) == [False, True]         # from w1 = 0 GD needs lr < 4 / y1^2
    # App B: one step of the N = 2 rule at lr 1/(eps1 y1^2) puts w1 near y1
    _, w1_after_one = sec7.w2_rate(X, y, (eps1, eps1 * y2 / y1), sec7.appb_lr(y1, eps1), 1)
    assert abs(w1_after_one - y1) < 0.05 * y1


def test_speedups_and_best_run(sec7):
    reached = np.array([[10, 100, -1], [5, 60, 700], [3, 80, 900]])
    assert sec7.best_run(reached) == 1                   # most levels, then fastest at the deepest
    np.testing.assert_allclose(sec7.speedups([10, -1, 50], [2, 5, -1]), [5, np.inf, np.nan])


# ------------------------------------------------------------------ tiny runs write the reports

@pytest.mark.parametrize("name", ["sec3", "sec7", "theorem2"])
def test_tiny_run_writes_report(name, tmp_path):
    module = load_experiment(name)
    data = module.run(tmp_path, tiny=True)
    on_disk = json.loads((tmp_path / f"{name}.json").read_text())
    for source in (data, on_disk):
        assert {"claims", "figures", "setup"} <= set(source)
        assert source["claims"] and isinstance(source["setup"], str) and source["setup"]
        for claim in source["claims"]:
            assert set(claim) >= {"claim", "measured", "verdict"}
            assert claim["verdict"] in VERDICTS
            assert claim["claim"] and claim["measured"]
    assert on_disk["figures"] == [f"{name}.png"]
    png = tmp_path / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
