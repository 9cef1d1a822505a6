"""gpulinear: train whole grids of deep linear networks at once (Arora, Cohen, Hazan, ICML 2018).

    import gpulinear as gl
    X, y = gl.datasets.ethanol()
    cfgs = gl.grid(depth=[1, 2, 3], lr=gl.LR_GRID, seed=0)
    res = gl.train(X, y, cfgs, loss="l4", steps=20_000, log_every=100)

Importing the package never imports CuPy, Numba or torch.
"""
from . import analysis, datasets
from .advice import ScienceWarning
from .config import LR_GRID, Config, grid
from .e2e import end_to_end_update, precondition, precondition_k1, preconditioner
from .engine import train
from .inits import init_weights
from .losses import Lp, SoftmaxCrossEntropy, get_loss
from .optim import OPTIMIZERS
from .optimum import optimal_loss
from .result import Result
from .targets import rel

__version__ = "0.1.0"

__all__ = [
    "Config", "grid", "LR_GRID", "train", "Result", "init_weights", "end_to_end_update",
    "precondition", "precondition_k1", "preconditioner", "optimal_loss", "Lp",
    "SoftmaxCrossEntropy", "get_loss", "OPTIMIZERS", "datasets", "ScienceWarning", "rel",
    "__version__",
]
