"""Stage 1, data: the datasets the papers use, read from their original files.

MNIST and Fashion-MNIST (IDX ``.gz``), CIFAR-10/100 (the python tarballs),
tensorflow-datasets when installed, and an embedded 10,000-image MNIST subset.
Images come back as float32 arrays in a fixed, documented order. Text for
language models (:func:`load_text`): character-level next-token windows of a
file or of the embedded Tiny Shakespeare slice.
"""

from .datasets import DATASETS, NORMALIZATIONS, Dataset, load_dataset, normalize_images, read_idx
from .text import TextData, Vocabulary, load_text

__all__ = ["DATASETS", "NORMALIZATIONS", "Dataset", "load_dataset", "normalize_images", "read_idx",
           "TextData", "Vocabulary", "load_text"]
