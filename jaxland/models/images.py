"""Constructor checks and pooling shared by the shipped modules (:mod:`~jaxland.models.architectures`, :mod:`~jaxland.models.vit`, :mod:`~jaxland.models.gpt`)."""

from __future__ import annotations

from flax import nnx

from ..errors import ConfigError

__all__ = ["check_input_shape", "check_int", "check_images", "avg_pool2"]


def check_input_shape(input_shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(
            f"input_shape must be (H, W, C) with three positive ints (images are channels-last), "
            f"got {input_shape!r}; e.g. (28, 28, 1) for MNIST or (32, 32, 3) for CIFAR-10"
        )
    return shape


def check_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_images(x, input_shape, name: str):
    if x.ndim != 4 or tuple(x.shape[1:]) != input_shape:
        raise ConfigError(
            f"{name} expects images of shape (n, {', '.join(map(str, input_shape))}) (channels last), "
            f"got {tuple(x.shape)}; reshape the inputs (load_dataset(..., flatten=False)) or build the "
            f"model with input_shape={tuple(x.shape[1:])}"
        )


def avg_pool2(x):
    """2x2 average pooling, stride 2 (odd trailing rows/columns are dropped, as in torch)."""
    return nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")
