"""Image classifiers as Flax NNX modules: a LeNet-5 CNN, a CIFAR-style ResNet and a small ViT (:mod:`jaxland.models.vit`), and the registry.

Every module takes images ``x`` of shape ``(n, H, W, C)`` (float32, channels last)
and returns logits ``(n, num_classes)``. Each one is a pure function of its
``nnx.Param`` leaves and, for :class:`ResNet`, of its stored BatchNorm statistics
(``nnx.BatchStat``): there is no Dropout, BatchNorm runs in inference mode
(``use_running_average=True``) and attention is deterministic, so a call never
changes the module and the loss of one sample never depends on the other
samples of the batch.

Parameter counts with the defaults (28x28x1 inputs, 10 classes), and the
forward cost per image from :func:`flops_per_sample`:

=========  ==========  ==========
module     parameters  MFLOP/image
=========  ==========  ==========
LeNet5         61,706        0.83
ResNet         19,810        4.73
ViT            72,074        2.48
=========  ==========  ==========

FLOPs count 2 per multiply-add of every convolution, dense layer and attention
matmul (``QK^T`` and ``AV``); elementwise work (activations, normalisation,
pooling, softmax, residual adds) is not counted; XLA's cost analysis of the
compiled forward pass (which counts it) differs from these figures by under 8%.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from ..errors import ConfigError
from .mlp import MLPConfig
from .base import Model, as_model
from .gpt import gpt_model
from .images import avg_pool2 as _avg_pool2, check_images as _check_images, check_input_shape as _check_input_shape, check_int as _check_int
from .vit import ViT

__all__ = ["LeNet5", "ResNet", "ViT", "ARCHITECTURES", "flops_per_sample", "build_model", "MODEL_NAMES"]

MODEL_NAMES = ("mlp", "lenet5", "resnet", "vit")


# --------------------------------------------------------------------------- LeNet-5


class LeNet5(nnx.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and average pooling.

    ``conv 6@5x5 -> relu -> avgpool 2 -> conv 16@5x5 VALID -> relu -> avgpool 2 ->
    flatten -> dense 120 -> relu -> dense 84 -> relu -> dense num_classes``.

    ReLU replaces the original tanh: it trains faster with Adam at the paper's
    learning rate, and it is what the papers' MLPs use. The first convolution
    is SAME-padded for inputs smaller than 32x32 (28x28 MNIST keeps 28x28 maps)
    and VALID for 32x32 and larger, as in the original; ``conv1_padding`` overrides.
    Parameters: 61,706 for (28, 28, 1) and 62,006 for (32, 32, 3) with 10 classes
    (both have 16x5x5 = 400 features after the second pooling).
    """

    def __init__(self, input_shape=(28, 28, 1), num_classes: int = 10, *, conv1_padding: str | None = None, rngs: nnx.Rngs):
        h, w, c = self.input_shape = _check_input_shape(input_shape)
        self.num_classes = _check_int("num_classes", num_classes)
        if conv1_padding is None:
            conv1_padding = "SAME" if min(h, w) < 32 else "VALID"
        if conv1_padding not in ("SAME", "VALID"):
            raise ConfigError(f"conv1_padding must be 'SAME', 'VALID' or None (automatic), got {conv1_padding!r}")
        self.conv1_padding = conv1_padding
        side = lambda s: ((s if conv1_padding == "SAME" else s - 4) // 2 - 4) // 2
        fh, fw = side(h), side(w)
        if fh < 1 or fw < 1:
            raise ConfigError(
                f"input_shape {self.input_shape} is too small for LeNet5 (two 5x5 convolutions and two 2x2 "
                f"poolings need H, W >= {12 if conv1_padding == 'SAME' else 16} with conv1_padding={conv1_padding!r}); "
                f"use larger images or conv1_padding='SAME'"
            )
        self.conv1 = nnx.Conv(c, 6, (5, 5), padding=conv1_padding, rngs=rngs)
        self.conv2 = nnx.Conv(6, 16, (5, 5), padding="VALID", rngs=rngs)
        self.fc1 = nnx.Linear(16 * fh * fw, 120, rngs=rngs)
        self.fc2 = nnx.Linear(120, 84, rngs=rngs)
        self.fc3 = nnx.Linear(84, self.num_classes, rngs=rngs)

    def __call__(self, x):
        _check_images(x, self.input_shape, "LeNet5")
        x = _avg_pool2(nnx.relu(self.conv1(x)))
        x = _avg_pool2(nnx.relu(self.conv2(x)))
        x = x.reshape(x.shape[0], -1)  # (h, w, c) order
        x = nnx.relu(self.fc1(x))
        x = nnx.relu(self.fc2(x))
        return self.fc3(x)

    @staticmethod
    def flops(input_shape=(28, 28, 1), num_classes: int = 10, *, conv1_padding: str | None = None) -> int:
        h, w, c = _check_input_shape(input_shape)
        pad = conv1_padding or ("SAME" if min(h, w) < 32 else "VALID")
        h1, w1 = (h, w) if pad == "SAME" else (h - 4, w - 4)
        h2, w2 = h1 // 2 - 4, w1 // 2 - 4
        feats = 16 * (h2 // 2) * (w2 // 2)
        macs = h1 * w1 * 6 * 25 * c + h2 * w2 * 16 * 25 * 6 + feats * 120 + 120 * 84 + 84 * num_classes
        return 2 * macs


# --------------------------------------------------------------------------- ResNet


def _bn(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    # Inference mode: the statistics are constants of the model, never updated by a call.
    return nnx.BatchNorm(features, use_running_average=True, rngs=rngs)


def _conv3x3(cin: int, cout: int, stride: int, rngs: nnx.Rngs) -> nnx.Conv:
    # Symmetric padding 1 (as torch's padding=1): flax's "SAME" pads (0, 1) at stride 2.
    return nnx.Conv(cin, cout, (3, 3), strides=stride, padding=((1, 1), (1, 1)), use_bias=False, rngs=rngs)


class BasicBlock(nnx.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is a 1x1 conv + BN when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = _conv3x3(cin, cout, stride, rngs)
        self.bn1 = _bn(cout, rngs)
        self.conv2 = _conv3x3(cout, cout, 1, rngs)
        self.bn2 = _bn(cout, rngs)
        if stride != 1 or cin != cout:
            self.proj_conv = nnx.Conv(cin, cout, (1, 1), strides=stride, padding="VALID", use_bias=False, rngs=rngs)
            self.proj_bn = _bn(cout, rngs)
        else:
            self.proj_conv = self.proj_bn = None

    def __call__(self, x):
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.proj_conv is None else self.proj_bn(self.proj_conv(x))
        return nnx.relu(out + short)


@nnx.jit
def _batch_stats_after_call(module, x):
    module(x)
    return nnx.state(module, nnx.BatchStat)


class ResNet(nnx.Module):
    """CIFAR-style ResNet-(6n+2) (He et al. 2016, section 4.2) with BatchNorm in inference mode.

    ``3x3 conv (width) -> BN -> relu -> 3 stages of n basic blocks (widths width,
    2 width, 4 width; stride 2 at the first block of stages 2 and 3, 1x1 conv + BN
    projection shortcut where the shape changes) -> global average pool -> dense``.
    ``depth`` = 6n + 2 (8 -> n = 1, 20 -> n = 3). Convolutions have no bias (BN
    follows each). Works for any H, W >= 1; 28x28 maps go 28 -> 14 -> 7, 32x32
    ones 32 -> 16 -> 8.

    Parameters with 10 classes (BN scale and bias count as parameters; BN means
    and variances do not): 19,810 for the default depth 8, width 8 on (28, 28, 1);
    19,954 on (32, 32, 3); 77,754 at width 16; 68,642 at depth 20, width 8.

    BatchNorm statistics are ``nnx.BatchStat`` variables used as constants (so
    ``L_k`` stays a mean of per-sample losses). They start at mean 0, variance 1,
    which makes each BN a per-channel affine map. To hold other statistics:
    :meth:`batch_stats` / :meth:`set_batch_stats` read and write them (e.g. ones
    trained elsewhere), and :meth:`calibrate_batch_stats` sets them to the
    statistics of a batch of inputs. Calling ``module.train()`` would switch BN to
    batch statistics; do not, the numerical code assumes inference mode.
    """

    def __init__(self, input_shape=(28, 28, 1), num_classes: int = 10, *, depth: int = 8, width: int = 8, rngs: nnx.Rngs):
        _, _, c = self.input_shape = _check_input_shape(input_shape)
        self.num_classes = _check_int("num_classes", num_classes)
        _check_int("depth", depth, 8)
        if (depth - 2) % 6:
            raise ConfigError(f"depth must be 6n + 2 (8, 14, 20, 32, ...) for a CIFAR ResNet, got {depth}; e.g. depth=8 or depth=20")
        self.depth, self.width = depth, _check_int("width", width)
        n = (depth - 2) // 6
        self.stem_conv = _conv3x3(c, width, 1, rngs)
        self.stem_bn = _bn(width, rngs)
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (stage > 0 and i == 0) else 1, rngs=rngs))
                cin = cout
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(cin, self.num_classes, rngs=rngs)

    def __call__(self, x):
        _check_images(x, self.input_shape, "ResNet")
        x = nnx.relu(self.stem_bn(self.stem_conv(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(axis=(1, 2)))

    # -- the stored BatchNorm statistics
    def batch_stats(self) -> nnx.State:
        """The BatchNorm means and variances (``nnx.BatchStat``), as an ``nnx.State``."""
        return nnx.state(self, nnx.BatchStat)

    def set_batch_stats(self, stats: nnx.State) -> None:
        """Replace the BatchNorm statistics by ``stats`` (same structure and shapes as :meth:`batch_stats`)."""
        mine = jax.tree.map(lambda a: tuple(a.shape), self.batch_stats())
        theirs = jax.tree.map(lambda a: tuple(a.shape), stats)
        if jax.tree.structure(mine) != jax.tree.structure(theirs) or mine != theirs:
            raise ConfigError(
                "stats must have the structure and shapes of module.batch_stats() (one mean and one var per "
                "BatchNorm); build them from batch_stats() of a ResNet with the same depth and width"
            )
        if any(bool(jnp.any(jnp.asarray(v[...]) < 0)) for path, v in nnx.to_flat_state(stats) if path[-1] == "var"):
            raise ConfigError("stats has a negative BatchNorm variance; variances must be >= 0")
        nnx.update(self, stats)

    def calibrate_batch_stats(self, x) -> None:
        """Set every BatchNorm's statistics to those of its inputs when the network sees the batch ``x``.

        Layer by layer, mean and (biased) variance over ``(n, H, W)`` of the
        activations entering that BN, with the earlier BNs already calibrated; so
        afterwards the inference-mode output on ``x`` equals the train-mode
        (batch-statistics) output on ``x``. Deterministic; a function of the
        current parameters and ``x`` only. Runs as one compiled program on a copy.
        """
        train = nnx.clone(self)
        for _, m in nnx.iter_modules(train):
            if isinstance(m, nnx.BatchNorm):
                m.use_running_average, m.momentum = False, 0.0  # momentum 0: running stats = batch stats
        nnx.update(self, _batch_stats_after_call(train, jnp.asarray(x, jnp.float32)))

    @staticmethod
    def flops(input_shape=(28, 28, 1), num_classes: int = 10, *, depth: int = 8, width: int = 8) -> int:
        h, w, c = _check_input_shape(input_shape)
        n = (depth - 2) // 6
        macs = h * w * 9 * c * width
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                h, w = (h - 1) // stride + 1, (w - 1) // stride + 1
                macs += h * w * 9 * (cin + cout) * cout
                if stride != 1 or cin != cout:
                    macs += h * w * cin * cout
                cin = cout
        return 2 * (macs + cin * num_classes)


# --------------------------------------------------------------------------- registry

ARCHITECTURES: dict[str, type[nnx.Module]] = {"lenet5": LeNet5, "resnet": ResNet, "vit": ViT}


def flops_per_sample(module_name: str, **kwargs) -> int:
    """Forward FLOPs per image of ``ARCHITECTURES[module_name](**kwargs)``.

    2 per multiply-add of convolutions, dense layers and attention matmuls;
    elementwise operations are not counted (see the module docstring).
    ``kwargs`` are the constructor's keyword arguments without ``rngs``.
    """
    if module_name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {module_name!r}; choose one of {sorted(ARCHITECTURES)}")
    # Build it abstractly (no arrays allocated) so that bad arguments raise the constructor's ConfigError.
    nnx.eval_shape(lambda: ARCHITECTURES[module_name](**kwargs, rngs=nnx.Rngs(0)))
    return int(ARCHITECTURES[module_name].flops(**kwargs))


def build_model(name: str = "mlp", input_shape=None, num_classes: int | None = None, *, loss="cross_entropy", **kwargs) -> Model:
    """A jaxland model of a shipped architecture, ready for every estimate.

    ``name``: ``"mlp"`` (flattened inputs; ``hidden=(256, 256)``,
    ``activation="relu"``, ``use_bias=True``), ``"lenet5"``, ``"resnet"``
    (``depth``, ``width``) or ``"vit"`` (``patch_size``, ``dim``, ``depth``,
    ``heads``, ``mlp_dim``, ``pool``); ``kwargs`` go to the constructor.
    ``input_shape`` is per sample (default (28, 28, 1)): (H, W, C) images for
    the convolutional and attention models (``load_dataset(..., flatten=False)``);
    the MLP takes ``prod(input_shape)`` features; ``num_classes`` defaults to 10.
    The model's ``spec`` (weight-cache key) holds the name and every argument,
    and ``init(key)`` builds fresh weights.

    ``"gpt"``: the decoder-only transformer of :mod:`jaxland.models.gpt`
    (``vocab_size``, ``context``, ``width``, ``depth``, ``heads``,
    ``tie_weights``, ``chunk_size``; ``input_shape=(context,)`` and
    ``num_classes=vocab_size`` are accepted too), with the loss
    ``"sequence_cross_entropy"`` (see :func:`jaxland.models.gpt_model`).

    Example::

        model = jl.build_model("resnet", (28, 28, 1), 10, depth=8, width=8)
        gpt = jl.build_model("gpt", vocab_size=65, context=64, width=128, depth=4, heads=4)
        w = model.init(jax.random.key(0))
    """
    if name == "gpt":
        return gpt_model(input_shape=input_shape, num_classes=num_classes, loss=loss, **kwargs)
    input_shape = (28, 28, 1) if input_shape is None else input_shape
    num_classes = 10 if num_classes is None else num_classes
    if name == "mlp":
        hidden = tuple(int(h) for h in kwargs.pop("hidden", (256, 256)))
        features = 1
        for s in tuple(input_shape):
            features *= int(s)
        return MLPConfig((features, *hidden, int(num_classes)), loss=loss, **kwargs)
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; choose one of {list(MODEL_NAMES) + ['gpt']}")
    input_shape = _check_input_shape(input_shape)
    factory = functools.partial(ARCHITECTURES[name], input_shape, int(num_classes), **kwargs)
    spec = {"architecture": name, "input_shape": list(input_shape), "num_classes": int(num_classes), **kwargs}
    return as_model(factory, loss=loss, name=name, input_shape=input_shape, spec=spec)
