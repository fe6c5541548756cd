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


# --------------------------------------------------------------------------- twins of jaxland.models.architectures
#
# A twin's parameter names mirror the NNX state paths ('blocks.0.attn.query.weight'
# for ('blocks', 0, 'attn', 'query', 'kernel')), so one rule maps every leaf:
# conv kernels (kh, kw, in, out) -> (out, in, kh, kw); dense kernels (in, out) ->
# (out, in); attention kernels (in, heads, head_dim) / (heads, head_dim, out) ->
# 2-D (out, in); per-head biases (heads, head_dim) -> (heads * head_dim,); norm
# 'scale' -> 'weight'. Twins take NHWC tensors and permute inside, so both
# networks eat the same arrays.


def _torch_name(path) -> str:
    *mods, leaf = (str(k) for k in path)
    return ".".join(mods + [{"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}.get(leaf, leaf)])


def _to_torch_layout(path, a: np.ndarray) -> np.ndarray:
    leaf, parent = path[-1], path[-2] if len(path) > 1 else None
    if leaf == "kernel" and a.ndim == 4:
        return a.transpose(3, 2, 0, 1)
    if leaf == "kernel" and a.ndim == 3:  # nnx.MultiHeadAttention: out is (heads, hd, out), q/k/v (in, heads, hd)
        return (a.reshape(-1, a.shape[-1]) if parent == "out" else a.reshape(a.shape[0], -1)).T
    if leaf == "kernel" and a.ndim == 2:
        return a.T
    if leaf == "bias" and a.ndim == 2:
        return a.reshape(-1)
    return a


def _from_torch_layout(path, t: np.ndarray, shape) -> np.ndarray:
    if path[-1] == "kernel" and len(shape) == 4:
        return t.transpose(2, 3, 1, 0)
    if path[-1] == "kernel" and len(shape) in (2, 3):
        return t.T.reshape(shape)
    return t.reshape(shape)


def _param_state(module, w=None):
    """The module's ``nnx.Param`` state, or ``w`` (a flat vector in NNX order) unraveled into it."""
    from flax import nnx
    from jax.flatten_util import ravel_pytree
    import jax.numpy as jnp

    state = nnx.state(module, nnx.Param)
    if w is None:
        return state
    flat, unravel = ravel_pytree(state)
    if np.shape(w) != flat.shape:
        raise ValueError(f"w must be a flat vector of the module's {flat.size} parameters, got shape {np.shape(w)}")
    return unravel(jnp.asarray(w, flat.dtype))


def nnx_flat_to_torch(module, w) -> dict[str, np.ndarray]:
    """The flat NNX-ordered vector ``w`` as ``{twin parameter name: array in torch layout}``.

    ``w`` is ``ravel_pytree(nnx.state(module, nnx.Param))[0]`` or any vector of that
    length (a direction, an HVP); use ``[d[n] for n, _ in twin.named_parameters()]``
    for the twin's order.
    """
    from flax import nnx

    return {
        _torch_name(path): np.array(_to_torch_layout(path, np.asarray(v[...], np.float32)), order="C")  # a writable copy
        for path, v in nnx.to_flat_state(_param_state(module, w))
    }


def torch_to_nnx_flat(module, tensors) -> np.ndarray:
    """Inverse of :func:`nnx_flat_to_torch`: ``{name: tensor}`` or ``twin.named_parameters()`` -> flat NNX vector."""
    from flax import nnx
    from jax.flatten_util import ravel_pytree

    named = {k: (t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)) for k, t in dict(tensors).items()}
    flat_state = nnx.to_flat_state(_param_state(module))
    leaves = []
    for path, v in flat_state:
        leaves.append((path, v.replace(value=_from_torch_layout(path, named[_torch_name(path)], v.shape))))
    return np.asarray(ravel_pytree(nnx.from_flat_state(leaves))[0])


def torch_twin(module, w=None):
    """A torch ``nn.Module`` (eval mode) computing the same function as a LeNet5, ResNet or ViT NNX module.

    Weights are the module's own, or the flat NNX-ordered vector ``w`` when given;
    ResNet BatchNorm statistics and epsilons, LayerNorm epsilons and flax's tanh
    gelu are carried over. Input: NHWC float32 tensors, as for the NNX module.
    """
    import torch
    from flax import nnx

    from jaxland.models.architectures import LeNet5, ResNet, ViT

    classes = _twin_classes()
    kind = {LeNet5: "LeNet5", ResNet: "ResNet", ViT: "ViT"}.get(type(module))
    if kind is None:
        raise TypeError(f"no torch twin for {type(module).__name__}; supported: LeNet5, ResNet, ViT (MLPs: torch_mlp)")
    twin = getattr(classes, kind)(module)
    values = nnx_flat_to_torch(module, w)
    values.update({_torch_name(p): np.array(v[...], np.float32) for p, v in nnx.to_flat_state(nnx.state(module, nnx.BatchStat))})
    targets = dict(twin.named_parameters()) | {k: b for k, b in twin.named_buffers() if not k.endswith("num_batches_tracked")}
    if set(targets) != set(values):
        raise RuntimeError(f"twin and module disagree on tensors: {sorted(set(targets) ^ set(values))}")
    with torch.no_grad():
        for name, t in targets.items():
            t.copy_(torch.from_numpy(values[name]))
    return twin.eval()


def _twin_classes():
    """The torch classes, defined on first use (torch is optional)."""
    global _TWIN_CLASSES
    if _TWIN_CLASSES is not None:
        return _TWIN_CLASSES
    import types

    import torch
    import torch.nn.functional as F
    from torch import nn

    class LeNet5(nn.Module):
        def __init__(self, m):
            super().__init__()
            c = m.input_shape[2]
            self.conv1 = nn.Conv2d(c, 6, 5, padding=2 if m.conv1_padding == "SAME" else 0)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(m.fc1.in_features, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, m.num_classes)

        def forward(self, x):
            x = x.permute(0, 3, 1, 2)
            x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
            x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
            x = x.permute(0, 2, 3, 1).flatten(1)  # flax flattens in (h, w, c) order
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    def bn(nnx_bn):
        return nn.BatchNorm2d(nnx_bn.num_features, eps=nnx_bn.epsilon)

    class BasicBlock(nn.Module):
        def __init__(self, b):
            super().__init__()
            cin, cout = b.conv1.in_features, b.conv1.out_features
            stride = b.conv1.strides if isinstance(b.conv1.strides, int) else b.conv1.strides[0]
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = bn(b.bn1)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = bn(b.bn2)
            if b.proj_conv is not None:
                self.proj_conv = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                self.proj_bn = bn(b.proj_bn)
            else:
                self.proj_conv = self.proj_bn = None

        def forward(self, x):
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            short = x if self.proj_conv is None else self.proj_bn(self.proj_conv(x))
            return F.relu(out + short)

    class ResNet(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.stem_conv = nn.Conv2d(m.input_shape[2], m.width, 3, padding=1, bias=False)
            self.stem_bn = bn(m.stem_bn)
            self.blocks = nn.ModuleList([BasicBlock(b) for b in m.blocks])
            self.head = nn.Linear(m.head.in_features, m.num_classes)

        def forward(self, x):
            x = F.relu(self.stem_bn(self.stem_conv(x.permute(0, 3, 1, 2))))
            for block in self.blocks:
                x = block(x)
            return self.head(x.mean(dim=(2, 3)))

    class Attention(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.heads = heads
            self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

        def forward(self, x):
            n, t, d = x.shape
            split = lambda z: z.view(n, t, self.heads, d // self.heads).transpose(1, 2)
            a = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
            return self.out(a.transpose(1, 2).reshape(n, t, d))

    class EncoderBlock(nn.Module):
        def __init__(self, b, dim, heads, mlp_dim):
            super().__init__()
            self.ln1 = nn.LayerNorm(dim, eps=b.ln1.epsilon)
            self.attn = Attention(dim, heads)
            self.ln2 = nn.LayerNorm(dim, eps=b.ln2.epsilon)
            self.mlp1 = nn.Linear(dim, mlp_dim)
            self.mlp2 = nn.Linear(mlp_dim, dim)

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp2(F.gelu(self.mlp1(self.ln2(x)), approximate="tanh"))

    class ViT(nn.Module):
        def __init__(self, m):
            super().__init__()
            p, c, d = m.patch_size, m.input_shape[2], m.dim
            self.dim = d
            self.patch_embed = nn.Conv2d(c, d, p, stride=p)
            self.pos_embedding = nn.Parameter(torch.zeros(m.pos_embedding.shape))
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if m.cls_token is not None else None
            self.blocks = nn.ModuleList([EncoderBlock(b, d, m.heads, m.mlp_dim) for b in m.blocks])
            self.ln = nn.LayerNorm(d, eps=m.ln.epsilon)
            self.head = nn.Linear(d, m.num_classes)

        def forward(self, x):
            x = self.patch_embed(x.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)  # (n, patches, dim), row-major
            if self.cls_token is not None:
                x = torch.cat([self.cls_token.expand(x.shape[0], 1, self.dim), x], dim=1)
            x = x + self.pos_embedding
            for block in self.blocks:
                x = block(x)
            x = self.ln(x)
            return self.head(x[:, 0] if self.cls_token is not None else x.mean(dim=1))

    _TWIN_CLASSES = types.SimpleNamespace(LeNet5=LeNet5, ResNet=ResNet, ViT=ViT)
    return _TWIN_CLASSES


_TWIN_CLASSES = None


# --------------------------------------------------------------------------- the Linen CNN of benchmarks.architectures


def linen_cnn_twin(unravel, w):
    """``(net, layout)`` for the Linen CNN of :mod:`benchmarks.architectures` (Flax MNIST example, narrowed).

    ``conv 8@3x3 SAME -> relu -> avgpool 2 -> conv 16@3x3 SAME -> relu -> avgpool 2
    -> flatten (h, w, c) -> dense 32 -> relu -> dense 10``; ``unravel`` maps a
    flat JAX vector to its parameter dict (``Conv_0``, ``Conv_1``, ``Dense_0``,
    ``Dense_1``, each ``kernel`` and ``bias``). ``layout(v)``: a flat vector as
    tensors in ``net.parameters()`` order. Input: NHWC tensors.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    class LinenCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.fc1 = nn.Linear(7 * 7 * 16, 32)
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x):
            x = F.avg_pool2d(F.relu(self.conv1(x.permute(0, 3, 1, 2))), 2)
            x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
            x = x.permute(0, 2, 3, 1).flatten(1)  # flax flattens in (h, w, c) order
            return self.fc2(F.relu(self.fc1(x)))

    def layout(v):
        p = unravel(np.asarray(v, np.float32))
        t = lambda a: torch.from_numpy(np.array(a, np.float32))  # a writable copy
        out = []
        for name in ("Conv_0", "Conv_1", "Dense_0", "Dense_1"):
            k = np.asarray(p[name]["kernel"])
            out += [t(k.transpose(3, 2, 0, 1) if k.ndim == 4 else k.T), t(p[name]["bias"])]
        return out

    net = LinenCNN()
    with torch.no_grad():
        for dst, src in zip(net.parameters(), layout(w)):
            dst.copy_(src)
    return net.eval(), layout
