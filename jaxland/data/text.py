"""Text for language models: a character-level tokenizer and next-token windows.

:func:`load_text` reads a UTF-8 text file (default: the embedded slice of Tiny
Shakespeare), encodes it character by character with a :class:`Vocabulary`
and cuts it into non-overlapping windows of ``context`` characters::

    x[i] = ids[i T     : (i + 1) T]          inputs (n, T)
    y[i] = ids[i T + 1 : (i + 1) T + 1]      next-token targets (n, T)

so each sequence is one sample of the loss ``"sequence_cross_entropy"`` and
``n = (len(text) - 1) // T``. The sequence order is the text's unless a
``key`` is given (then ``jax.random.permutation(key, n)``, before ``limit``).

The embedded text (``jaxland/data/embedded/tinyshakespeare-100k.txt.gz``) is
the first 99,991 characters (the whole lines within the first 100,000 bytes)
of Tiny Shakespeare, the character-level corpus of Karpathy's char-rnn, which
is Shakespeare's plays and so in the public domain: 61 distinct characters,
enough for 1,562 sequences of 64.
"""

from __future__ import annotations

import gzip
import os
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from ..errors import ConfigError, DataError, DataNotFoundError
from ..validate import check_key, positive_int

__all__ = ["Vocabulary", "TextData", "load_text", "EMBEDDED_TEXT"]

EMBEDDED_TEXT = "tinyshakespeare-100k.txt.gz"
_EMBEDDED_NAME = "tinyshakespeare_100k"
MAX_TEXT_BYTES = 1 << 30  # a text file larger than this is refused (read whole into memory)


class Vocabulary(NamedTuple):
    """A character-level tokenizer: token id ``i`` is the character ``chars[i]``.

    ``Vocabulary.from_text(text)`` takes the sorted distinct characters of a
    text. ``encode`` maps a string to int32 ids (a character outside the
    vocabulary is a :class:`~jaxland.DataError` naming it), ``decode`` maps ids
    back: ``decode(encode(s)) == s``.
    """

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        if not text:
            raise DataError("cannot build a vocabulary from an empty text")
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        """V, the number of tokens."""
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        table = {c: i for i, c in enumerate(self.chars)}
        try:
            return np.fromiter((table[c] for c in text), dtype=np.int32, count=len(text))
        except KeyError:
            missing = sorted(set(text) - set(self.chars))
            shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise DataError(f"the text has {len(missing)} character(s) outside the vocabulary of {self.size}: {shown}; "
                            "build the vocabulary from this text (vocabulary=None) or clean the text") from None

    def decode(self, ids) -> str:
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ConfigError(f"token ids must lie in [0, {self.size}) to decode, got min {ids.min()}, max {ids.max()}")
        return "".join(self.chars[int(i)] for i in ids)


class TextData(NamedTuple):
    """Next-token windows of a text: ``x`` (n, T) and ``y`` (n, T) int32 token ids, plus their origin.

    ``vocab``: the :class:`Vocabulary` (``vocab.size`` is the model's
    ``vocab_size``); ``name``; ``source``: the file or the embedded slice.
    """

    x: np.ndarray
    y: np.ndarray
    vocab: Vocabulary
    name: str
    source: str

    @property
    def context(self) -> int:
        """T, tokens per sequence."""
        return int(self.x.shape[1])

    @property
    def num_tokens(self) -> int:
        return int(self.x.size)

    @property
    def info(self) -> dict:
        """Name, source, number of sequences, context, vocabulary size and the unit of k (sequences)."""
        return {"name": self.name, "source": self.source, "sequences": int(self.x.shape[0]), "context": self.context,
                "vocab_size": self.vocab.size, "unit": "sequences"}


def _read_embedded() -> str:
    data = (resources.files("jaxland.data") / "embedded" / EMBEDDED_TEXT).read_bytes()
    return gzip.decompress(data).decode("utf-8")


def _read_file(path: Path, encoding: str, max_chars: int | None) -> str:
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such text file")
    if not path.is_file():
        raise DataError(f"{path} is not a file; give the path of a UTF-8 text file")
    size = path.stat().st_size
    if max_chars is None and size > MAX_TEXT_BYTES:
        raise DataError(f"{path} holds {size:,} bytes, more than the {MAX_TEXT_BYTES:,} read into memory; pass vocabulary= "
                        "and limit= to read only its start")
    try:
        with open(path, encoding=encoding, newline="") as f:
            return f.read() if max_chars is None else f.read(max_chars)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not valid {encoding} text (byte {e.start}: {e.reason}); pass encoding= or convert the file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def load_text(
    path: str | os.PathLike | None = None,
    *,
    context: int,
    limit: int | None = None,
    vocabulary: Vocabulary | str | None = None,
    key: jax.Array | None = None,
    encoding: str = "utf-8",
) -> TextData:
    """Character-level next-token windows of a text file (default: the embedded Tiny Shakespeare slice).

    Args:
      path: a UTF-8 text file; None reads the embedded slice (module docstring).
      context: T, characters per sequence (the model's context or less).
      limit: keep the first ``limit`` sequences (after the optional permutation).
      vocabulary: a :class:`Vocabulary` (or its characters as a string) to
        encode with, e.g. the one a model was trained with; None builds it from
        the whole text (so it does not depend on ``limit``). With a vocabulary,
        a ``limit`` and no key, only the start of the file that the windows
        need is read (files over 1 GiB need this).
      key: permute the sequences with ``jax.random.permutation(key, n)``
        before ``limit``; None keeps the text order.
      encoding: of the file.

    Returns:
      :class:`TextData` ``(x, y, vocab, name, source)``; ``y`` is ``x`` shifted
      by one character, so no position is padding.
    """
    t = positive_int("context", context)
    limit = positive_int("limit", limit, None)
    if key is not None:
        check_key(key)
    if isinstance(vocabulary, str):
        vocabulary = Vocabulary(vocabulary)
    if vocabulary is not None and (not isinstance(vocabulary, Vocabulary) or not vocabulary.chars
                                   or len(set(vocabulary.chars)) != len(vocabulary.chars)):
        raise ConfigError("vocabulary must be a jaxland.data.Vocabulary (or a string of distinct characters)")
    # the vocabulary comes from the whole text, so it does not depend on limit; with a given vocabulary
    # and no permutation only the characters the first `limit` windows need are read
    max_chars = limit * t + 1 if (limit is not None and key is None and vocabulary is not None) else None
    if path is None:
        text = _read_embedded()
        name, source = _EMBEDDED_NAME, "embedded:tinyshakespeare-100k (first 99,991 characters of Tiny Shakespeare)"
    else:
        p = Path(os.fspath(path)).expanduser()
        text = _read_file(p, encoding, max_chars)
        name, source = p.stem, str(p)
    n = (len(text) - 1) // t
    if n < 1:
        raise DataError(f"{source}: {len(text)} characters make no window of context={t} plus its next character; "
                        "use a longer text or a shorter context")
    vocab = Vocabulary.from_text(text) if vocabulary is None else vocabulary
    if key is None and limit is not None:
        n = min(n, limit)
    ids = vocab.encode(text[: n * t + 1])
    x = ids[: n * t].reshape(n, t)
    y = ids[1 : n * t + 1].reshape(n, t)
    if key is not None:
        perm = np.asarray(jax.random.permutation(key, n))
        x, y = x[perm], y[perm]
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return TextData(np.ascontiguousarray(x), np.ascontiguousarray(y), vocab, name, source)
