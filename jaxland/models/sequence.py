"""Language models: sequences as samples, and per-sample losses in memory-bounded chunks.

A sample is one sequence: inputs ``x_i`` (T,) token ids, targets ``y_i`` (T,)
the next tokens, ``-1`` (:data:`IGNORE_INDEX`) marking padding. The per-sample
loss is the mean next-token cross-entropy over the sequence's valid positions,

    l_i(w) = (1 / |M_i|) sum_{t in M_i} -log softmax(f(w, x_i)_t)[y_it],
    M_i = {t : y_it != -1},

so ``L_k`` is the mean of the first k *sequences'* losses and k counts
sequences (``"sequence_cross_entropy"`` in :data:`jaxland.models.LOSSES`).

**Memory.** A language model's outputs are (n, T, V) logits; for a GPT-2
vocabulary (V = 50,304) and T = 2,048 one sequence's float32 logits take
412 MB, so evaluating, differentiating or linearising the loss on all N
sequences at once needs O(N T V) memory. :class:`SequenceModel` computes the
per-sample losses ``chunk_size`` sequences at a time, in a ``lax.map`` whose
body is under ``jax.checkpoint``: reverse mode keeps only each chunk's inputs
and recomputes the chunk during the backward pass, and forward mode carries
tangents one chunk at a time. Gradients and Hessian-vector products over N
sequences therefore accumulate chunk by chunk inside one compiled program
(the backward scan sums the parameter cotangent as its carry), and every
estimator that goes through ``per_sample_losses`` -- HVPs, eigenpairs,
trace, density, the per-sample curvature pass, Monte Carlo -- holds
O(chunk_size x T x V) of logits (times the tangents it carries), never
O(N x T x V). The numbers do not depend on the chunk: each sequence's loss is
computed on its own.

Peak memory of one Hessian-vector product of the nanochat-d6-sized GPT
(V = 50,304, T = 2,048, width 384, 6 blocks of 6 heads, untied head: 50.1M
parameters), float32, from XLA's buffer assignment of the compiled program
(``python -m benchmarks.language_model --memory``; compiled, not run):

* one sequence per chunk: 7.54 GB of temporaries for N = 4 and for N = 16
  sequences alike, plus 0.6 GB for w, v and the product;
* no chunking: 7.44 GB for N = 1 and 14.86 GB for N = 2, i.e. 7.42 GB per
  sequence, so 1.9 TB for 256 sequences.

Of the 7.4 GB one sequence costs, 2.1 GB scale with the vocabulary (the same
program at V = 1,024 needs 5.34 GB: a few float32 (T, V) arrays of 0.41 GB --
logits, softmax, their tangents, the cotangent -- and the gradients of the
vocabulary-sized tables) and most of the rest with T^2 (the attention maps,
6 blocks x 6 heads x 2,048^2 floats = 0.6 GB per copy, with their tangents
and cotangents).
So peak memory is about ``chunk_size x 7.4 GB + 0.7 GB`` whatever N is: one
sequence per chunk (the automatic choice here: :data:`LOGITS_BUDGET` holds
less than one sequence's logits) fits a 16 GB GPU, and an 80 GB one can take
chunks of up to about 9 sequences.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from .. import memory
from ..errors import ConfigError
from .base import Model, as_model
from .sequence_loss import IGNORE_INDEX, mask_targets, sequence_cross_entropy

__all__ = ["IGNORE_INDEX", "LOGITS_BUDGET", "sequence_cross_entropy", "mask_targets", "SequenceModel",
           "as_language_model", "chunked_losses", "auto_chunk_size"]

LOGITS_BUDGET = 64 << 20  # bytes of float32 logits per chunk when chunk_size is automatic
# and of one HVP's per-sequence intermediates (jaxland.memory's estimate): at small vocabularies the activations,
# not the logits, set the chunk (0.8M-parameter GPT, T = 64: 14 MB per sequence, so 9 sequences per chunk; one HVP
# on 256 sequences 3.1-3.4 s in chunks of 2-16 against 5.1 s unchunked, and 145 MB of XLA temporaries at 16
# against 2.4 GB)
ACTIVATION_BUDGET = 128 << 20


def auto_chunk_size(seq_len: int, vocab: int, itemsize: int = 4, budget: int = LOGITS_BUDGET) -> int:
    """Sequences per chunk whose (chunk, T, V) logits fit ``budget`` bytes (at least 1)."""
    return max(1, int(budget) // max(1, int(seq_len) * int(vocab) * int(itemsize)))


def chunked_losses(fn, w, x, y, chunk_size: int):
    """``fn(w, x, y)`` (n,) computed ``chunk_size`` rows at a time under ``jax.checkpoint``.

    ``lax.map`` over chunks (the last one padded by repeating a real row, then
    dropped), so any derivative of the result holds one chunk's intermediates
    at a time. Equal to ``fn(w, x, y)`` when ``n <= chunk_size``.
    """
    n = x.shape[0]
    if n <= chunk_size:
        return fn(w, x, y)
    pad = (-n) % chunk_size

    def blocks(a):
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])
        return a.reshape(-1, chunk_size, *a.shape[1:])

    body = jax.checkpoint(lambda w_, xs, ys: fn(w_, xs, ys), prevent_cse=False)
    out = jax.lax.map(lambda xy: body(w, *xy), (blocks(x), blocks(y)))
    return out.reshape(-1)[:n]


class SequenceModel(Model):
    """A model of the protocol whose samples are sequences, with per-sample losses computed in chunks.

    Everything but the per-sample losses is the wrapped model's (``apply``,
    ``init``, ``unravel``, ``to_module``, ``spec``, the loss). ``chunk_size``:
    sequences per chunk (None: as many as keep the chunk's float32 logits under
    :data:`LOGITS_BUDGET` and its estimated HVP intermediates
    (:func:`jaxland.memory.per_sample_bytes`) under :data:`ACTIVATION_BUDGET`,
    from the shapes at trace time). The numbers
    equal the wrapped model's; only the memory differs (module docstring).
    ``vocab_size``: the input vocabulary, for the token-id check (default: the
    logits' last axis).
    """

    def __init__(self, inner: Model, *, chunk_size: int | None = None, vocab_size: int | None = None):
        if isinstance(inner, SequenceModel):
            inner = inner.inner
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ConfigError(f"chunk_size must be a positive int (sequences per chunk) or None (automatic), got {chunk_size!r}")
        self.inner = inner
        self.chunk_size = chunk_size
        self.loss = inner.loss
        self.input_shape = inner.input_shape
        self.name = inner.name
        self.vocab_size = vocab_size if vocab_size is not None else getattr(inner, "vocab_size", None)
        self._num_params = int(inner.num_params)
        self._key = ("sequences", inner, chunk_size, self.vocab_size)

    def __repr__(self):
        return f"SequenceModel({self.inner!r}, chunk_size={self.chunk_size})"

    # -- the wrapped model
    spec = property(lambda self: self.inner.spec)
    initial_params = property(lambda self: getattr(self.inner, "initial_params", None))
    explicit_spec = property(lambda self: getattr(self.inner, "explicit_spec", False))

    def init(self, key):
        return self.inner.init(key)

    def unravel(self, w):
        return self.inner.unravel(w)

    def ravel(self, tree):
        return self.inner.ravel(tree)

    def to_module(self, w):
        return self.inner.to_module(w)

    def apply(self, w, x):
        return self.inner.apply(w, x)

    # -- chunked losses
    def _chunk(self, w, x, y) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        out = jax.eval_shape(self.inner.apply, jax.ShapeDtypeStruct(w.shape, w.dtype), jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
        per_seq = 1
        for s in out.shape[1:]:
            per_seq *= int(s)
        by_logits = auto_chunk_size(per_seq, 1, jnp.dtype(out.dtype).itemsize)
        hvp_bytes = memory.per_sample_bytes(self.inner, x, y, program="hvp", w_dtype=w.dtype)  # 0: not traceable
        return min(by_logits, max(1, ACTIVATION_BUDGET // hvp_bytes)) if hvp_bytes else by_logits

    def per_sample_losses(self, w, x, y):
        """``l_i(w)`` of every sequence, shape (n,), ``chunk_size`` sequences at a time."""
        return chunked_losses(self.inner.per_sample_losses, w, x, y, self._chunk(w, x, y))

    def per_sample_losses_lowp(self, w, x, y, dtype):
        fn = lambda w_, xs, ys: self.inner.per_sample_losses_lowp(w_, xs, ys, dtype)
        return chunked_losses(fn, w, x, y, self._chunk(w, x, y))


def as_language_model(obj, *, chunk_size: int | None = None, loss="sequence_cross_entropy", **kwargs) -> SequenceModel:
    """A jaxland model of a language model: ``obj`` maps token ids (n, T) to logits (n, T, V).

    ``obj`` is anything :func:`jaxland.as_model` takes (an ``nnx.Module``, a
    factory ``rngs -> module``, a pure function with ``params=``, a model);
    ``kwargs`` go to it. The loss defaults to ``"sequence_cross_entropy"``
    (targets (n, T), -1 = padding) and the per-sample losses run
    ``chunk_size`` sequences at a time (:class:`SequenceModel`), so memory stays
    O(chunk x T x V) in every estimate. Example::

        model = jl.models.as_language_model(MyLM(vocab=65, rngs=nnx.Rngs(0)), chunk_size=8)
        res = jl.hessian_eigenpairs(model, w, x, y, 4, key=jax.random.key(0))
    """
    if isinstance(obj, SequenceModel):
        obj = obj.inner
    return SequenceModel(as_model(obj, loss=loss, **kwargs), chunk_size=chunk_size)
