"""A small decoder-only transformer (GPT) for next-token prediction, as a Flax NNX module.

``token embedding + learned position embedding -> depth pre-norm blocks
(LN -> causal multi-head self-attention -> residual; LN -> dense 4W -> gelu ->
dense W -> residual) -> LN -> output head`` (GPT-2's layout). Inputs are
token ids (n, T) with T <= ``context``; outputs are logits (n, T, V). The head
is the token embedding transposed when ``tie_weights`` (GPT-2), a separate
(W, V) matrix otherwise (nanochat). LayerNorm epsilon 1e-5 and the tanh gelu,
as GPT-2 and the PyTorch twin in ``benchmarks/language_model.py``; no dropout,
so a call is a pure function of the parameters and the loss of one sequence
does not depend on the others.

Initialisation (GPT-2): embeddings and dense kernels N(0, 0.02^2), the two
residual projections of each block N(0, (0.02 / sqrt(2 depth))^2), biases 0,
LayerNorm scale 1. Parameters::

    D = V W (2 if untied else 1) + context W + depth (12 W^2 + 13 W) + 2 W

e.g. 809,856 for (V, context, W, depth) = (65, 64, 128, 4) tied; 50.1M for
the nanochat-d6-sized (50,304, 2,048, 384, 6) untied (nanochat d6 itself has
107M: three more vocabulary-sized value-embedding tables, 3 x 19.3M, which this
model does not have; the (T, V) logits -- what limits memory -- are the same).

Token lookup is a one-hot matmul for vocabularies up to
:data:`ONE_HOT_MAX_VOCAB` (its transpose is a matmul too, where a gather's is
a scatter-add, slow on CPU) and a gather above; the two are the same numbers.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from ..errors import ConfigError
from .base import as_model
from .images import check_int as _check_int
from .sequence import SequenceModel

__all__ = ["GPT", "ONE_HOT_MAX_VOCAB", "gpt_model", "gpt_num_params"]

ONE_HOT_MAX_VOCAB = 1024
LN_EPS = 1e-5


def _dense(cin: int, cout: int, std: float, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(cin, cout, kernel_init=nnx.initializers.normal(std), bias_init=nnx.initializers.zeros, rngs=rngs)


class CausalSelfAttention(nnx.Module):
    """``proj(softmax(q k^T / sqrt(W/H) + causal mask) v)`` with q, k, v from one (W, 3W) dense layer."""

    def __init__(self, width: int, heads: int, *, depth: int, rngs: nnx.Rngs):
        self.heads = heads
        self.qkv = _dense(width, 3 * width, 0.02, rngs)
        self.proj = _dense(width, width, 0.02 / math.sqrt(2 * depth), rngs)

    def __call__(self, h):
        n, t, w = h.shape
        hd = w // self.heads
        q, k, v = jnp.split(self.qkv(h).reshape(n, t, 3, self.heads, hd), 3, axis=2)
        q, k, v = (a[:, :, 0] for a in (q, k, v))  # (n, T, H, hd)
        scores = jnp.einsum("nqhd,nkhd->nhqk", q, k) / jnp.sqrt(jnp.asarray(hd, h.dtype))
        causal = jnp.tril(jnp.ones((t, t), bool))
        # softmax in the activations' own float type (float64 Hessians need it)
        probs = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
        out = jnp.einsum("nhqk,nkhd->nqhd", probs, v).reshape(n, t, w)
        return self.proj(out)


class Block(nnx.Module):
    """Pre-norm block: ``h + attn(LN(h))``, then ``h + mlp(LN(h))`` with a 4W tanh-gelu MLP."""

    def __init__(self, width: int, heads: int, *, depth: int, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(width, epsilon=LN_EPS, rngs=rngs)
        self.attn = CausalSelfAttention(width, heads, depth=depth, rngs=rngs)
        self.ln2 = nnx.LayerNorm(width, epsilon=LN_EPS, rngs=rngs)
        self.fc = _dense(width, 4 * width, 0.02, rngs)
        self.out = _dense(4 * width, width, 0.02 / math.sqrt(2 * depth), rngs)

    def __call__(self, h):
        h = h + self.attn(self.ln1(h))
        return h + self.out(nnx.gelu(self.fc(self.ln2(h)), approximate=True))


class GPT(nnx.Module):
    """Decoder-only transformer: token ids (n, T), T <= ``context`` -> logits (n, T, ``vocab_size``).

    ``width`` W must be divisible by ``heads``. See the module docstring for
    the layout, the initialisation and the parameter count.
    """

    def __init__(self, vocab_size: int = 65, context: int = 64, *, width: int = 128, depth: int = 4, heads: int = 4,
                 tie_weights: bool = True, rngs: nnx.Rngs):
        self.vocab_size = _check_int("vocab_size", vocab_size, 2)
        self.context = _check_int("context", context)
        self.width, self.depth, self.heads = _check_int("width", width), _check_int("depth", depth), _check_int("heads", heads)
        if width % heads:
            raise ConfigError(f"width={width} is not divisible by heads={heads}; each head gets width // heads features")
        if not isinstance(tie_weights, bool):
            raise ConfigError(f"tie_weights must be True or False, got {tie_weights!r}")
        self.tie_weights = tie_weights
        init = nnx.initializers.normal(0.02)
        self.wte = nnx.Param(init(rngs.params(), (vocab_size, width), jnp.float32))
        self.wpe = nnx.Param(init(rngs.params(), (context, width), jnp.float32))
        self.blocks = nnx.List([Block(width, heads, depth=depth, rngs=rngs) for _ in range(depth)])
        self.ln_f = nnx.LayerNorm(width, epsilon=LN_EPS, rngs=rngs)
        self.head = None if tie_weights else nnx.Param(init(rngs.params(), (width, vocab_size), jnp.float32))

    def __call__(self, tokens):
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ConfigError(f"GPT expects integer token ids of shape (n, T), got {tokens.dtype} {tuple(tokens.shape)}")
        t = tokens.shape[1]
        if t > self.context:
            raise ConfigError(f"sequences of length {t} exceed the model's context={self.context}; "
                              f"cut them (load_text(..., context={self.context})) or build the model with context >= {t}")
        wte = self.wte[...]
        if self.vocab_size <= ONE_HOT_MAX_VOCAB:
            h = jax.nn.one_hot(tokens, self.vocab_size, dtype=wte.dtype) @ wte
        else:
            h = jnp.take(wte, tokens, axis=0)
        h = h + self.wpe[...][:t]
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        return h @ (wte.T if self.head is None else self.head[...])

    @staticmethod
    def num_params(vocab_size: int = 65, context: int = 64, *, width: int = 128, depth: int = 4, heads: int = 4,
                   tie_weights: bool = True) -> int:
        """D for these settings (the module docstring's formula)."""
        return gpt_num_params(vocab_size, context, width=width, depth=depth, tie_weights=tie_weights)


def gpt_num_params(vocab_size: int, context: int, *, width: int, depth: int, tie_weights: bool = True, **unused) -> int:
    """``V W (2 if untied else 1) + context W + depth (12 W^2 + 13 W) + 2 W``."""
    v, w = int(vocab_size), int(width)
    return v * w * (1 if tie_weights else 2) + int(context) * w + int(depth) * (12 * w * w + 13 * w) + 2 * w


def gpt_model(vocab_size: int | None = None, context: int | None = None, *, width: int = 128, depth: int = 4,
              heads: int = 4, tie_weights: bool = True, chunk_size: int | None = None, loss="sequence_cross_entropy",
              input_shape=None, num_classes: int | None = None) -> SequenceModel:
    """The jaxland model of a :class:`GPT`: ``jl.build_model("gpt", ...)``.

    ``vocab_size`` (default 65, Tiny Shakespeare's characters) and ``context``
    (default 64); ``num_classes`` and ``input_shape=(context,)`` are accepted
    as their synonyms (``build_model``'s positional arguments). The loss is
    ``"sequence_cross_entropy"`` (``"cross_entropy"``, ``build_model``'s
    default, means the same here; a callable ``loss(logits, y) -> (n,)``
    replaces it). Per-sample losses run ``chunk_size`` sequences at a time
    (:class:`~jaxland.models.sequence.SequenceModel`; None: automatic). The
    ``spec`` holds every argument but ``chunk_size`` (which does not change
    the function), and ``init(key)`` draws fresh GPT-2 weights.
    """
    vocab_size = _synonym("vocab_size", vocab_size, "num_classes", num_classes, 65)
    if input_shape is not None:
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
        if len(shape) != 1:
            raise ConfigError(f"a GPT's input_shape is (context,), one int, got {input_shape!r}")
        input_shape = shape[0]
    context = _synonym("context", context, "input_shape", input_shape, 64)
    if loss == "cross_entropy":
        loss = "sequence_cross_entropy"
    kw = dict(width=width, depth=depth, heads=heads, tie_weights=tie_weights)
    nnx.eval_shape(lambda: GPT(vocab_size, context, **kw, rngs=nnx.Rngs(0)))  # bad arguments raise here, cheaply
    factory = functools.partial(GPT, vocab_size, context, **kw)
    spec = {"architecture": "gpt", "vocab_size": vocab_size, "context": context, **kw}
    inner = as_model(factory, loss=loss, name="gpt", input_shape=(context,), spec=spec)
    return SequenceModel(inner, chunk_size=chunk_size, vocab_size=vocab_size)


def _synonym(name: str, value, other: str, other_value, default):
    if value is not None and other_value is not None and value != other_value:
        raise ConfigError(f"{name}={value!r} and {other}={other_value!r} disagree; give one of them")
    got = value if value is not None else other_value
    return default if got is None else got
