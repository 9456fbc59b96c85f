"""AdaGC and quantile tracking against NumPy transcriptions of their upstream code, on a 320-step stream of
gradients with spikes; and norms in float32 whatever the gradients' dtype.

The transcriptions follow, line by line, the authors' AdaGC release (lishuai-97/AdaGC: ``AdaGC.clip_by_norm``
in its Megatron patch) and TF-Privacy's ``QuantileEstimatorQuery`` with ``geometric_update=True`` and no noise
(the record clipped with the current estimate, as ``QuantileAdaptiveClipSumQuery`` does). They are written
from that code, not from ours."""

import math

import numpy as np
import pytest
import tensorflow as tf

from clipstudy import clipping

SHAPES = [(3, 3, 2, 4), (4,), (36, 5), (5,)]
STEPS = 320
SPIKES = {40: 50.0, 41: 50.0, 150: 1e3, 151: 0.01, 260: 200.0}


def stream(seed=7):
    """Gradients whose scale drifts down slowly, with spikes (and one collapse) at ``SPIKES``."""
    rng = np.random.default_rng(seed)
    for t in range(STEPS):
        scale = 2.0 / math.sqrt(1 + t / 20) * SPIKES.get(t, 1.0)
        # one tensor spikes alone at step 200: per-tensor methods should catch what a global one may not
        yield [
            (rng.normal(size=s) * scale * (30.0 if (t == 200 and i == 2) else 1.0)).astype(np.float32)
            for i, s in enumerate(SHAPES)
        ]


class NumpyAdaGC:
    """The release's ``AdaGC`` (unsharded), for one process: ``steps`` counts calls; for ``steps <=
    start_clip_steps`` global clipping with ``max_norm / (total_norm + eps)`` and the running minimum of each
    tensor's clipped norm; afterwards per-tensor clipping against ``clip_ratio * avg`` and the EMA update."""

    def __init__(self, clip_ratio, beta, max_norm, start_clip_steps, eps):
        self.clip_ratio, self.beta, self.max_norm = clip_ratio, beta, max_norm
        self.start, self.eps = start_clip_steps, eps
        self.steps = 0
        self.state = {}

    def __call__(self, grads):
        grads = [g.astype(np.float64).copy() for g in grads]
        self.steps += 1
        total_norm = math.sqrt(sum(float(np.sum(g**2)) for g in grads))
        if self.steps <= self.start:
            clip_coeff = self.max_norm / (total_norm + self.eps)
            if clip_coeff < 1.0:
                grads = [g * clip_coeff for g in grads]
            for i, g in enumerate(grads):
                norm_value = float(np.linalg.norm(g))
                if i not in self.state:
                    self.state[i] = norm_value
                if norm_value < self.state[i]:
                    self.state[i] = norm_value
        else:
            for i, g in enumerate(grads):
                norm_value = float(np.linalg.norm(g))
                if i not in self.state:
                    self.state[i] = norm_value
                avg = self.state[i]
                if norm_value > self.clip_ratio * avg:
                    grads[i] = g * ((self.clip_ratio * avg) / (norm_value + self.eps))
                    norm_value = self.clip_ratio * avg
                self.state[i] = avg * self.beta + norm_value * (1.0 - self.beta)
        return grads


class NumpyQuantile:
    """TF-Privacy's geometric quantile estimator without noise, one record (the global norm) per round."""

    def __init__(self, initial_estimate, target_quantile, learning_rate):
        self.estimate = np.float32(initial_estimate)
        self.target, self.lr = np.float32(target_quantile), np.float32(learning_rate)

    def __call__(self, grads):
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
        clip = float(self.estimate)
        out = [g * (clip / max(norm, clip)) for g in grads]  # tf.clip_by_global_norm of the record
        below = np.float32(norm <= clip) - np.float32(0.5) + np.float32(0.5)
        below = min(np.float32(1.0), max(np.float32(0.0), below))
        update = self.lr * (below - self.target)
        self.estimate = np.float32(self.estimate * np.exp(-update, dtype=np.float32))
        return out, clip


def run_ours(clipper, compiled=True):
    variables = [tf.Variable(np.ones(s, np.float32)) for s in SHAPES]
    state = clipper.init(variables)
    step = tf.function(lambda g, s: clipper(g, variables, s)) if compiled else (lambda g, s: clipper(g, variables, s))
    for grads in stream():
        out, state, stats = step([tf.constant(g) for g in grads], state)
        yield [o.numpy() for o in out], state, {k: float(v) for k, v in stats.items()}


@pytest.mark.parametrize("params", [{}, {"warmup_steps": 30, "lambda_rel": 1.1, "beta": 0.9, "lambda_abs": 3.0}])
def test_adagc_matches_the_releases_rule_on_a_spiky_stream(params):
    ours = clipping.get("adagc", **params)
    ref = NumpyAdaGC(ours.lambda_rel, ours.beta, ours.lambda_abs, ours.warmup_steps, ours.eps)
    clipped_steps, gamma_before = 0, None
    for t, (grads, (out, state, stats)) in enumerate(zip(stream(), run_ours(ours))):
        expected = ref(grads)
        for o, e in zip(out, expected):
            np.testing.assert_allclose(o, e, rtol=2e-5, atol=1e-7, err_msg=f"step {t}")
        gamma = [ref.state[i] for i in range(len(SHAPES))]
        np.testing.assert_allclose(state["gamma"].numpy(), gamma, rtol=2e-5, err_msg=f"step {t}")
        clipped_steps += stats["clipped"] > 0
        if t >= ours.warmup_steps and gamma_before is not None:  # the bound of the references going in
            bound = math.sqrt(sum((ours.lambda_rel * g) ** 2 for g in gamma_before))
            assert stats["threshold"] == pytest.approx(bound, rel=1e-5)
        gamma_before = gamma
    assert int(state["count"]) == STEPS
    assert clipped_steps > 10  # the stream does make it clip


def test_adagc_cuts_a_spike_in_one_tensor_back_to_that_tensors_own_scale():
    # lambda_abs above the stream's norms: warm-up leaves the gradients alone, so each reference starts at its
    # tensor's own scale (with the default 1.0 the warm-up minimum starts every reference ~30 times too low)
    clipper = clipping.get("adagc", warmup_steps=30, lambda_abs=1e3)
    for t, (grads, (out, _, _)) in enumerate(zip(stream(), run_ours(clipper))):
        if t == 200:
            kept = [np.linalg.norm(o) / np.linalg.norm(g) for o, g in zip(out, grads)]
            assert kept[2] < 0.1  # the tensor that spiked 30-fold
            assert min(kept[0], kept[1], kept[3]) > 0.5  # the others keep most of theirs
            break


@pytest.mark.parametrize("params", [{}, {"initial_threshold": 5.0, "target_quantile": 0.9, "learning_rate": 0.05}])
def test_quantile_matches_tf_privacys_geometric_update_on_a_spiky_stream(params):
    ours = clipping.get("quantile", **params)
    ref = NumpyQuantile(ours.initial_threshold, ours.target_quantile, ours.learning_rate)
    norms, thresholds = [], []
    for t, (grads, (out, state, stats)) in enumerate(zip(stream(), run_ours(ours))):
        expected, clip = ref(grads)
        assert stats["threshold"] == pytest.approx(clip, rel=1e-6), f"step {t}"
        for o, e in zip(out, expected):
            np.testing.assert_allclose(o, e, rtol=2e-5, atol=1e-7, err_msg=f"step {t}")
        assert float(state["threshold"]) == pytest.approx(float(ref.estimate), rel=1e-6)
        norms.append(stats["norm_before"])
        thresholds.append(clip)
    # It tracks its quantile: over the last 200 steps about that share of norms fell below the threshold.
    below = np.mean(np.array(norms[-200:]) <= np.array(thresholds[-200:]))
    assert below == pytest.approx(ours.target_quantile, abs=0.1)


@pytest.mark.parametrize("method", ["global_norm", "norm", "agc", "adagc", "quantile", "zclip"])
def test_norms_are_computed_in_float32_for_float16_gradients(method):
    """300² overflows float16 (max 65504): a float16 norm reads inf and the step would be called non-finite."""
    variables = [tf.Variable(np.ones((2,), np.float16))]
    grads = [tf.constant([180.0, 240.0], tf.float16)]  # norm 300
    params = {"global_norm": {"threshold": 1.0}, "norm": {"threshold": 1.0}, "quantile": {"initial_threshold": 1.0}}
    clipper = clipping.get(method, **params.get(method, {}))
    out, _, stats = clipper(grads, variables, clipper.init(variables))
    assert float(stats["norm_before"]) == pytest.approx(300.0)
    assert not bool(stats["nonfinite"])
    assert out[0].dtype == tf.float16
    assert np.all(np.isfinite(out[0].numpy()))
    if method in ("global_norm", "norm", "quantile"):
        assert float(np.linalg.norm(out[0].numpy().astype(np.float64))) == pytest.approx(1.0, rel=2e-3)


def test_importing_the_clipping_library_leaves_the_processs_logging_alone(tmp_path):
    """No environment variable, log level or file descriptor is touched by importing and using the core."""
    import subprocess
    import sys

    code = (
        "import os, logging\n"
        "os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)\n"
        "from clipstudy import clipping\n"
        "c = clipping.get('global_norm', threshold=1.0)\n"
        "import tensorflow as tf, absl.logging\n"
        "c([tf.constant([3.0, 4.0])], [tf.Variable([0.0, 0.0])], {})\n"
        "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), tf.get_logger().level, absl.logging.get_verbosity())\n"
    )
    baseline = (
        "import os\n"
        "os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)\n"
        "import tensorflow as tf, absl.logging\n"
        "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), tf.get_logger().level, absl.logging.get_verbosity())\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    # the two imports side by side (each is mostly TensorFlow's start-up)
    ours, plain = (
        subprocess.Popen([sys.executable, "-c", c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for c in (code, baseline)
    )
    (ours_out, ours_err), (plain_out, _) = ours.communicate(timeout=300), plain.communicate(timeout=300)
    assert ours.returncode == 0, ours_err[-2000:]
    assert ours_out.split() == plain_out.split()
