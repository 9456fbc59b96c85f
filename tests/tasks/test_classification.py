"""The classifier task: the article's network, its FLOP count, and its task contract."""

import numpy as np

from clipstudy import tasks
from clipstudy.tasks import Task
from clipstudy.tasks.adding import AddingTask
from clipstudy.tasks.classification import ClassificationTask, forward_flops, seed_cnn
from clipstudy.tasks.detection import DetectionTask


def test_seed_cnn_is_the_articles_network():
    model = seed_cnn()
    # Hand count: conv 3*3*1*32+32, conv 3*3*32*64+64, dense 1600*128+128, dense 128*10+10.
    assert model.count_params() == 320 + 18496 + 204928 + 1290 == 225034
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert [layer.activation.__name__ for layer in model.layers if hasattr(layer, "activation")] == [
        "relu",
        "relu",
        "relu",
        "softmax",
    ]


def test_seed_cnn_outputs_class_probabilities():
    probs = seed_cnn()(np.zeros((2, 28, 28, 1), np.float32)).numpy()
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_forward_flops_match_a_hand_count():
    # 2 x multiply-adds: conv1 26*26*3*3*1*32, conv2 11*11*3*3*32*64, dense 1600*128, dense 128*10.
    assert forward_flops(seed_cnn()) == 2 * (26 * 26 * 9 * 32 + 11 * 11 * 9 * 32 * 64 + 1600 * 128 + 128 * 10)


def test_every_task_implements_the_task_protocol_and_is_found_by_name():
    assert tasks.NAMES == ("adding", "classifier", "detector")
    from clipstudy.training import RunConfig

    for cls in (AddingTask, ClassificationTask, DetectionTask):
        task = tasks.for_config(RunConfig.for_task(cls.name))
        assert type(task) is cls and isinstance(task, Task)
        assert tasks.spec(cls.name).summary_keys == cls.summary_keys
    try:
        tasks.spec("segmenter")
    except ValueError as exc:
        assert "valid choices: adding, classifier, detector" in str(exc)
    else:
        raise AssertionError("an unknown task was accepted")


def test_the_classifier_prepares_uint8_digits_as_float_images_and_int_labels():
    from clipstudy.data.split import Split

    split = Split(np.full((3, 28, 28), 255, np.uint8), np.array([1, 2, 3], np.uint8))
    x, y = ClassificationTask().prepare(split)
    assert x.shape == (3, 28, 28, 1) and x.dtype == np.float32 and x.max() == 1.0
    assert y.dtype == np.int32 and y.tolist() == [1, 2, 3]


FINAL = {"final_test_accuracy": 0.9, "final_train_loss": 0.3}


def test_a_collapsed_classifier_is_a_failure_even_with_a_finite_loss():
    task = ClassificationTask()
    assert task.failure(diverged=False, final=FINAL, loss_start=2.3) is None
    assert task.failure(diverged=True, final=FINAL, loss_start=2.3).startswith("diverged")
    assert "test accuracy 0.110" in task.failure(
        diverged=False, final={**FINAL, "final_test_accuracy": 0.11}, loss_start=2.3
    )
    assert task.failure(diverged=False, final={**FINAL, "final_train_loss": 2.20}, loss_start=2.3026) is None
    assert "no lower than at its start" in task.failure(
        diverged=False, final={**FINAL, "final_train_loss": 2.31}, loss_start=2.3026
    )


def test_a_collapsed_detector_is_a_failure():
    task = DetectionTask()
    ok = {"final_AP50": 0.5, "final_train_loss": 1.0}
    assert task.failure(diverged=False, final=ok, loss_start=5.0) is None
    assert "AP50 0.0001 < 0.01" in task.failure(diverged=False, final={**ok, "final_AP50": 5e-5}, loss_start=5.0)
