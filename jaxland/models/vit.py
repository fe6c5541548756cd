"""A small Vision Transformer as a Flax NNX module (patch embedding, pre-norm encoder blocks, class token or mean pooling).

Deterministic (no Dropout) and float64-safe: attention runs in the inputs'
float type (:func:`_attention`), so exact float64 Hessians are possible.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.attention import dot_product_attention_weights

from ..errors import ConfigError
from .images import check_images as _check_images, check_input_shape as _check_input_shape, check_int as _check_int

__all__ = ["ViT", "EncoderBlock"]


def _attention(query, key, value, bias=None, mask=None, *, dtype=None, precision=None, **unused):
    """Softmax attention computed in the inputs' float type.

    Flax's default for dropout-free attention is ``jax.nn.dot_product_attention``,
    which evaluates the softmax in float32 even for float64 inputs: exact
    float64 Hessians of a ViT need this plain version.
    """
    weights = dot_product_attention_weights(query, key, bias, mask, dtype=dtype, precision=precision)
    return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=precision)


class EncoderBlock(nnx.Module):
    """Pre-norm transformer block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))`` with a gelu MLP."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, dim, dim, dim, decode=False, dropout_rate=0.0, deterministic=True,
                                           attention_fn=_attention, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp1 = nnx.Linear(dim, mlp_dim, rngs=rngs)
        self.mlp2 = nnx.Linear(mlp_dim, dim, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp2(nnx.gelu(self.mlp1(self.ln2(x))))  # gelu: flax default tanh approximation


class ViT(nnx.Module):
    """Vision Transformer (Dosovitskiy et al. 2021), small, deterministic, no dropout.

    ``patch embedding (a p x p conv with stride p) -> [class token] + learned
    position embedding -> depth pre-norm blocks (LN -> multi-head self-attention
    -> residual; LN -> dense mlp_dim -> gelu -> dense dim -> residual) -> LN ->
    class token (pool="cls") or mean over patch tokens (pool="mean") -> dense``.
    LayerNorm epsilon is flax's 1e-6; gelu is flax's default (tanh approximation).
    Parameters with the defaults (28x28x1, patch 7 -> 16 patches, dim 64, depth 2,
    4 heads, mlp 128, cls): 72,074 (71,946 with pool="mean": no class token, one
    position fewer); 81,226 for (32, 32, 3) with patch_size=8.
    """

    def __init__(self, input_shape=(28, 28, 1), num_classes: int = 10, *, patch_size: int = 7, dim: int = 64,
                 depth: int = 2, heads: int = 4, mlp_dim: int = 128, pool: str = "cls", rngs: nnx.Rngs):
        h, w, c = self.input_shape = _check_input_shape(input_shape)
        self.num_classes = _check_int("num_classes", num_classes)
        p = self.patch_size = _check_int("patch_size", patch_size)
        if h % p or w % p:
            raise ConfigError(
                f"image size {h}x{w} is not divisible by patch_size={p}; choose a patch_size that divides both "
                f"(e.g. 4 or 7 for 28x28, 4 or 8 for 32x32)"
            )
        self.dim, self.depth = _check_int("dim", dim), _check_int("depth", depth)
        self.heads, self.mlp_dim = _check_int("heads", heads), _check_int("mlp_dim", mlp_dim)
        if dim % heads:
            raise ConfigError(f"dim={dim} is not divisible by heads={heads}; each head gets dim // heads features")
        if pool not in ("cls", "mean"):
            raise ConfigError(f"pool must be 'cls' (class token) or 'mean' (mean of patch tokens), got {pool!r}")
        self.pool = pool
        tokens = (h // p) * (w // p) + (pool == "cls")
        self.patch_embed = nnx.Conv(c, dim, (p, p), strides=p, padding="VALID", rngs=rngs)
        init = nnx.initializers.normal(0.02)
        self.pos_embedding = nnx.Param(init(rngs.params(), (1, tokens, dim), jnp.float32))
        self.cls_token = nnx.Param(jnp.zeros((1, 1, dim), jnp.float32)) if pool == "cls" else None
        self.blocks = nnx.List([EncoderBlock(dim, heads, mlp_dim, rngs=rngs) for _ in range(depth)])
        self.ln = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, self.num_classes, rngs=rngs)

    def __call__(self, x):
        _check_images(x, self.input_shape, "ViT")
        x = self.patch_embed(x)
        x = x.reshape(x.shape[0], -1, self.dim)  # patches in row-major (h, w) order
        if self.cls_token is not None:
            x = jnp.concatenate([jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, self.dim)), x], axis=1)
        x = x + self.pos_embedding[...]
        for block in self.blocks:
            x = block(x)
        x = self.ln(x)
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(axis=1))

    @staticmethod
    def flops(input_shape=(28, 28, 1), num_classes: int = 10, *, patch_size: int = 7, dim: int = 64,
              depth: int = 2, heads: int = 4, mlp_dim: int = 128, pool: str = "cls") -> int:
        h, w, c = _check_input_shape(input_shape)
        patches = (h // patch_size) * (w // patch_size)
        t = patches + (pool == "cls")
        block = 4 * t * dim * dim + 2 * t * t * dim + 2 * t * dim * mlp_dim
        return 2 * (patches * patch_size**2 * c * dim + depth * block + dim * num_classes)
