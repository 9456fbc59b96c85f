"""Models of the study."""
from __future__ import annotations

import keras
from keras import layers


def seed_cnn(input_shape=(28, 28, 1), num_classes: int = 10) -> keras.Model:
    """The audited article's MNIST network, layer for layer (225,034 parameters).

    Conv2D(32, 3, relu) → MaxPool(2) → Conv2D(64, 3, relu) → MaxPool(2) → Flatten →
    Dense(128, relu) → Dense(10, softmax). Trained with sparse categorical cross-entropy.
    """
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="seed_cnn",
    )


def forward_flops(model: keras.Model) -> int:
    """Multiply-adds × 2 of one example's forward pass through the model's Conv2D and Dense layers
    (biases, activations and pooling, which add well under 1%, are left out)."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * layer.input.shape[-1] * c_out
        elif isinstance(layer, layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


#: Floating-point operations a clipping method adds per parameter and step, beyond the gradient
#: itself (counted from each rule: norms 2, rescale 1, compare/select 1-2; AutoClip's sort of its
#: history and ZClip's scalar EMA are per step, not per parameter, and left out).
CLIP_FLOPS_PER_PARAMETER = {"none": 0, "value": 3, "norm": 4, "global_norm": 3, "agc": 7, "autoclip": 3, "zclip": 3}


def training_step_flops(model: keras.Model, batch_size: int) -> int:
    """Approximate FLOPs of one training step: forward and backward (≈ 3× forward) for the batch."""
    return 3 * batch_size * forward_flops(model)
