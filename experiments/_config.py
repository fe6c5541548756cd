"""Experiment configurations: the settings every experiment shares, hashing, the shared presets.

An experiment's ``Config`` is a frozen dataclass extending :class:`BaseConfig`
whose defaults are the paper's reference configuration (docs/reference.md); its
``validate()`` raises :class:`jaxland.ConfigError` on impossible values, through
the library's own checks where one exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import jaxland as jl
from jaxland.errors import ConfigError, DataError
from jaxland.validate import positive_int

RESULTS_VERSION = 1


# --------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """Settings every experiment shares: data, network, training, seed.

    Defaults are the paper's reference: MNIST train, first 9,984 images
    (156 batches of 64), standard normalisation; MLP 784-256-256-10, ReLU,
    with biases; Adam 1e-3, batch 64, 10 epochs; k counted in batches of 64.
    """

    seed: int = 0
    arch: str = "mlp"  # jaxland.MODEL_NAMES: mlp, lenet5, resnet, vit
    dataset: str = "mnist"
    data_dir: str | None = None
    n_samples: int = 9984
    normalize: str = "standard"
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    use_bias: bool = True
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    k_unit: str = "batches"  # "batches": L_k = mean of the first k batches of 64; "samples": of the first k samples

    def __post_init__(self):
        # the singular spellings are accepted; results and records carry the plural, as DeltaResult.unit does
        plural = {"batch": "batches", "sample": "samples"}.get(self.k_unit)
        if plural:
            object.__setattr__(self, "k_unit", plural)

    def validate(self) -> None:
        positive_fields(self, "n_samples", "epochs", "batch_size")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        canon = str(self.dataset).lower().replace("-", "_")
        if canon not in jl.DATASETS:
            raise DataError(f"unknown dataset {self.dataset!r}; valid names are: {', '.join(jl.DATASETS)}")
        if self.normalize not in jl.NORMALIZATIONS:
            raise ConfigError(f"unknown normalize={self.normalize!r}; choose one of {jl.NORMALIZATIONS}")
        if self.activation not in jl.ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {sorted(jl.ACTIVATIONS)}")
        if self.arch not in jl.MODEL_NAMES:
            raise ConfigError(f"unknown arch {self.arch!r}; choose one of {', '.join(jl.MODEL_NAMES)}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden widths must be positive, got {self.hidden}")
        if self.batch_size > self.n_samples:
            raise ConfigError(f"batch_size={self.batch_size} exceeds n_samples={self.n_samples}")
        if self.k_unit not in ("batches", "samples"):
            raise ConfigError(f"k_unit must be 'batches' or 'samples', got {self.k_unit!r}")
        if self.k_unit == "batches" and self.n_samples // self.batch_size < 3:
            raise ConfigError(f"k_unit='batches' needs at least 3 batches; n_samples={self.n_samples} gives {self.n_samples // self.batch_size}")

    @property
    def samples_per_k(self) -> int | None:
        """Samples per unit of k: ``batch_size`` when k counts batches, else None (k counts samples)."""
        return self.batch_size if self.k_unit == "batches" else None


def positive_fields(cfg, *names):
    """Each named field of ``cfg`` must be a positive integer (the library's check)."""
    for n in names:
        positive_int(n, getattr(cfg, n))


def config_dict(cfg) -> dict:
    return {f.name: (list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v) for f in dataclasses.fields(cfg)}


def config_hash(cfg, extra: Any = None) -> str:
    payload = json.dumps({"cfg": config_dict(cfg), "extra": extra, "v": RESULTS_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]



# Quick mode of every experiment on the paper's reference network: the same
# data and training, so they share one cached w* (and the main job trains it once).
@dataclasses.dataclass(frozen=True)
class HessianDeltaConfig(BaseConfig):
    """Monte Carlo Delta_k on the top-d Hessian directions (hessian_delta, theory_vs_empirical)."""

    d: int = 10
    sigma: float = 1.0
    num_draws: int = 1024
    eig_tol: float = 1e-3
    compare_random: bool = True

    def validate(self) -> None:
        super().validate()
        positive_fields(self, "d")
        jl.validate.check_sigma(self.sigma)
        positive_int("num_draws", self.num_draws, minimum=2)
        if not self.eig_tol > 0:
            raise ConfigError(f"eig_tol must be > 0, got {self.eig_tol}")


QUICK_REFERENCE = dict(n_samples=4096, epochs=5)
TINY_REFERENCE = dict(n_samples=512, epochs=1, hidden=(32,))
