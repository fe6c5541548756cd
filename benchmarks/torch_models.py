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
