"""The chain product W_e = W_N ... W_1 and the layer gradients, batched over configs.

Layers are a list [W_1..W_N], W_j of shape (B, n_j, n_{j-1}); G = dL/dW_e is (B, k, d).
Prefix products P_j = W_j .. W_1 (B, n_j, d) serve both the forward product (P_N = W_e) and the
layer gradients, dL/dW_j = (W_N..W_{j+1})^T G P_{j-1}^T (the chain rule of Eq 3).
"""
from __future__ import annotations

from .backend import array_namespace


def prefix_products(layers):
    """[P_1..P_N], P_j = W_j .. W_1 of shape (B, n_j, d); P_N is the end-to-end matrix W_e."""
    xp = array_namespace(*layers)
    prefixes = [layers[0]]
    for W in layers[1:]:
        prefixes.append(xp.matmul(W, prefixes[-1]))
    return prefixes


def chain_product(layers):
    """W_e = W_N .. W_1 (B, k, d)."""
    return prefix_products(layers)[-1]


def layer_gradients(layers, G, prefixes=None):
    """[dL/dW_1..dL/dW_N] for dL/dW_e = G (B, k, d).

    Walks down from the top: A_N = G, A_{j-1} = W_j^T A_j (B, n_{j-1}, d), and
    dL/dW_j = A_j P_{j-1}^T with P_0 = I, so each step costs O(n_j n_{j-1} d).
    """
    xp = array_namespace(G, *layers)
    if prefixes is None:
        prefixes = prefix_products(layers)
    grads = [None] * len(layers)
    A = G
    for j in range(len(layers) - 1, -1, -1):                  # 0-based: layer j+1 of the paper
        grads[j] = A if j == 0 else xp.matmul(A, xp.swapaxes(prefixes[j - 1], -1, -2))
        if j > 0:
            A = xp.matmul(xp.swapaxes(layers[j], -1, -2), A)
    return grads
