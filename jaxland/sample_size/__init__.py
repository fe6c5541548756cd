"""Stage 6, sample size: when Delta_k is small enough to stop collecting data.

Definition 4 of the paper (``K = min{k : Delta_k' < tol for every k' >= k}``),
smoothing helpers, and the forecast of K beyond the measured k from a power
law fitted to the tail of Delta_k, with intervals.
"""

from .forecast import KForecast, forecast_sufficient_k, power_law_k
from .stopping import ema, moving_mean, sufficient_k

__all__ = ["sufficient_k", "moving_mean", "ema", "KForecast", "forecast_sufficient_k", "power_law_k"]
