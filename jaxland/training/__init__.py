"""Stage 3, training: from initial weights to the trained minimum ``w*``.

:func:`train` (optax, one compiled epoch, explicit key) and :func:`cached_train`,
the same run cached on disk under a key made of everything that determines ``w*``.
"""

from .cache import cache_path, cached_train, default_cache_dir
from .loop import DIVERGENCE_FACTOR, TrainResult, load_params, save_params, train, train_epoch

__all__ = ["TrainResult", "train", "train_epoch", "save_params", "load_params", "DIVERGENCE_FACTOR",
           "cached_train", "cache_path", "default_cache_dir"]
