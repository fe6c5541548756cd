"""PyTorch twins of jaxland MLPs (baselines only; torch is in the ``bench`` extra)."""

from __future__ import annotations

import numpy as np


def torch_mlp(model, w):
    """An ``nn.Sequential`` with the same architecture and the flat JAX weights ``w``.

    JAX kernels are (in, out); torch ``Linear.weight`` is (out, in).
    """
    import jax.numpy as jnp
    import torch
    from torch import nn

    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus, "silu": nn.SiLU, "identity": nn.Identity}
    mods = []
    layers = model.layers(jnp.asarray(w))
    for i, layer in enumerate(layers):
        lin = nn.Linear(*layer.kernel.shape, bias=layer.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.asarray(layer.kernel).T.copy()))
            if layer.bias is not None:
                lin.bias.copy_(torch.from_numpy(np.asarray(layer.bias).copy()))
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append(acts[model.activation]())
    return nn.Sequential(*mods)


def flat_to_torch_order(model, v) -> list[np.ndarray]:
    """A flat JAX-ordered vector as the list of per-parameter arrays in torch layout."""
    out = []
    for layer in model.layers(v):
        out.append(np.asarray(layer.kernel, np.float32).T.copy())
        if layer.bias is not None:
            out.append(np.asarray(layer.bias, np.float32).copy())
    return out


def torch_to_flat(model, tensors) -> np.ndarray:
    """Inverse of :func:`flat_to_torch_order` (``model.layers`` is a permutation, so its transpose inverts it)."""
    import jax
    import jax.numpy as jnp

    arrs = iter([t.detach().numpy() for t in tensors])
    parts = []
    for _ in range(len(model.sizes) - 1):
        kernel = jnp.asarray(next(arrs).T)
        parts.append((kernel, jnp.asarray(next(arrs)) if model.use_bias else None))
    views = lambda w: [(l.kernel, l.bias) for l in model.layers(w)]
    (flat,) = jax.linear_transpose(views, jnp.zeros(model.num_params, jnp.float32))(parts)
    return np.asarray(flat)
