"""Overparameterize the dense layers of a torch model by depth (Arora, Cohen, Hazan 2018, Sec 8).

``overparameterize(model)`` makes each selected ``nn.Linear`` compute ``x @ (W_N ... W_1)^T + b``
with N trainable factors in place of its weight, as the paper did to TensorFlow's MNIST tutorial
CNN (Figure 5-right, Appendix C.2); ``collapse(model)`` folds the product back into a plain weight.
Install with the ``torch`` extra. ``import gpulinear`` never imports this module, so the
CPU-only NumPy suite starts without torch.

Mechanics: ``torch.nn.utils.parametrize`` with a ``ChainProduct`` whose ``right_inverse`` returns
a tuple of factors. The factors then ARE the parametrization's originals
(``<layer>.parametrizations.weight.original0 .. original{N-1}``, W_1 first), so:
  * the old weight storage is dropped, not kept beside the factors;
  * ``state_dict`` holds exactly the factors (and the bias), and loads into any model
    overparameterized with the same shapes; the folded model's ``state_dict`` is a plain one;
  * assigning ``layer.weight = W`` refactors W (identity-padded, see ``init="identity"``);
  * ``torch.compile`` traces the product like any other op.
Cost: ``layer(x)`` forms the product (N-1 matrix products of the factors) on every forward; for
the tutorial's 3136x512 layer that is 2*512*512*3136 = 1.6 GFLOP, eight times what a batch of 64
needs for ``x @ W^T`` itself (and twice that again in the backward). ``factored_linear``
applies the factors one at a time instead, with the same value and gradients.

Shape words as in the rest of the package: layer of ``in_features`` d, ``out_features`` k,
depth N, hidden widths n_1..n_{N-1}; factor W_j has shape (n_j, n_{j-1}), n_0 = d, n_N = k.

Initialization (``init`` x ``init_std``), chosen so that the default keeps the layer's function:

==================  ===========  ===============================================================
init                init_std     factors
==================  ===========  ===============================================================
"normal"            None         balanced factorization of the current weight by SVD: product is
                                 the weight, and W_{j+1}^T W_{j+1} = W_j W_j^T (the paper's Eq 7)
                                 holds at t=0, so Theorem 1's end-to-end dynamics apply at once
                                 ("truncated_normal" with None does the same)
"normal"            s > 0        App C.2: the current weight stays as the "carrier" factor (W_1
                                 when k <= d, else W_N; zero-padded or cropped when its widths are
                                 not "min"); every NEW factor is drawn from N(0, s^2)
"truncated_normal"  s > 0        as "normal", new factors from TensorFlow's ``truncated_normal``
                                 (N(0, s^2) redrawn beyond 2s), what the tutorial's code used
"identity"          None or s    carrier keeps the weight, the other factors are eye (rectangular
                                 where not square) plus N(0, s^2) noise: product = weight exactly
                                 when s is None and every hidden width >= min(d, k)
"balanced"          None         same as "normal" with init_std=None
==================  ===========  ===============================================================

Why the carrier: the paper's modified tutorial kept its original (seeded) dense weight and put a
new matrix after it, "initialized in the same way as their predecessors". To get all factors
fresh instead, re-draw the layer's weight first (``nn.init.normal_(layer.weight, std=s)``): with
width "min" the carrier has exactly the weight's shape, so every factor is then N(0, s^2).
"""
from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["INITS", "ChainProduct", "assert_equivalent", "collapse", "count_parameters",
           "factored_linear", "overparameterize"]

INITS = ("normal", "truncated_normal", "identity", "balanced")


class ChainProduct(nn.Module):
    """Parametrization ``weight = W_N @ ... @ W_1``.

    shapes: ((n_1, n_0), ..., (n_N, n_{N-1})), the factors' shapes, W_1 first."""

    def __init__(self, shapes: tuple[tuple[int, int], ...]):
        super().__init__()
        self.shapes = tuple(tuple(shape) for shape in shapes)

    def forward(self, *factors: torch.Tensor) -> torch.Tensor:
        product = factors[0]
        for factor in factors[1:]:
            product = factor @ product
        return product

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Called by register_parametrization and by ``layer.weight = W``. Identity padding is exact
        # (when hidden widths >= min(d, k)) and costs no SVD, so registering a big model is cheap.
        return tuple(_carrier_factors(weight, self.shapes, noise_std=None, generator=None,
                                      others="identity"))

    def extra_repr(self) -> str:
        widths = [self.shapes[0][1]] + [rows for rows, _ in self.shapes]
        return f"depth={len(self.shapes)}, widths={tuple(widths)}"


def overparameterize(module: nn.Module, depth: int = 2, width="min", init_std: float | None = None,
                     init: str = "normal", include: Iterable[str] | str | None = None,
                     generator: torch.Generator | None = None) -> nn.Module:
    """Replace the weight of each selected ``nn.Linear`` by a product of ``depth`` factors.

    module: modified in place and returned.  depth: N >= 1 factors per layer.
    width: "min" (App C: min(d, k), the smallest width that keeps the layer's rank), an int for
        every hidden width, or a tuple of N-1 ints (n_1, ..., n_{N-1}).
    init, init_std: see the module docstring; the default keeps every layer's function.
    include: None for every ``nn.Linear``, else names from ``module.named_modules()`` (one str is
        one name).  generator: a ``torch.Generator`` for reproducible draws (global RNG if None).
    Factors live on the device and dtype of the layer's weight.
    """
    depth = _check_depth(depth)
    init = _check_init(init, init_std)
    layers = _selected_layers(module, include)
    # Validate every layer before touching any, so an error never leaves a half-converted model.
    plans = [(name, layer, _factor_shapes(layer, depth, width)) for name, layer in layers]
    for name, layer, shapes in plans:
        # Factors come from the weight BEFORE registration: the identity-padded factors that
        # registration creates crop the weight when a hidden width is below min(d, k).
        with torch.no_grad():
            weight = layer.weight.detach()
            if init == "balanced" or (init in ("normal", "truncated_normal") and init_std is None):
                fresh = _balanced_factors(weight, shapes, name)
            elif init == "identity":
                fresh = _carrier_factors(weight, shapes, init_std, generator, "identity")
                _warn_if_truncated(layer, shapes, name)
            else:
                fresh = _carrier_factors(weight, shapes, init_std, generator, init)
        parametrize.register_parametrization(layer, "weight", ChainProduct(shapes))
        layer.parametrizations.train(layer.training)  # new submodules start in train mode
        with torch.no_grad():
            for j, factor in enumerate(fresh):
                getattr(layer.parametrizations.weight, f"original{j}").copy_(factor)
    return module


def collapse(module: nn.Module) -> nn.Module:
    """Fold every overparameterized layer back into a plain ``nn.Linear`` (in place, returned).

    The whole parametrization chain of ``weight`` is folded, including any that was stacked on
    top of ours, so the layer keeps its function.
    """
    for layer in module.modules():
        if not parametrize.is_parametrized(layer, "weight"):
            continue
        if not any(isinstance(p, ChainProduct) for p in layer.parametrizations.weight):
            continue
        requires_grad = any(p.requires_grad for p in layer.parametrizations.weight.parameters())
        with torch.no_grad():
            folded = layer.weight.detach().clone()
        # A deepcopy of a parametrized module shares its class, and remove_parametrizations
        # deletes the ``weight`` property from that class, breaking the copy's twin: give this
        # layer a private copy of the class first.
        cls = type(layer)
        layer.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        # remove_parametrizations registers a frozen result as a buffer; a Linear needs a Parameter.
        if "weight" in layer._buffers:
            del layer._buffers["weight"]
        layer.weight = nn.Parameter(folded, requires_grad=requires_grad)
    return module


def factored_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` computed one factor at a time, ``((x W_1^T) ... W_N^T) + b``, never forming the
    product W_N ... W_1: same value and gradients up to rounding, and cheaper whenever the batch m
    is small against the widths (m * sum_j n_j n_{j-1} multiply-adds, against about
    n_N n_{N-1} n_0 + ... to form the product; the tutorial's 3136x512 layer at batch 64: 0.24
    against 1.9 GFLOP per forward). Any other layer (plain, or parametrized otherwise) is called.
    """
    chain = layer.parametrizations.weight if parametrize.is_parametrized(layer, "weight") else ()
    if len(chain) != 1 or not isinstance(chain[0], ChainProduct):
        return layer(x)
    out = x
    for j in range(len(chain[0].shapes)):
        out = nn.functional.linear(out, getattr(chain, f"original{j}"))
    return out if layer.bias is None else out + layer.bias


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalars in ``module.parameters()`` (shared tensors once); factors count, the
    folded product of an overparameterized layer does not (it is not stored)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def assert_equivalent(a: nn.Module, b: nn.Module, x, rtol: float | None = None,
                      atol: float | None = None) -> None:
    """Assert ``a(x)`` and ``b(x)`` agree within ``|a - b| <= atol + rtol |b|``, in eval mode.

    Both models must already be in eval mode: we raise (ValueError naming the model) rather than
    switch modes, because a train-mode comparison is the usual cause of false mismatches (dropout
    draws differ, batch norm uses batch statistics and updates its running stats) and silently
    flipping modes would hide that the caller's model is in train mode.
    x: a tensor, or a tuple of positional arguments. Defaults: rtol = 4*sqrt(eps) of the output
    dtype (float32: 1.4e-3, float64: 6e-8), atol = rtol * max|b(x)| (so entries near 0 are judged
    on the output's scale). Outputs may be a tensor or a (nested) tuple/list of tensors.
    """
    for label, model in (("a", a), ("b", b)):
        in_train = [name or "<root>" for name, m in model.named_modules() if m.training]
        if in_train:
            shown = ", ".join(repr(n) for n in in_train[:4])
            shown += ", ..." if len(in_train) > 4 else ""
            raise ValueError(
                f"assert_equivalent compares eval-mode outputs, but model {label} is in train mode "
                f"(submodules {shown}); dropout and batch norm give different outputs in train "
                f"mode. Call {label}.eval() first (and .train() after, if you were training).")
    args = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        outs_a, outs_b = _flat_tensors(a(*args), "a"), _flat_tensors(b(*args), "b")
    if len(outs_a) != len(outs_b):
        raise AssertionError(f"a returns {len(outs_a)} tensors, b returns {len(outs_b)}")
    for i, (out_a, out_b) in enumerate(zip(outs_a, outs_b)):
        if out_a.shape != out_b.shape:
            raise AssertionError(f"output {i}: shape {tuple(out_a.shape)} (a) != "
                                 f"{tuple(out_b.shape)} (b)")
        ref = out_b.detach().to(torch.float64)
        diff = (out_a.detach().to(torch.float64) - ref).abs()
        tol_r = rtol if rtol is not None else 4 * torch.finfo(out_b.dtype).eps ** 0.5
        tol_a = atol if atol is not None else tol_r * float(ref.abs().max()) if ref.numel() else 0.0
        bad = diff > tol_a + tol_r * ref.abs()
        if bool(bad.any()):
            worst = int(diff.argmax())
            at_worst = float(ref.flatten()[worst])
            raise AssertionError(
                f"output {i}: {int(bad.sum())} of {diff.numel()} entries differ; max |a - b| = "
                f"{float(diff.max()):.3g} at flat index {worst} (b = {at_worst:.3g}); "
                f"tolerance atol={tol_a:.3g}, rtol={tol_r:.3g} (pass rtol=/atol= to override)")


# ----------------------------------------------------------------------------- helpers

def _flat_tensors(out, label: str) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _flat_tensors(item, label)]
    raise TypeError(f"model {label} returned {type(out).__name__}; assert_equivalent compares a "
                    "tensor or (nested) tuples/lists of tensors")


def _check_depth(depth) -> int:
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise TypeError(f"depth must be an int >= 1, got {depth!r} ({type(depth).__name__})")
    if depth < 1:
        raise ValueError(f"depth must be >= 1 (1 keeps a single factor), got {depth}")
    return int(depth)


def _check_init(init, init_std) -> str:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init_std is not None:
        if isinstance(init_std, bool) or not isinstance(init_std, numbers.Real):
            raise TypeError(f"init_std must be a float or None, got {init_std!r}")
        if init == "balanced":
            raise ValueError("init='balanced' factors the current weight and takes no init_std; "
                             "pass init_std=None, or init='normal' for fresh N(0, init_std^2) "
                             "factors")
        if init_std < 0 or (init_std == 0 and init != "identity"):
            raise ValueError(f"init_std must be > 0 for init={init!r} (>= 0 for 'identity'), "
                             f"got {init_std}; None keeps the layer's function")
    return init


def _selected_layers(module: nn.Module, include) -> list[tuple[str, nn.Linear]]:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    named = dict(module.named_modules())
    linear_names = [n for n, m in named.items() if isinstance(m, nn.Linear)]
    if include is None:
        names = linear_names
    else:
        names = [include] if isinstance(include, str) else list(include)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"include holds submodule names (str), got {name!r}")
            if name not in named:
                raise ValueError(f"include: no submodule named {name!r}; names are as in "
                                 f"named_modules(), nn.Linear ones here: {linear_names[:8]}")
            if not isinstance(named[name], nn.Linear):
                raise TypeError(f"include: {name!r} is a {type(named[name]).__name__}, not an "
                                f"nn.Linear; only dense layers can be overparameterized "
                                f"(nn.Linear here: {linear_names[:8]})")
    layers, seen = [], set()
    for name in names:
        layer = named[name]
        if id(layer) in seen:  # a name listed twice must not be factored twice
            continue
        seen.add(id(layer))
        if parametrize.is_parametrized(layer, "weight"):
            raise ValueError(f"layer {name!r} already has a parametrized weight; call collapse() "
                             "(or remove_parametrizations) first, or leave it out of include")
        if isinstance(layer.weight, nn.parameter.UninitializedParameter):
            raise TypeError(f"layer {name!r} is a lazy layer with no shape yet; run one forward "
                            "pass before overparameterizing it")
        layers.append((name, layer))
    return layers


def _factor_shapes(layer: nn.Linear, depth: int, width) -> tuple[tuple[int, int], ...]:
    d, k = layer.in_features, layer.out_features
    if isinstance(width, str):
        if width != "min":
            raise ValueError(f"width must be 'min', an int or a tuple of {depth - 1} ints, "
                             f"got {width!r}")
        hidden = (min(d, k),) * (depth - 1)
    elif isinstance(width, numbers.Integral) and not isinstance(width, bool):
        hidden = (int(width),) * (depth - 1)
    elif isinstance(width, (tuple, list)):
        if len(width) != depth - 1:
            raise ValueError(f"width tuple must have depth - 1 = {depth - 1} entries (one per "
                             f"hidden layer), got {len(width)}: {tuple(width)}")
        hidden = tuple(width)
    else:
        raise TypeError(f"width must be 'min', an int or a tuple of {depth - 1} ints, "
                        f"got {width!r} ({type(width).__name__})")
    for w in hidden:
        if isinstance(w, bool) or not isinstance(w, numbers.Integral):
            raise TypeError(f"width entries must be ints, got {w!r} in {width!r}")
        if w < 1:
            raise ValueError(f"widths must be >= 1, got {w} in {width!r}")
    sizes = (d, *(int(w) for w in hidden), k)
    return tuple((sizes[j + 1], sizes[j]) for j in range(depth))


def _rect_eye(rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(rows, cols, dtype=like.dtype, device=like.device)


def _draw(shape, std: float, kind: str, like: torch.Tensor, generator) -> torch.Tensor:
    # Draw on the generator's device (a CPU generator cannot feed a CUDA tensor), in float64 for
    # float64 layers and float32 otherwise, so a seed gives the same numbers for every dtype.
    device = generator.device if generator is not None else like.device
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    noise = torch.empty(shape, dtype=dtype, device=device)
    if kind == "truncated_normal":
        nn.init.trunc_normal_(noise, std=std, a=-2 * std, b=2 * std, generator=generator)
    else:
        noise.normal_(0.0, std, generator=generator)
    return noise.to(device=like.device, dtype=like.dtype)


def _carrier_factors(weight, shapes, noise_std, generator, others: str) -> list[torch.Tensor]:
    """The weight kept as one factor (W_1 if k <= d, else W_N, padded/cropped to its shape); the
    others are rectangular identities plus noise (others="identity") or fresh draws."""
    depth, (k, d) = len(shapes), weight.shape
    carrier = 0 if k <= d else depth - 1
    factors = []
    for j, (rows, cols) in enumerate(shapes):
        if j == carrier:
            w = weight.detach()
            factor = _rect_eye(rows, k, w) @ w if j == 0 else w @ _rect_eye(d, cols, w)
        elif others == "identity":
            factor = _rect_eye(rows, cols, weight)
            if noise_std:
                factor = factor + _draw((rows, cols), noise_std, "normal", weight, generator)
        else:
            factor = _draw((rows, cols), noise_std, others, weight, generator)
        factors.append(factor.clone())
    return factors


def _balanced_factors(weight, shapes, name: str) -> list[torch.Tensor]:
    """W = U S V^T  ->  W_1 = S^(1/N) V^T, W_j = S^(1/N), W_N = U S^(1/N), zero-padded to shape."""
    depth = len(shapes)
    if depth == 1:
        return [weight.detach().clone()]
    w64 = weight.detach().to(torch.float64)  # SVD in float64: float32 SVD loses ~1e-4 relative
    u, s, vh = torch.linalg.svd(w64, full_matrices=False)
    q = min([len(s)] + [rows for rows, _ in shapes[:-1]])
    if q < len(s) and float(s[q]) > 1e-12 * float(s[0]):
        warnings.warn(f"layer {name!r}: a hidden width of {q} < rank of its weight, so the "
                      f"product is only the best rank-{q} approximation of the weight "
                      f"(relative error {float(s[q:].norm() / s.norm()):.2g})", stacklevel=3)
    root = s[:q] ** (1.0 / depth)
    factors = []
    for j, (rows, cols) in enumerate(shapes):
        factor = torch.zeros(rows, cols, dtype=torch.float64, device=weight.device)
        if j == 0:
            factor[:q] = root[:, None] * vh[:q]
        elif j == depth - 1:
            factor[:, :q] = u[:, :q] * root
        else:
            factor[:q, :q] = torch.diag(root)
        factors.append(factor.to(weight.dtype))
    return factors


def _warn_if_truncated(layer, shapes, name: str) -> None:
    narrowest = min(rows for rows, _ in shapes[:-1]) if len(shapes) > 1 else None
    rank_cap = min(layer.in_features, layer.out_features)
    if narrowest is not None and narrowest < rank_cap:
        warnings.warn(f"layer {name!r}: hidden width {narrowest} < min(in, out) = {rank_cap}, so "
                      "init='identity' cannot reproduce the weight; the product is a cropped "
                      "version of it", stacklevel=3)
