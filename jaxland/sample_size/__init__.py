"""Stage 6, sample size: when Delta_k is small enough to stop collecting data.

Definition 4 of the paper (``K = min{k : Delta_k' < tol for every k' >= k}``),
smoothing helpers, the forecast of K beyond the measured k from a power law
fitted to the tail of Delta_k, with intervals, and the forecast of the
dataset size N* from pilots at several sizes (the landscape changes with N),
beside the learning-curve baseline.
"""

from .dataset_size import DatasetSizeForecast, PilotCost, forecast_dataset_size
from .forecast import KForecast, forecast_sufficient_k, power_law_k
from .learning_curve import LearningCurveForecast, learning_curve_size
from .stopping import ema, moving_mean, sufficient_k

__all__ = ["sufficient_k", "moving_mean", "ema", "KForecast", "forecast_sufficient_k", "power_law_k",
           "DatasetSizeForecast", "PilotCost", "forecast_dataset_size", "LearningCurveForecast", "learning_curve_size"]
