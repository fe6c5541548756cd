"""Stage 2, models: what a network is to jaxland.

A :class:`Model` is a hashable description (a static ``jit`` argument) with a
pure ``apply(w, x)`` on a flat parameter vector ``w`` and a per-sample loss
``l_i(w)``. :func:`as_model` wraps any Flax NNX module or pure function;
:class:`MLPConfig` is the papers' MLP; :func:`build_model` builds the shipped
architectures (LeNet-5, ResNet, ViT, GPT). Language models
(:func:`as_language_model`, ``build_model("gpt", ...)``) take sequences as
samples, with per-sample losses computed in memory-bounded chunks. A new
architecture or loss touches only this stage.
"""

from .architectures import ARCHITECTURES, MODEL_NAMES, LeNet5, ResNet, ViT, build_model, flops_per_sample
from .base import LOSSES, Model, as_model, cross_entropy, mse
from .functions import accuracy, mean_loss, per_sample_losses, prefix_mean_loss
from .gpt import GPT, gpt_model, gpt_num_params
from .mlp import ACTIVATIONS, MLP, Layer, MLPConfig, reference_mlp
from .sequence import SequenceModel, as_language_model
from .sequence_loss import IGNORE_INDEX, mask_targets, sequence_cross_entropy

__all__ = [
    "Model", "as_model", "LOSSES", "cross_entropy", "mse", "per_sample_losses", "mean_loss", "prefix_mean_loss", "accuracy",
    "MLP", "MLPConfig", "Layer", "ACTIVATIONS", "reference_mlp",
    "ARCHITECTURES", "MODEL_NAMES", "LeNet5", "ResNet", "ViT", "build_model", "flops_per_sample",
    "GPT", "gpt_model", "gpt_num_params", "SequenceModel", "as_language_model", "IGNORE_INDEX", "mask_targets",
    "sequence_cross_entropy",
]
