"""The JAX peer of the GPU benchmark: jit(vmap) of one config's deep-linear gd step in lax.scan.

    run = make_peer(X, y, lrs, depth, width, p=4.0, dtype="float32", chunk=100)
    W = run(steps)            # steps: a multiple of `chunk`; returns the final layers, synced

lrs (B,); layers W_j (B, n_j, n_{j-1}) with n_0 = d, hidden widths `width`, n_N = k = 1;
started from `weights` when given (tests: gl.init_weights, to compare with gl.train), else
N(0, init_scale^2) entries drawn on the device (gpulinear's "normal" init scale; the values
differ, only the cost is compared; drawing 600 M numbers on the host would take seconds).
One config's step is plain gradient descent on L(W) = mean_i (1/p)|(W_N..W_1 x_i) - y_i|^p
(gpulinear's lp loss, k = 1), its gradient from jax.grad; vmap batches it over configs (X is
shared, so the passes over X become (m, d) x (d, B) GEMMs), lax.scan runs `chunk` steps, and a
fori_loop with a traced trip count runs steps // chunk chunks, so one compile serves every step
count (a scan of length `steps` would recompile per count, and the timing rule grows it).
float32 matmuls run at "highest" precision (plain FP32, as gpulinear pins); JAX's default on
recent GPUs is TF32, which would make the comparison meaningless.  float64 turns on
jax_enable_x64 (process-wide; every array here carries an explicit dtype, and the result's
dtype is checked, so float32 runs stay float32).
"""
from __future__ import annotations

import os

import numpy as np

# Share the GPU with CuPy: no 75 % preallocation; the cap leaves room for gpulinear's pool.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.35")


def jax_status(need_gpu=True):
    """(ok, why): JAX importable and, with need_gpu, its default backend a GPU."""
    try:
        import jax
    except Exception as exc:  # not installed, or a broken jaxlib
        return False, f"jax not importable ({type(exc).__name__}: {exc}); pip install 'jax[cuda12]'"
    backend = jax.default_backend()
    if need_gpu and backend != "gpu":
        return False, f"jax {jax.__version__} runs on {backend!r}, not a GPU (jax[cuda12] missing?)"
    return True, f"jax {jax.__version__} on {backend}"


def _power(r, p):
    """|r|^p with multiplies for p = 2 and 4 (what gpulinear's kernels do), pow otherwise."""
    import jax.numpy as jnp
    if p == 2:
        return jnp.square(r)
    if p == 4:
        return jnp.square(jnp.square(r))
    return jnp.abs(r) ** p


def make_peer(X, y, lrs, depth, width, p=4.0, dtype="float32", chunk=100, weights=None,
              init_scale=0.01, seed=0):
    """A function steps -> final layers (tuple of (B, n_j, n_{j-1}) jax arrays), see the module
    docstring.  Every call starts from `weights` (as each gl.train call starts from its init)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    jax.config.update("jax_default_matmul_precision", "highest")
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    Xj = jnp.asarray(np.asarray(X), dtype=dtype)                  # (m, d)
    yj = jnp.asarray(np.asarray(y).reshape(-1), dtype=dtype)      # (m,)   k = 1
    lr = jnp.asarray(lrs, dtype=dtype)                            # (B,)
    m, d = Xj.shape
    dims = (d,) + (width,) * (depth - 1) + (1,)
    if weights is None:
        keys = jax.random.split(jax.random.PRNGKey(seed), depth)
        weights = [init_scale * jax.random.normal(keys[j], (len(lrs), dims[j + 1], dims[j]),
                                                  dtype=dtype) for j in range(depth)]
    ws0 = tuple(jnp.asarray(w, dtype=dtype) for w in weights)     # (B, n_j, n_{j-1}) each
    if [w.shape for w in ws0] != [(len(lrs), dims[j + 1], dims[j]) for j in range(depth)]:
        raise ValueError(f"weights: shapes {[w.shape for w in ws0]} do not match depth {depth}, "
                         f"width {width}, d {d}, {len(lrs)} configs")

    def loss(ws, Xj, yj):                           # one config: ws[j] (n_j, n_{j-1})
        # the chain from the output side, (W_N W_{N-1}) ... W_1: k-row products, so jax.grad's
        # backward is O(k * params) too (the cheap order; input side costs O(d * params))
        We = ws[-1]
        for W in ws[-2::-1]:
            We = We @ W                             # (1, n_{j-1}) .. (1, d)
        r = Xj @ We[0] - yj                         # (m,)
        return jnp.sum(_power(r, p)) / (p * m)

    def step(ws, lr1, Xj, yj):
        g = jax.grad(loss)(ws, Xj, yj)
        return tuple(w - lr1 * gw for w, gw in zip(ws, g))

    vstep = jax.vmap(step, in_axes=(0, 0, None, None))       # X, y shared by every config

    @jax.jit                    # data passed as arguments, not baked into the program as constants
    def run(ws, lr, Xj, yj, n_chunks):
        def one_chunk(_, carry):
            out, _ = lax.scan(lambda c, _: (vstep(c, lr, Xj, yj), None), carry, None,
                              length=chunk)
            return out
        return lax.fori_loop(0, n_chunks, one_chunk, ws)

    def call(steps):
        if steps % chunk:
            raise ValueError(f"steps must be a multiple of chunk={chunk}, got {steps}")
        out = run(ws0, lr, Xj, yj, jnp.int32(steps // chunk))
        jax.block_until_ready(out)
        if out[0].dtype != np.dtype(dtype):       # x64 leaking into a float32 run: unfair peer
            raise TypeError(f"JAX peer ran in {out[0].dtype}, asked {dtype}")
        return out

    call.quantum = chunk
    return call
