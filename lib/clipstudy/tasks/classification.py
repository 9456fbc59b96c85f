"""The classifier task: the audited article's CNN on MNIST, cross-entropy, accuracy targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipstudy.data import mnist
from clipstudy.data.split import Split
from clipstudy.lazy_tf import keras, tf
from clipstudy.tasks.base import FailureRule, TaskSpec, check_size

ACCURACY_TARGETS = (0.98, 0.99)
#: Below this test accuracy a classifier has collapsed (chance is 0.1).
COLLAPSED_ACCURACY = 0.2


def seed_cnn(input_shape=(28, 28, 1), num_classes: int = 10):
    """The audited article's MNIST network, layer for layer (225,034 parameters).

    Conv2D(32, 3, relu) → MaxPool(2) → Conv2D(64, 3, relu) → MaxPool(2) → Flatten →
    Dense(128, relu) → Dense(10, softmax). Trained with sparse categorical cross-entropy.
    """
    layers = keras.layers
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


def forward_flops(model) -> int:
    """Multiply-adds × 2 of one example's forward pass through the model's Conv2D and Dense layers
    (biases, activations and pooling, which add well under 1%, are left out)."""
    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * layer.input.shape[-1] * c_out
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def training_step_flops(model, batch_size: int) -> int:
    """Approximate FLOPs of one training step: forward and backward (≈ 3× forward) for the batch."""
    return 3 * batch_size * forward_flops(model)


def prepare_images(x: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) digits to float32 (n, 28, 28, 1) in [0, 1], as the article does."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    return x.astype(np.float32, copy=False)


class ClassificationTask:
    """Sparse-label classification: cross-entropy loss, accuracy, steps to 98% and 99% test accuracy."""

    name = "classifier"
    score_name = "accuracy"
    metric_names = ("test_loss", "test_accuracy")
    summary_keys = (
        "final_train_loss",
        "final_test_loss",
        "final_test_accuracy",
        "best_test_accuracy",
        "steps_to_98",
        "steps_to_99",
    )
    eval_batch_size = 1000

    def __init__(self):
        loss = keras.losses.get("sparse_categorical_crossentropy")
        self._per_example = loss.call if isinstance(loss, keras.losses.Loss) else loss

    def build_model(self):
        return seed_cnn()

    def load_data(self) -> tuple[Split, Split]:
        (x_train, y_train), (x_test, y_test) = mnist.load_mnist()
        return Split(x_train, y_train), Split(x_test, y_test)

    def prepare(self, split: Split):
        return prepare_images(split.x), np.asarray(split.y).astype(np.int32)

    def prepare_test(self, split: Split):
        return self.prepare(split)

    def per_example_loss(self, y, pred):
        return self._per_example(y, pred)

    def batch_score(self, y, pred):
        """The number of correct predictions in the batch."""
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(pred, -1, output_type=tf.int32), y), tf.float32))

    def evaluate(self, predict, x, y, batch_size) -> dict[str, float]:
        total_loss = total_correct = 0.0
        for start in range(0, len(x), batch_size):
            pred = predict(x[start : start + batch_size])
            yb = y[start : start + batch_size]
            total_loss += float(tf.reduce_sum(self.per_example_loss(yb, pred)))
            total_correct += float(self.batch_score(yb, pred))
        return {"test_loss": total_loss / len(x), "test_accuracy": total_correct / len(x)}

    def targets(self) -> dict[str, tuple[str, float]]:
        return {f"steps_to_{round(t * 100)}": ("test_accuracy", t) for t in ACCURACY_TARGETS}

    def final_metrics(self, row) -> dict[str, float]:
        return {"final_test_loss": float(row["test_loss"]), "final_test_accuracy": float(row["test_accuracy"])}

    #: Diverged; or collapsed: test accuracy near chance, or the training loss still at its start.
    failure = FailureRule("test accuracy", "final_test_accuracy", COLLAPSED_ACCURACY)

    def write_artifacts(self, directory: Path) -> list[Path]:
        return []


def _check(config) -> None:
    if config.dataset is not None:
        raise ValueError(f"dataset={config.dataset!r} is invalid for the classifier (MNIST itself); leave it unset")
    if config.task_params:
        raise ValueError(f"task_params={dict(config.task_params)!r} is invalid; the classifier takes none")
    n_train = mnist.ARRAY_SHAPES["x_train"][0]
    check_size("validation", config.validation, n_train - 1)
    check_size("train_subset", config.train_subset, n_train - (config.validation or 0))
    check_size("test_subset", config.test_subset, mnist.ARRAY_SHAPES["x_test"][0])


SPEC = TaskSpec(
    name="classifier",
    summary="the audited article's CNN on MNIST (60,000 training, 10,000 test images), cross-entropy",
    make=lambda config: ClassificationTask(),
    train_pool=lambda config: mnist.ARRAY_SHAPES["x_train"][0] - (config.validation or 0),
    test_pool=lambda config: mnist.ARRAY_SHAPES["x_test"][0],
    seconds_per_example=0.08 / 128,
    check=_check,
    primary_metric="final_test_accuracy",
    summary_keys=ClassificationTask.summary_keys,
    curve_metrics=("train_loss", "test_loss", "test_accuracy"),
)
