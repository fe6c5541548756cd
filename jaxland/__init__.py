"""jaxland: when does more data stop changing a neural network's loss landscape?

The pipeline a notebook needs, one name per step::

    data -> models -> training -> curvature -> landscape -> sample_size -> plots

The building blocks sit one import away in their stage's subpackage
(``jaxland.linalg.lanczos``, ``jaxland.landscape.variance``, ...).
``jaxland.plots`` is imported on first use, so ``import jaxland`` does not load
matplotlib.
"""

import importlib as _importlib

from ._version import __version__
from .errors import ConfigError, DataError, DataNotFoundError, JaxlandError, NumericalError, TrainingError

from .data import Dataset, load_dataset, load_text
from .models import Model, accuracy, as_language_model, as_model, build_model, mean_loss, MLPConfig, per_sample_losses, reference_mlp
from .training import TrainResult, cached_train, train
from .curvature import (bottom_eigenpairs, choose_d, extreme_eigenvalues, hessian_eigenpairs, hessian_eigenpairs_batch,
                        hessian_trace, hvp, loss_and_grad, spectral_density)
from .curvature import fisher_operator, ggn_operator, hessian_operator
from .linalg import EigResult
from .landscape import (DeltaResult, Subspace, curvature_probe, delta_monte_carlo, delta_split, hessian_subspace, loss_differences,
                        loss_surface, random_directions, subspace_curvature, theory_delta)
from .sample_size import KForecast, forecast_dataset_size, forecast_sufficient_k, sufficient_k
from .sharding import device_mesh, initialize_distributed
from .io import write_json

__all__ = [
    "__version__",
    # errors
    "JaxlandError", "ConfigError", "DataError", "DataNotFoundError", "NumericalError", "TrainingError",
    # data
    "Dataset", "load_dataset", "load_text",
    # models
    "Model", "as_model", "as_language_model", "MLPConfig", "reference_mlp", "build_model", "per_sample_losses", "mean_loss", "accuracy",
    # training
    "TrainResult", "train", "cached_train",
    # curvature
    "loss_and_grad", "hvp", "EigResult", "hessian_eigenpairs", "hessian_eigenpairs_batch",
    "bottom_eigenpairs", "extreme_eigenvalues", "hessian_trace", "spectral_density", "choose_d",
    "hessian_operator", "ggn_operator", "fisher_operator",
    # landscape
    "Subspace", "hessian_subspace", "random_directions", "DeltaResult", "delta_monte_carlo", "subspace_curvature",
    "theory_delta", "delta_split", "loss_surface", "loss_differences", "curvature_probe",
    # sample size
    "sufficient_k", "KForecast", "forecast_sufficient_k", "forecast_dataset_size",
    # devices and results on disk
    "device_mesh", "initialize_distributed", "write_json",
]

# Names that lived at the top level before the stage subpackages: they keep
# working (resolved on first use) but are not part of the pipeline above.
_MOVED = {
    "read_idx": "data", "normalize_images": "data", "DATASETS": "data", "NORMALIZATIONS": "data",
    "LOSSES": "models", "cross_entropy": "models", "mse": "models", "ACTIVATIONS": "models", "MLP": "models",
    "Layer": "models", "ARCHITECTURES": "models", "MODEL_NAMES": "models", "LeNet5": "models", "ResNet": "models",
    "ViT": "models", "GPT": "models", "SequenceModel": "models", "sequence_cross_entropy": "models", "Vocabulary": "data", "TextData": "data",
    "DIVERGENCE_FACTOR": "training", "save_params": "training", "load_params": "training", "train_epoch": "training", "default_cache_dir": "training",
    "dense_hessian": "curvature", "hessian_matvec": "curvature", "hvp_batch": "curvature", "sharded_hvp": "curvature",
    "SpectralDensity": "curvature", "TraceEstimate": "curvature", "Extremes": "curvature", "DChoice": "curvature",
    "density_moments": "curvature", "positive_trace": "curvature",
    "CurvatureOperator": "curvature", "top_eigenpairs": "linalg", "theory_delta_eigensolver": "landscape",
    "run_metadata": "io",
    "block_lanczos": "linalg", "dense_eigh": "linalg", "lanczos": "linalg", "lobpcg": "linalg",
    "power_iteration": "linalg", "smooth_density": "linalg",
    "normalize_filters": "landscape", "batch_means": "landscape", "cumulative_means": "landscape",
    "loss_increments": "landscape", "DeltaInfo": "landscape", "StreamPlan": "landscape",
    "delta_from_losses": "landscape", "draw_thetas": "landscape", "per_sample_loss_matrix": "landscape",
    "stream_plan": "landscape", "CumulativeCurvature": "landscape", "EigensolverTheory": "landscape",
    "SubspaceCurvature": "landscape", "TheoryInfo": "landscape", "TheoryResult": "landscape",
    "cumulative_curvature": "landscape", "LossDifferenceResult": "landscape", "SurfaceResult": "landscape",
    "DeltaSplit": "landscape", "theta_free_term": "landscape",
    "ema": "sample_size", "moving_mean": "sample_size", "power_law_k": "sample_size",
    "auto_chunk": "sharding", "is_main_process": "sharding", "map_rows": "sharding",
    "atomic_write_bytes": "io", "atomic_write_text": "io", "write_npz": "io",
}


def __getattr__(name):
    if name == "plots":  # loads matplotlib: only when asked for
        return _importlib.import_module(".plots", __name__)
    if name in _MOVED:
        return getattr(_importlib.import_module(f".{_MOVED[name]}", __name__), name)
    raise AttributeError(f"module 'jaxland' has no attribute {name!r}")
