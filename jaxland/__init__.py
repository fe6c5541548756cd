"""jaxland: when does more data stop changing a neural network's loss landscape?

Public API (re-exported here; the implementation is split by topic:
data -> model -> train -> curvature -> eigen -> subspace -> estimates -> plots).
"""

from .errors import ConfigError, DataError, DataNotFoundError, JaxlandError, NumericalError, TrainingError
from .data import DATASETS, NORMALIZATIONS, Dataset, load_dataset, normalize_images, read_idx
from .model import ACTIVATIONS, MLP, Layer, MLPConfig, accuracy, mean_loss, per_sample_losses, reference_mlp
from .train import TrainResult, load_params, save_params, train, train_epoch
from .curvature import dense_hessian, hessian_batch_matvec, hessian_matvec, hvp, hvp_batch, loss_and_grad, sharded_hvp
from .sharding import auto_chunk, device_mesh, initialize_distributed, is_main_process, map_rows
from .io import atomic_write_bytes, atomic_write_text, run_metadata, write_json, write_npz
from .cache import cached_train, default_cache_dir

# -- eigen (issue 3)
from .eigen import EigResult, block_lanczos, dense_eigh, hessian_eigenpairs, hessian_eigenpairs_batch, lanczos, lobpcg, power_iteration, top_eigenpairs

# -- subspace / estimates (issue 4)
from .subspace import Subspace, hessian_subspace, normalize_filters, random_directions
from .estimates import (
    CumulativeCurvature,
    DeltaResult,
    LossDifferenceResult,
    StreamPlan,
    SubspaceCurvature,
    SurfaceResult,
    TheoryResult,
    cumulative_curvature,
    cumulative_means,
    delta_from_losses,
    delta_monte_carlo,
    draw_thetas,
    loss_differences,
    loss_increments,
    loss_surface,
    moving_mean,
    per_sample_loss_matrix,
    stream_plan,
    subspace_curvature,
    sufficient_k,
    theory_delta,
    theory_delta_eigensolver,
)

__version__ = "0.1.0"
from .plots import save_figure, ema, plot_spectrum, plot_delta, plot_surfaces, plot_theory_vs_empirical, plot_loss_difference, plot_bound_vs_measured, plot_sufficient_k, plot_online_stop
from .report import write_report

# spectrum
from .spectrum import DChoice, Extremes, SpectralDensity, TraceEstimate, bottom_eigenpairs, choose_d, density_moments, extreme_eigenvalues, hessian_trace, positive_trace, smooth_density, spectral_density
from .plots_spectrum import plot_spectral_density
