"""Stage 7, figures like the papers' (matplotlib, imported on first use of ``jaxland.plots``).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`save_figure`
writes it atomically.
"""

from .forecast import plot_dataset_size, plot_delta_split, plot_forecast_curves, plot_forecast_vs_measured, plot_online_forecast
from .landscape import (plot_bound_vs_measured, plot_delta, plot_loss_difference, plot_online_stop, plot_spectrum,
                        plot_sufficient_k, plot_surfaces, plot_theory_vs_empirical, save_figure)
from .spectrum import plot_spectral_density

__all__ = [
    "save_figure", "plot_spectrum", "plot_delta", "plot_surfaces", "plot_theory_vs_empirical",
    "plot_loss_difference", "plot_bound_vs_measured", "plot_sufficient_k", "plot_online_stop",
    "plot_spectral_density", "plot_forecast_curves", "plot_forecast_vs_measured", "plot_delta_split",
    "plot_online_forecast", "plot_dataset_size",
]
