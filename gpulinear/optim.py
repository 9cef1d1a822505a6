"""Optimizers as pure ``init``/``update`` pairs with per-configuration hyperparameters.

The style is optax's (an optimizer is two pure functions and a small NamedTuple state); the
formulas and defaults are torch.optim's (torch 2.x, single-tensor path), with COUPLED weight decay
``g = g + weight_decay * p`` applied first (for gd this is the paper's Eq 4).

Shapes: parameters are a list of layer arrays ``(B, a, b)`` (B configurations stacked on the
leading axis; a, b vary per layer). Hyperparameters are a dict of ``(B,)`` arrays, one value per
configuration, broadcast against the leading axis. The state holds lists of ``(B, a, b)`` arrays
and ``count``, the per-config step count ``t`` ``(B,)`` int64, incremented by ``update``.

The caller freezes configuration i (diverged, finished) by keeping its old params AND its old
state, e.g. ``xp.where(alive[:, None, None], new, old)`` on every array and
``xp.where(alive, new.count, old.count)`` on the count; each config then keeps its own ``t``.

Everything is elementwise within one configuration (no reduction crosses configurations), so
batching never changes the math. This module is the readable float64 reference ("NumPy twin",
as chainer's ``update_core_cpu``) that fused GPU kernels are tested against; it runs on NumPy or
CuPy arrays alike and never imports CuPy itself.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy

from .backend import array_namespace

__all__ = ["Optimizer", "OPTIMIZERS", "OPTIMIZER_NAMES", "HYPERPARAMETERS", "get_optimizer",
           "hyper_arrays", "SEMANTICS", "semantics",
           "GDState", "MomentumState", "AdagradState", "AdadeltaState", "AdamState", "RMSpropState"]

# Every hyperparameter name any optimizer reads (these are Config field names).  This order is also
# the column order of the per-config hyperparameter table of the CUDA update kernel
# (gpulinear.cuda.layout.pack), so appending is safe and reordering changes that layout.
HYPERPARAMETERS = ("lr", "weight_decay", "momentum", "beta1", "beta2", "eps", "rho", "alpha",
                   "lr_decay", "centered", "initial_accumulator", "eps_hat")


class Optimizer(NamedTuple):
    name: str
    defaults: dict  # hyperparameter -> torch.optim default, for every hyperparameter it reads
    init: Callable  # init(params) -> state
    update: Callable  # update(grads, state, params, hyper) -> (new_params, new_state); pure
    # names of the per-layer state lists, in the order of the state NamedTuple's fields (count,
    # the last field, aside); the CUDA update kernel's state slots follow this order
    state_fields: tuple


class GDState(NamedTuple):
    count: object  # (B,) int64 steps taken


class MomentumState(NamedTuple):
    buf: list  # [(B, a, b)] momentum buffers
    count: object  # (B,)


class AdagradState(NamedTuple):
    sum: list  # [(B, a, b)] running sum of g^2
    count: object  # (B,)


class AdadeltaState(NamedTuple):
    square_avg: list  # [(B, a, b)] running average of g^2
    acc_delta: list  # [(B, a, b)] running average of delta^2
    count: object  # (B,)


class AdamState(NamedTuple):
    exp_avg: list  # [(B, a, b)] m, first moment
    exp_avg_sq: list  # [(B, a, b)] v, second moment
    count: object  # (B,)


class RMSpropState(NamedTuple):
    square_avg: list  # [(B, a, b)]
    grad_avg: list  # [(B, a, b)] used by centered configs only
    buf: list  # [(B, a, b)] used by configs with momentum > 0 only
    count: object  # (B,)


def _zeros(params):
    return [array_namespace(p).zeros_like(p) for p in params]


def _count(params):
    p = params[0]
    return array_namespace(p).zeros(p.shape[0], dtype=numpy.int64)


def _h(hyper, name, p):
    """Hyperparameter ``name`` as (B, 1, 1) in p's dtype, to broadcast against (B, a, b)."""
    return array_namespace(p).asarray(hyper[name]).astype(p.dtype, copy=False)[:, None, None]


def _t(count, p):
    """The step number t of this update (1 on the first), (B, 1, 1) in p's dtype."""
    return (count + 1).astype(p.dtype)[:, None, None]


def _decayed(g, p, hyper):
    """Coupled weight decay: g + weight_decay * p (torch's ``grad.add(param, alpha=wd)``).
    A hyper dict without "weight_decay" means 0 for every config (the NumPy step drops it then:
    two passes over every layer less per step)."""
    if "weight_decay" not in hyper:
        return g
    return g + _h(hyper, "weight_decay", p) * p


# ---- gd, momentum, nesterov: torch.optim.SGD (dampening 0) --------------------------------------

def _gd_update(grads, state, params, hyper):
    """p <- p - lr * (g + wd p)."""
    new = [p - _h(hyper, "lr", p) * _decayed(g, p, hyper) for g, p in zip(grads, params)]
    return new, GDState(state.count + 1)


def _sgd_momentum(nesterov):
    def update(grads, state, params, hyper):
        new_p, new_buf = [], []
        for g, p, buf in zip(grads, params, state.buf):
            g = _decayed(g, p, hyper)
            mu = _h(hyper, "momentum", p)
            buf = mu * buf + g  # zero-initialised, so the first step gives buf = g as torch does
            step = g + mu * buf if nesterov else buf
            new_p.append(p - _h(hyper, "lr", p) * step)
            new_buf.append(buf)
        return new_p, MomentumState(new_buf, state.count + 1)
    update.__doc__ = ("buf <- mu buf + g;  p <- p - lr * " + ("(g + mu buf)" if nesterov else "buf")
                      + "  (g includes weight decay)")
    return update


def _momentum_init(params):
    return MomentumState(_zeros(params), _count(params))


# ---- adagrad -------------------------------------------------------------------------------------

def _adagrad_update(grads, state, params, hyper):
    """sum += g^2;  p <- p - lr / (1 + (t-1) lr_decay) * g / (sqrt(a0 + sum) + eps),
    a0 = initial_accumulator (torch's initial_accumulator_value; TF 1's is 0.1 with eps 0).
    The state holds the sum from zero and a0 is added in the formula, so every optimizer's state
    starts at zeros (the CUDA layout relies on that); the value equals torch's to rounding."""
    new_p, new_sum = [], []
    for g, p, s in zip(grads, params, state.sum):
        xp = array_namespace(p)
        g = _decayed(g, p, hyper)
        clr = _h(hyper, "lr", p) / (1 + (_t(state.count, p) - 1) * _h(hyper, "lr_decay", p))
        s = s + g * g
        denom = xp.sqrt(s + _h(hyper, "initial_accumulator", p)) + _h(hyper, "eps", p)
        new_p.append(p - clr * g / denom)
        new_sum.append(s)
    return new_p, AdagradState(new_sum, state.count + 1)


# ---- adadelta ------------------------------------------------------------------------------------

def _adadelta_update(grads, state, params, hyper):
    """sq <- rho sq + (1-rho) g^2;  delta = sqrt(acc+eps)/sqrt(sq+eps) g;
    acc <- rho acc + (1-rho) delta^2;  p <- p - lr delta."""
    new_p, new_sq, new_acc = [], [], []
    for g, p, sq, acc in zip(grads, params, state.square_avg, state.acc_delta):
        xp = array_namespace(p)
        g = _decayed(g, p, hyper)
        rho, eps = _h(hyper, "rho", p), _h(hyper, "eps", p)
        sq = rho * sq + (1 - rho) * (g * g)
        delta = xp.sqrt(acc + eps) / xp.sqrt(sq + eps) * g
        acc = rho * acc + (1 - rho) * (delta * delta)
        new_p.append(p - _h(hyper, "lr", p) * delta)
        new_sq.append(sq)
        new_acc.append(acc)
    return new_p, AdadeltaState(new_sq, new_acc, state.count + 1)


# ---- adam (amsgrad=False; AMSGrad is not supported) ----------------------------------------------

def _adam_update(grads, state, params, hyper):
    """m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
    p <- p - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)          (eps_hat = 0, torch), or
    p <- p - lr sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)          (eps_hat = 1, TF 1: eps is
    Kingma & Ba's "epsilon hat", added after the bias correction is folded into the lr)."""
    new_p, new_m, new_v = [], [], []
    for g, p, m, v in zip(grads, params, state.exp_avg, state.exp_avg_sq):
        xp = array_namespace(p)
        g = _decayed(g, p, hyper)
        b1, b2, t = _h(hyper, "beta1", p), _h(hyper, "beta2", p), _t(state.count, p)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (g * g)
        step_size = _h(hyper, "lr", p) / (1 - b1 ** t)
        # eps_hat: eps / sqrt(1-b2^t) in torch's form is TF 1's eps outside the correction
        eps = _h(hyper, "eps", p) / xp.where(_h(hyper, "eps_hat", p) != 0,
                                             xp.sqrt(1 - b2 ** t), 1)
        denom = xp.sqrt(v) / xp.sqrt(1 - b2 ** t) + eps
        new_p.append(p - step_size * m / denom)
        new_m.append(m)
        new_v.append(v)
    return new_p, AdamState(new_m, new_v, state.count + 1)


# ---- rmsprop -------------------------------------------------------------------------------------

def _rmsprop_update(grads, state, params, hyper):
    """sq <- alpha sq + (1-alpha) g^2;  avg = sqrt(sq) + eps, or centered
    (ga <- alpha ga + (1-alpha) g) sqrt(sq - ga^2) + eps;
    momentum > 0: buf <- mu buf + g/avg, p <- p - lr buf;  else p <- p - lr g/avg."""
    new_p, new_sq, new_ga, new_buf = [], [], [], []
    for g, p, sq, ga, buf in zip(grads, params, state.square_avg, state.grad_avg, state.buf):
        xp = array_namespace(p)
        g = _decayed(g, p, hyper)
        alpha, mu, lr = _h(hyper, "alpha", p), _h(hyper, "momentum", p), _h(hyper, "lr", p)
        sq = alpha * sq + (1 - alpha) * (g * g)
        ga = alpha * ga + (1 - alpha) * g
        var = xp.where(_h(hyper, "centered", p) != 0, sq - ga * ga, sq)
        avg = xp.sqrt(var) + _h(hyper, "eps", p)
        buf = xp.where(mu > 0, mu * buf + g / avg, buf)
        new_p.append(p - lr * xp.where(mu > 0, buf, g / avg))
        new_sq.append(sq)
        new_ga.append(ga)
        new_buf.append(buf)
    return new_p, RMSpropState(new_sq, new_ga, new_buf, state.count + 1)


_SGD = {"lr": 1e-3, "weight_decay": 0.0}
OPTIMIZERS: dict[str, Optimizer] = {o.name: o for o in (
    Optimizer("gd", dict(_SGD), lambda params: GDState(_count(params)), _gd_update, ()),
    # torch's SGD momentum default is 0 (= plain gd); ours is 0.9 so "momentum" means momentum.
    Optimizer("momentum", {**_SGD, "momentum": 0.9}, _momentum_init, _sgd_momentum(False),
              ("buf",)),
    Optimizer("nesterov", {**_SGD, "momentum": 0.9}, _momentum_init, _sgd_momentum(True),
              ("buf",)),
    Optimizer("adagrad", {"lr": 1e-2, "weight_decay": 0.0, "lr_decay": 0.0, "eps": 1e-10,
                          "initial_accumulator": 0.0},
              lambda params: AdagradState(_zeros(params), _count(params)), _adagrad_update,
              ("sum",)),
    Optimizer("adadelta", {"lr": 1.0, "weight_decay": 0.0, "rho": 0.9, "eps": 1e-6},
              lambda params: AdadeltaState(_zeros(params), _zeros(params), _count(params)),
              _adadelta_update, ("square_avg", "acc_delta")),
    Optimizer("adam", {"lr": 1e-3, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                       "eps_hat": 0.0},
              lambda params: AdamState(_zeros(params), _zeros(params), _count(params)),
              _adam_update, ("exp_avg", "exp_avg_sq")),
    Optimizer("rmsprop", {"lr": 1e-2, "weight_decay": 0.0, "alpha": 0.99, "eps": 1e-8,
                          "momentum": 0.0, "centered": 0.0},
              lambda params: RMSpropState(_zeros(params), _zeros(params), _zeros(params),
                                          _count(params)), _rmsprop_update,
              ("square_avg", "grad_avg", "buf")),
)}

# A config's optimizer code in the CUDA update kernel is its index here.
OPTIMIZER_NAMES = tuple(OPTIMIZERS)


def get_optimizer(name: str) -> Optimizer:
    """The Optimizer called ``name``; ValueError listing the known names otherwise."""
    try:
        return OPTIMIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"optimizer: unknown {name!r}; choose one of {tuple(OPTIMIZERS)}") from None


# name -> (ok(value), what the value must be)
_CHECKS = {
    "lr": (lambda x: x > 0, "> 0"),
    "weight_decay": (lambda x: x >= 0, ">= 0"),
    "momentum": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "beta1": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "beta2": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "eps": (lambda x: x > 0, "> 0"),
    "rho": (lambda x: 0 <= x <= 1, "in [0, 1]"),
    "alpha": (lambda x: 0 <= x <= 1, "in [0, 1]"),
    "lr_decay": (lambda x: x >= 0, ">= 0"),
    "centered": (lambda x: x in (0, 1), "0/1 (False/True)"),
    "initial_accumulator": (lambda x: x >= 0, ">= 0"),
    "eps_hat": (lambda x: x in (0, 1), "0/1 (False/True)"),
}
# AdaGrad may drop eps when its accumulator starts above zero (TF 1: 0.1 and no eps); the
# denominator is then sqrt(a0 + sum g^2) > 0.  Everywhere else eps > 0 keeps it off zero.
_EPS_MAY_BE_ZERO = {"adagrad": "initial_accumulator"}

# Framework semantics as data (the paper ran TensorFlow 1; our defaults are torch.optim's).  Each
# entry: optimizer -> the hyperparameters that make our update equal that framework's update with
# its defaults (lr aside: the experiments search it).  TF 1 (tf.compat.v1.train.*Optimizer):
# AdagradOptimizer(initial_accumulator_value=0.1), no eps; AdadeltaOptimizer(rho=0.95,
# epsilon=1e-8); AdamOptimizer(epsilon=1e-8) with epsilon added after the bias correction is
# folded into the lr; GradientDescent / Momentum(use_nesterov) are torch's SGD formulas.
SEMANTICS = {
    "torch": {},
    "tf1": {"adagrad": {"initial_accumulator": 0.1, "eps": 0.0},
            "adadelta": {"rho": 0.95, "eps": 1e-8},
            "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "eps_hat": 1.0}},
}


def semantics(framework: str, optimizer: str) -> dict:
    """The Config hyperparameters that give ``optimizer`` the update and defaults of
    ``framework`` ("torch" or "tf1"), e.g. ``gl.Config(optimizer="adagrad",
    **semantics("tf1", "adagrad"))``.  Empty where the framework's update is already ours."""
    get_optimizer(optimizer)
    if framework not in SEMANTICS:
        raise ValueError(f"framework: unknown {framework!r}; choose one of {tuple(SEMANTICS)}")
    return dict(SEMANTICS[framework].get(optimizer, {}))


def _which(i, per_config) -> str:
    return f" (entry {i} of {len(per_config)})" if len(per_config) > 1 else ""


def hyper_arrays(optimizer: str, per_config: list, dtype, xp=numpy) -> dict:
    """Per-config hyperparameters as ``{name: (B,) array of dtype}`` on ``xp``, for every name in
    ``get_optimizer(optimizer).defaults``. Missing or None values take the torch.optim defaults.
    Raises ValueError for an invalid value (checked after the cast to ``dtype``) or for a
    hyperparameter this optimizer does not use."""
    opt = get_optimizer(optimizer)
    dtype = numpy.dtype(dtype)
    for i, cfg in enumerate(per_config):
        for name, value in cfg.items():
            if value is not None and name not in opt.defaults:
                raise ValueError(
                    f"{name}: optimizer {optimizer!r} does not use {name!r}{_which(i, per_config)}; it reads "
                    f"{tuple(opt.defaults)}. Remove it or set it to None")
    out = {}
    for name, default in opt.defaults.items():
        values = [default if cfg.get(name) is None else cfg[name] for cfg in per_config]
        try:
            arr = numpy.asarray(values, dtype=numpy.float64).astype(dtype)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: every value must be a real number or None; got {values!r}") \
                from None
        ok, rule = _CHECKS[name]
        if name == "eps" and optimizer in _EPS_MAY_BE_ZERO:
            ok, rule = (lambda x: x >= 0), ">= 0"
        for i, x in enumerate(arr.tolist()):
            if not (math.isfinite(x) and ok(x)):
                raise ValueError(
                    f"{name}: must be finite and {rule} in {dtype} for optimizer {optimizer!r}; "
                    f"got {values[i]!r}{_which(i, per_config)}. Set {name} {rule}, or None for the default "
                    f"{default!r}")
        out[name] = numpy.asarray(arr)
    if optimizer in _EPS_MAY_BE_ZERO:
        partner = _EPS_MAY_BE_ZERO[optimizer]
        for i, (e, a) in enumerate(zip(out["eps"].tolist(), out[partner].tolist())):
            if e == 0 and a == 0:
                raise ValueError(
                    f"eps: {optimizer} with eps = 0 needs {partner} > 0 (else it divides 0 by 0 "
                    f"where a gradient is 0){_which(i, per_config)}; set eps > 0 or {partner} > 0")
    return {name: xp.asarray(arr) for name, arr in out.items()}
