"""jaxland: when does more data stop changing a neural network's loss landscape?

The public API, grouped along the pipeline
data -> model -> train -> curvature -> eigen -> subspace -> estimates.
Plotting and the HTML report are submodules (``jaxland.plots``,
``jaxland.report``), imported on first use so that ``import jaxland`` does
not load matplotlib.
"""

# errors and validation
from .errors import ConfigError, DataError, DataNotFoundError, JaxlandError, NumericalError, TrainingError

# data
from .data import DATASETS, NORMALIZATIONS, Dataset, load_dataset, normalize_images, read_idx

# models: the protocol, the MLP, the shipped architectures
from .model import LOSSES, Model, accuracy, as_model, cross_entropy, mean_loss, mse, per_sample_losses
from .mlp import ACTIVATIONS, MLP, Layer, MLPConfig, reference_mlp
from .architectures import ARCHITECTURES, MODEL_NAMES, LeNet5, ResNet, ViT, build_model

# training and the weight cache
from .train import DIVERGENCE_FACTOR, TrainResult, load_params, save_params, train, train_epoch
from .cache import cached_train, default_cache_dir

# curvature and eigenpairs
from .curvature import dense_hessian, hessian_matvec, hvp, hvp_batch, loss_and_grad, sharded_hvp
from .eigen import EigResult, block_lanczos, dense_eigh, hessian_eigenpairs, hessian_eigenpairs_batch, lanczos, lobpcg, power_iteration, top_eigenpairs

# subspaces
from .subspace import Subspace, hessian_subspace, normalize_filters, random_directions

# estimates: Monte Carlo, theory, stopping, surfaces
from .prefix import batch_means, cumulative_means, loss_increments
from .montecarlo import DeltaInfo, DeltaResult, StreamPlan, delta_from_losses, delta_monte_carlo, draw_thetas, per_sample_loss_matrix, stream_plan
from .theory import CumulativeCurvature, EigensolverTheory, SubspaceCurvature, TheoryInfo, TheoryResult, cumulative_curvature, subspace_curvature, theory_delta, theory_delta_eigensolver
from .stopping import ema, moving_mean, sufficient_k
from .surfaces import LossDifferenceResult, SurfaceResult, loss_differences, loss_surface
from .delta_split import DeltaSplit, delta_split, theta_free_term
from .forecast import KForecast, forecast_sufficient_k, power_law_k

# the whole spectrum: trace, density, extremes, the choice of d
from .spectrum import DChoice, Extremes, SpectralDensity, TraceEstimate, bottom_eigenpairs, choose_d, density_moments, extreme_eigenvalues, hessian_trace, positive_trace, smooth_density, spectral_density

# devices, hosts and results on disk
from .sharding import auto_chunk, device_mesh, initialize_distributed, is_main_process, map_rows
from .io import atomic_write_bytes, atomic_write_text, run_metadata, write_json, write_npz

from ._version import __version__


def __getattr__(name):
    # plots and report load matplotlib: import them on first use
    import importlib

    if name in ("plots", "plots_spectrum", "plots_forecast", "report"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'jaxland' has no attribute {name!r}")
