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
