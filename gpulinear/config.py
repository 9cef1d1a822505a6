"""One training configuration (`Config`) and cartesian grids of them (`grid`).

A Config says everything that differs between the runs of a sweep: the model (depth, hidden
widths, init, parameterization), the optimizer with its hyperparameters and the loss.  What all
configs of a call share (the data, the number of steps) goes to `train()`.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from dataclasses import dataclass, field

from .optim import HYPERPARAMETERS

INITS = ("normal", "identity", "balanced")
PARAMETERIZATIONS = ("deep", "e2e")
# Optimizer hyperparameters a Config may carry (gpulinear.optim's schema, less lr and weight
# decay, which every optimizer reads); None means "the optimizer's torch.optim default".
HYPER_FIELDS = tuple(h for h in HYPERPARAMETERS if h not in ("lr", "weight_decay"))

# The paper's learning-rate grid (Appendix C): {1e-5, 5e-5, 1e-4, ..., 1e-1, 5e-1}.
LR_GRID = tuple(float(f"{m}e{e}") for e in range(-5, 0) for m in (1, 5))


@dataclass(frozen=True)
class Config:
    """One deep linear network and how it is trained.

    depth: N >= 1 layers; width: hidden widths n_1..n_{N-1} (an int for all, or a tuple of N-1);
    init: "normal" (N(0, init_scale^2) entries, the paper's near-zero init with 0.01),
    "identity" (1 on the diagonal of every layer, non-square too, plus that noise) or "balanced"
    (Eq 7 holds exactly at t=0); parameterization: "deep" trains the factors, "e2e" trains W_e by
    the end-to-end rule (Eq 10, gd only) from the product of the same initial factors;
    loss: None uses the loss given to train(); optimizer hyperparameters left None take
    torch.optim's defaults (see gpulinear.optim).
    """

    depth: int = 1
    width: int | tuple[int, ...] = 1
    lr: float = 1e-3
    optimizer: str = "gd"
    weight_decay: float = 0.0
    init: str = "normal"
    init_scale: float = 0.01
    parameterization: str = "deep"
    seed: int = 0
    loss: str | None = None
    momentum: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    eps: float | None = None
    rho: float | None = None
    alpha: float | None = None
    lr_decay: float | None = None
    centered: bool | None = None
    initial_accumulator: float | None = None
    eps_hat: bool | None = None
    label: str | None = field(default=None, compare=False)

    def __post_init__(self):
        for name in ("weight_decay", "init_scale", *HYPER_FIELDS):
            value = getattr(self, name)
            # float() would read True as 1.0 and parse "0.9": refused, naming the field
            if name != "centered" and isinstance(value, (bool, str, bytes)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}"
                                + (" (write it without quotes)" if isinstance(value, str) else ""))
        object.__setattr__(self, "depth", check_int("depth", self.depth, 1))
        if isinstance(self.width, (list, tuple)):
            object.__setattr__(self, "width", tuple(check_int("width", w, 1) for w in self.width))
            if len(self.width) != self.depth - 1:
                raise ValueError(
                    f"width: a tuple of hidden widths needs depth-1 = {self.depth - 1} entries, "
                    f"got {len(self.width)} ({self.width}); give one int to use it for every layer")
        else:
            object.__setattr__(self, "width", check_int("width", self.width, 1))
        _check_positive("lr", self.lr)
        if not (isinstance(self.weight_decay, numbers.Real) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if self.init not in INITS:
            raise ValueError(f"init: unknown {self.init!r}; choose one of {INITS}")
        if not (isinstance(self.init_scale, numbers.Real) and self.init_scale >= 0
                and math.isfinite(self.init_scale)):
            raise ValueError(f"init_scale must be a finite number >= 0, got {self.init_scale!r}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization: unknown {self.parameterization!r}; "
                             f"choose one of {PARAMETERIZATIONS}")
        from .optim import OPTIMIZERS  # the optimizer table is the one source of valid names
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: unknown {self.optimizer!r}; choose one of {tuple(OPTIMIZERS)}")
        from .optim import hyper_arrays   # fail at grid() time, naming the field, not in train()
        hyper_arrays(self.optimizer, [self.hyper()], "float64")
        if self.parameterization == "e2e" and self.optimizer != "gd":
            raise ValueError(
                f"parameterization='e2e' is defined for optimizer='gd' only (Eq 10 is gradient "
                f"descent on the factors); got optimizer={self.optimizer!r}. Use "
                f"parameterization='deep' to train the factors with {self.optimizer!r}")
        if self.loss is not None:
            from .losses import get_loss
            get_loss(self.loss)  # raises naming `loss` for an unknown one
        object.__setattr__(self, "seed", check_int("seed", self.seed, 0))
        for name in ("lr", "weight_decay", "init_scale"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def widths(self) -> tuple[int, ...]:
        """Hidden widths n_1..n_{N-1} as a tuple (empty for depth 1)."""
        if isinstance(self.width, tuple):
            return self.width
        return (self.width,) * (self.depth - 1)

    def layer_shapes(self, d: int, k: int) -> list[tuple[int, int]]:
        """Shapes (n_j, n_{j-1}) of W_1..W_N for d inputs and k outputs."""
        dims = (d, *self.widths, k)
        return [(dims[j + 1], dims[j]) for j in range(self.depth)]

    def hyper(self) -> dict:
        """The optimizer hyperparameters this config sets (lr, weight_decay and the non-None rest)."""
        out = {"lr": self.lr, "weight_decay": self.weight_decay}
        for name in HYPER_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = float(value)
        return out

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if isinstance(data["width"], tuple):
            data["width"] = list(data["width"])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        return cls(**data)

    def describe(self) -> str:
        """A short legend label: depth, widths, lr, optimizer and what differs from the defaults."""
        if self.label:
            return self.label
        parts = [f"depth {self.depth}"]
        if self.depth > 1 and self.widths != (1,) * (self.depth - 1):
            parts.append(f"width {self.width}")
        if self.parameterization == "e2e":
            parts.append("e2e rule")
        if self.optimizer != "gd":
            parts.append(self.optimizer)
        if self.init != "normal":
            parts.append(f"{self.init} init")
        parts.append(f"lr {self.lr:g}")
        if self.loss:
            parts.append(self.loss)
        return ", ".join(parts)


def grid(**fields) -> list[Config]:
    """Cartesian product of Config fields: a field given as a list is swept.

    Order is stable: fields vary in the order given (the last one fastest), so
    ``grid(depth=[1, 2], lr=[0.1, 0.2])`` is (1, .1), (1, .2), (2, .1), (2, .2).  A tuple sweeps
    like a list (``lr=gl.LR_GRID``), except for `width`, where a tuple is one set of hidden
    widths (sweep widths with a list: ``width=[1, (4, 2)]``).
    """
    unknown = set(fields) - {f.name for f in dataclasses.fields(Config)}
    if unknown:
        raise ValueError(f"grid: unknown Config field(s) {sorted(unknown)}; "
                         f"known: {[f.name for f in dataclasses.fields(Config)]}")
    names = list(fields)
    # a tuple sweeps too (gl.LR_GRID is one), except `width`, where a tuple is one set of widths
    axes = [list(v) if isinstance(v, list) or (isinstance(v, tuple) and name != "width")
            else [v] for name, v in fields.items()]
    for name, axis in zip(names, axes):
        if len(axis) == 0:
            raise ValueError(f"grid: field {name!r} is an empty list; give at least one value")
    return [Config(**dict(zip(names, combo))) for combo in itertools.product(*axes)]


def _sweep_hint(name, value) -> str:
    """For a sequence or array where one value belongs: how to sweep it instead."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return ""
    return (f"; to sweep {name}, give gl.grid a list: {name}=[...]"
            + (" (an array: .tolist())" if hasattr(value, "tolist") else ""))


def check_int(name, value, minimum) -> int:
    """`value` as a plain int >= minimum (numpy integers accepted), else a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}"
                        + _sweep_hint(name, value))
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}"
                         + _sweep_hint(name, value))


def check_real(name, value) -> float:
    """`value` as a finite float (numpy floats and ints accepted); a bool or a string, which
    float() would take as 1.0 or parse, is refused naming `name`."""
    if isinstance(value, (bool, str, bytes)) or type(value).__name__ == "bool_" \
            or not isinstance(value, numbers.Real):
        hint = " (write the number without quotes)" if isinstance(value, str) else ""
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}{hint}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)
