"""gpulinear.torch: overparameterize / collapse / assert_equivalent, and the Fig 5-right script."""
from __future__ import annotations

import copy
import importlib.util
import io
import itertools
import json
import os
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="gpulinear.torch needs the torch extra "
                                            "(pip install 'gpulinear[torch]')")
from torch import nn

from gpulinear.torch import (
    assert_equivalent,
    collapse,
    count_parameters,
    factored_linear,
    overparameterize,
)

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(),
                                 reason=f"MNIST IDX files not staged at {MNIST_DIR}")
EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "fig5_right_mnist_cnn.py"

# (in, out) pairs: contraction, expansion, square, width-1 ends.
SHAPES = [(7, 3), (3, 7), (5, 5), (1, 4), (4, 1)]


def mlp(sizes, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    layers = []
    for d, k in itertools.pairwise(sizes):
        layers += [nn.Linear(d, k), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).to(dtype).eval()


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 12), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(12, 3)).double().eval()


def factors(layer):
    chain = layer.parametrizations.weight
    return [getattr(chain, f"original{j}") for j in range(len(chain[0].shapes))]


def input_grad(model, x):
    x = x.clone().requires_grad_(True)
    model(x).pow(2).sum().backward()
    return x.grad


# ----------------------------------------------------------------------------- equivalence

@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("init", ["normal", "balanced", "identity"])
@pytest.mark.parametrize("width", ["min", 9, "tuple"])
def test_function_kept_and_collapse_exact(depth, init, width):
    """Default inits keep the function; collapse keeps it too; so do input gradients."""
    if width == "tuple":
        width = tuple(range(6, 6 + depth - 1))  # distinct widths, all >= min(in, out) here
    model = mlp([7, 5, 9, 3, 1])
    x = torch.randn(11, 7, dtype=torch.float64)
    deep = overparameterize(copy.deepcopy(model), depth=depth, width=width, init=init)
    flat = collapse(copy.deepcopy(deep))
    assert_equivalent(deep, model, x)
    assert_equivalent(flat, model, x)
    torch.testing.assert_close(input_grad(deep, x), input_grad(model, x))
    torch.testing.assert_close(input_grad(flat, x), input_grad(model, x))
    assert all(type(m) is nn.Linear for m in flat if isinstance(m, nn.Linear))
    assert count_parameters(flat) == count_parameters(model)


@pytest.mark.parametrize("init,std", [("normal", 0.3), ("truncated_normal", 0.3),
                                      ("identity", 0.05)])
def test_fresh_init_collapse_matches_deep_model(init, std):
    """With fresh factors the function changes, but collapse still reproduces the deep model."""
    model = small_cnn()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    deep = overparameterize(copy.deepcopy(model), depth=3, init=init, init_std=std,
                            generator=torch.Generator().manual_seed(1))
    with pytest.raises(AssertionError):
        assert_equivalent(deep, model, x) if init != "identity" else assert_equivalent(
            deep, model, x, rtol=1e-9, atol=1e-12)
    flat = collapse(copy.deepcopy(deep))
    assert_equivalent(flat, deep, x)
    torch.testing.assert_close(input_grad(flat, x), input_grad(deep, x))


def test_small_cnn_default_keeps_function():
    model = small_cnn()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    deep = overparameterize(copy.deepcopy(model), depth=2)
    assert_equivalent(deep, model, x)
    torch.testing.assert_close(input_grad(deep, x), input_grad(model, x))
    assert_equivalent(collapse(deep), model, x)


@pytest.mark.parametrize("d,k", SHAPES)
def test_balanced_factors_satisfy_eq7(d, k):
    """init_std=None factors by SVD so that W_{j+1}^T W_{j+1} = W_j W_j^T (paper, Eq 7)."""
    layer = nn.Linear(d, k).double()
    weight = layer.weight.detach().clone()
    overparameterize(layer, depth=4)
    ws = factors(layer)
    for lower, upper in itertools.pairwise(ws):
        torch.testing.assert_close(upper.T @ upper, lower @ lower.T)
    torch.testing.assert_close(layer.weight, weight)


def test_normal_init_keeps_original_as_carrier_and_draws_new_factors():
    """App C.2 reading: the old weight stays as W_1 (k <= d) or W_N (k > d), new factors are
    drawn from N(0, s^2)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 200), nn.Linear(200, 400))
    w_down, w_up = model[0].weight.detach().clone(), model[1].weight.detach().clone()
    overparameterize(model, depth=2, init_std=0.1, generator=torch.Generator().manual_seed(3))
    down, up = factors(model[0]), factors(model[1])
    assert torch.equal(down[0], w_down) and down[1].shape == (200, 200)
    assert torch.equal(up[1], w_up) and up[0].shape == (200, 200)
    for new in (down[1].detach(), up[0].detach()):
        assert abs(float(new.std()) - 0.1) < 0.003 and abs(float(new.mean())) < 0.003


def test_truncated_normal_is_bounded_and_identity_noise_has_std():
    layer = nn.Linear(200, 200)
    overparameterize(layer, init="truncated_normal", init_std=0.1)
    new = factors(layer)[1].detach()
    assert float(new.abs().max()) <= 0.2
    assert 0.08 < float(new.std()) < 0.095  # std of N(0, 0.01) truncated at 2 sigma: 0.088
    layer = nn.Linear(200, 200)
    overparameterize(layer, init="identity", init_std=0.02)
    offset = factors(layer)[1].detach() - torch.eye(200)
    assert abs(float(offset.std()) - 0.02) < 0.001


def test_generator_makes_draws_reproducible():
    runs = [overparameterize(nn.Linear(8, 5), init_std=0.1,
                             generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    # The two layers' own weights differ (global RNG); the new factor comes from the generator.
    assert torch.equal(factors(runs[0])[1], factors(runs[1])[1])


# ----------------------------------------------------------------------------- shapes and counts

@pytest.mark.parametrize("d,k", SHAPES)
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_width_min_and_parameter_count(d, k, depth):
    layer = overparameterize(nn.Linear(d, k), depth=depth)
    r = min(d, k)
    sizes = [d] + [r] * (depth - 1) + [k]
    assert [tuple(w.shape) for w in factors(layer)] == [
        (sizes[j + 1], sizes[j]) for j in range(depth)]
    assert count_parameters(layer) == sum(a * b for a, b in itertools.pairwise(sizes)) + k


def test_width_int_and_tuple():
    layer = overparameterize(nn.Linear(6, 4), depth=3, width=2, init_std=0.1)
    assert [tuple(w.shape) for w in factors(layer)] == [(2, 6), (2, 2), (4, 2)]
    layer = overparameterize(nn.Linear(6, 4), depth=4, width=(8, 1, 3), init_std=0.1)
    assert [tuple(w.shape) for w in factors(layer)] == [(8, 6), (1, 8), (3, 1), (4, 3)]
    assert count_parameters(layer) == 48 + 8 + 3 + 12 + 4


def test_tutorial_cnn_counts_match_appendix_c():
    """Exact counts for the paper's model: 1,663,370 -> 1,925,614 (+262,244 = 512^2 + 10^2)."""
    model = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(512, 10))
    base = count_parameters(model)
    assert base == (25 * 32 + 32) + (25 * 32 * 64 + 64) + (3136 * 512 + 512) + (512 * 10 + 10)
    overparameterize(model, init_std=0.1)
    assert [tuple(w.shape) for w in factors(model[7])] == [(512, 3136), (512, 512)]
    assert [tuple(w.shape) for w in factors(model[10])] == [(10, 512), (10, 10)]
    assert count_parameters(model) - base == 512 * 512 + 10 * 10
    model[0].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - 800


def test_include_selects_by_name_and_old_weight_storage_is_gone():
    model = mlp([5, 4, 3, 2])
    overparameterize(model, include=["2"])
    names = [n for n, _ in model.named_parameters()]
    assert "2.parametrizations.weight.original0" in names and "2.weight" not in names
    assert "0.weight" in names and "4.weight" in names
    assert "2.parametrizations.weight.original" not in names  # no kept copy of the old weight


def test_factored_linear_matches_layer_call():
    layer = overparameterize(nn.Linear(9, 4).double(), depth=3, init_std=0.3)
    x = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(factored_linear(layer, x), layer(x))
    g_fact = torch.autograd.grad(factored_linear(layer, x).sum(), [x, *factors(layer)])
    g_full = torch.autograd.grad(layer(x).sum(), [x, *factors(layer)])
    for a, b in zip(g_fact, g_full):
        torch.testing.assert_close(a, b)
    plain = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    assert torch.equal(factored_linear(plain, x), plain(x))


# ----------------------------------------------------------------------------- state_dict

def test_state_dict_round_trip_overparameterized_form():
    x = torch.randn(7, 6, dtype=torch.float64)
    source = overparameterize(mlp([6, 5, 3]), depth=3, init_std=0.4)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = overparameterize(mlp([6, 5, 3], seed=9), depth=3, init="identity")
    with pytest.raises(AssertionError):
        assert_equivalent(target, source, x)
    target.load_state_dict(torch.load(buffer))
    assert_equivalent(target, source, x)
    assert sorted(source.state_dict()) == sorted(target.state_dict())


def test_state_dict_round_trip_collapsed_form():
    x = torch.randn(7, 6, dtype=torch.float64)
    flat = collapse(overparameterize(mlp([6, 5, 3]), depth=2, init_std=0.4))
    assert sorted(flat.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    fresh = mlp([6, 5, 3], seed=4)
    fresh.load_state_dict(flat.state_dict())
    assert_equivalent(fresh, flat, x)


def test_collapse_of_a_deepcopy_leaves_the_original_working():
    """parametrize shares the injected class between deep copies; collapse must not break it."""
    deep = overparameterize(mlp([4, 3]), init_std=0.5)
    x = torch.randn(2, 4, dtype=torch.float64)
    expected = deep(x)
    flat = collapse(copy.deepcopy(deep))
    torch.testing.assert_close(deep(x), expected)
    torch.testing.assert_close(flat(x), expected)


def test_collapse_keeps_frozen_weight_a_parameter():
    layer = overparameterize(nn.Linear(4, 3), init_std=0.1)
    for w in factors(layer):
        w.requires_grad_(False)
    collapse(layer)
    assert isinstance(layer.weight, nn.Parameter) and not layer.weight.requires_grad
    assert "weight" in dict(layer.named_parameters())


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs,error,words", [
    ({"depth": 0}, ValueError, "depth"),
    ({"depth": 2.0}, TypeError, "depth"),
    ({"include": ["nope"]}, ValueError, "include"),
    ({"include": ["1"]}, TypeError, "not an nn.Linear"),
    ({"width": 0}, ValueError, "width"),
    ({"width": (3, 3)}, ValueError, "depth - 1"),
    ({"width": 2.5}, TypeError, "width"),
    ({"width": (2.5,)}, TypeError, "width"),
    ({"width": "max"}, ValueError, "width"),
    ({"init": "xavier"}, ValueError, "init"),
    ({"init_std": -0.1}, ValueError, "init_std"),
    ({"init": "balanced", "init_std": 0.1}, ValueError, "init_std"),
])
def test_errors_name_the_argument(kwargs, error, words):
    model = mlp([4, 3, 2])
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=words):
        overparameterize(model, **kwargs)
    assert sorted(model.state_dict()) == sorted(before)  # nothing half-converted


def test_overparameterizing_twice_is_refused():
    model = overparameterize(mlp([4, 3]))
    with pytest.raises(ValueError, match="collapse"):
        overparameterize(model)


def test_narrow_width_warns_that_function_is_not_kept():
    with pytest.warns(UserWarning, match="rank"):
        overparameterize(nn.Linear(6, 5), depth=2, width=2)


# ----------------------------------------------------------------------------- assert_equivalent

def test_assert_equivalent_refuses_train_mode_and_names_the_model():
    model = small_cnn()
    other = copy.deepcopy(model).train()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"model b is in train mode"):
        assert_equivalent(model, other, x)
    with pytest.raises(ValueError, match=r"model a is in train mode"):
        assert_equivalent(other, model, x)
    assert other.training  # modes are left as they were
    assert_equivalent(model, other.eval(), x)


def test_assert_equivalent_reports_mismatch_with_dtype_tolerance():
    a = mlp([4, 2], dtype=torch.float32)
    b = copy.deepcopy(a)
    x = torch.randn(5, 4)
    with torch.no_grad():
        b[0].bias += 1e-2  # above float32's 4*sqrt(eps) = 1.4e-3 relative
    with pytest.raises(AssertionError, match="max \\|a - b\\|"):
        assert_equivalent(a, b, x)
    assert_equivalent(a, b, x, atol=0.02)
    with torch.no_grad():
        b[0].bias -= 1e-2 - 1e-6  # 1e-6: well inside float32 tolerance
    assert_equivalent(a, b, x)


# ----------------------------------------------------------------------------- compile, devices

def test_torch_compile_traces_the_product():
    """Dynamo + AOT autograd through the parametrization, one graph (aot_eager: no C compiler)."""
    model = overparameterize(mlp([6, 4, 3], dtype=torch.float32), depth=3, init_std=0.3)
    x = torch.randn(5, 6, requires_grad=True)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))
    g_compiled = torch.autograd.grad(compiled(x).sum(), factors(model[0]))
    g_eager = torch.autograd.grad(model(x).sum(), factors(model[0]))
    for a, b in zip(g_compiled, g_eager):
        torch.testing.assert_close(a, b)
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GPULINEAR_RUN_SLOW"),
                    reason="inductor compiles C++ (15-30 s on 2 cores); set GPULINEAR_RUN_SLOW=1")
def test_torch_compile_inductor():
    model = overparameterize(mlp([6, 4, 3], dtype=torch.float32), depth=3, init_std=0.3)
    x = torch.randn(5, 6)
    torch.testing.assert_close(torch.compile(model)(x), model(x))
    torch._dynamo.reset()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_factors_follow_the_weight():
    model = mlp([6, 4, 3], dtype=torch.float32).cuda()
    x = torch.randn(5, 6, device="cuda")
    deep = overparameterize(copy.deepcopy(model), depth=3)
    assert all(w.device.type == "cuda" for w in factors(deep[0]))
    assert_equivalent(deep, model, x)
    fresh = overparameterize(copy.deepcopy(model), init_std=0.1,
                             generator=torch.Generator().manual_seed(0))  # CPU generator is fine
    assert_equivalent(collapse(copy.deepcopy(fresh)), fresh, x)


# ----------------------------------------------------------------------------- MNIST

@needs_mnist
def test_tiny_mnist_training_loss_decreases():
    from gpulinear.datasets import load_mnist

    images, labels = load_mnist(MNIST_DIR, split="train")
    x = (torch.from_numpy(images[:512].reshape(512, -1)).float() - 127.5) / 255.0
    y = torch.from_numpy(labels[:512].astype("int64"))
    torch.manual_seed(0)
    model = overparameterize(nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)),
                             depth=2, init_std=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(120):
        batch = slice((step * 64) % 448, (step * 64) % 448 + 64)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


@needs_mnist
def test_fig5_right_tiny_run_writes_json(tmp_path):
    spec = importlib.util.spec_from_file_location("fig5_right_mnist_cnn", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NAME == "fig5_right"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the experiment should run clean
        result = module.run(tmp_path, tiny=True, mnist_dir=str(MNIST_DIR))
    written = json.loads((tmp_path / "fig5_right.json").read_text())
    assert (tmp_path / "fig5_right.png").stat().st_size > 0
    for key in ("mode", "ran", "parameters", "runs", "lr_grid", "init_std_grid", "claims"):
        assert key in written
    assert written["mode"] == "tiny"
    assert written["claims"] == json.loads(json.dumps(result["claims"]))
    assert written["parameters"]["added"] == 512 * 512 + 10 * 10
    assert all(written["shared_layers_identical_at_init"].values())
    for claim in written["claims"]:
        assert claim["verdict"] in ("holds", "partly", "does not hold",
                                    "not testable at this length") \
            or claim["verdict"].startswith("depends on ")
        assert claim["claim"] and claim["measured"] and claim["reason"]
    n = written["ran"]["iterations_per_main_run"]
    # one main run per model and L2 reading, each logging CE and total loss per iteration
    assert set(written["curves"]) == {"original", "factors", "product", "original-only"}
    for run in written["curves"].values():
        assert len(run["batch_ce"]) == len(run["batch_total"]) == n
        assert all(t > c for c, t in zip(run["batch_ce"], run["batch_total"]))  # + L2 > 0
    # every judged claim has a verdict per L2 reading x measure (x rule for the lr grid)
    speed, _, lr_grid, std_grid = written["claims"]
    assert len(speed["variants"]) == len(std_grid["variants"]) == 3 * 2
    assert len(lr_grid["variants"]) == 3 * 2 * 3
    assert written["figures"] == ["fig5_right.png"]


def test_fig5_right_l2_readings_penalize_what_they_say():
    spec = importlib.util.spec_from_file_location("fig5_right_mnist_cnn", EXPERIMENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    orig = module.tutorial_cnn(0, "cpu")
    over = module.overparameterized_cnn(0, "cpu", 0.1)

    def term(model, reading):
        return float(module.l2_term(model, reading).detach())

    def l2(tensors):
        return 5e-4 * sum(float(t.detach().double().pow(2).sum()) / 2 for t in tensors)

    # the original model has one reading: its dense weights and biases
    want = l2([orig.fc1.weight, orig.fc1.bias, orig.fc2.weight, orig.fc2.bias])
    for reading in module.L2_READINGS:
        assert term(orig, reading) == pytest.approx(want, rel=1e-5)
    (a1, a2), (b1, b2) = factors(over.fc1), factors(over.fc2)
    biases = [over.fc1.bias, over.fc2.bias]
    assert term(over, "factors") == pytest.approx(
        l2([a1, a2, b1, b2] + biases), rel=1e-5)
    assert term(over, "product") == pytest.approx(
        l2([a2 @ a1, b2 @ b1] + biases), rel=1e-5)
    assert term(over, "original-only") == pytest.approx(
        l2([a1, b1] + biases), rel=1e-5)
    # W_1 is the original weight: at init original-only equals the original model's term
    assert term(over, "original-only") == pytest.approx(want, rel=1e-5)
    # ... and its gradient does not reach the new factors
    module.l2_term(over, "original-only").backward()
    assert a2.grad is None and b2.grad is None and a1.grad is not None
    with pytest.raises(ValueError, match="reading"):
        module.l2_term(over, "weights")


def test_assigning_a_weight_refactors_it():
    layer = overparameterize(nn.Linear(5, 3).double(), depth=3, init_std=0.2)
    target = torch.randn(3, 5, dtype=torch.float64)
    layer.weight = target  # right_inverse: identity-padded factors of the new weight
    torch.testing.assert_close(layer.weight, target)
    assert [tuple(w.shape) for w in factors(layer)] == [(3, 5), (3, 3), (3, 3)]
