"""The compiled training step and prediction function of a run, and their reuse by later runs of a process.

Tracing a run's step (the model's forward and backward pass, the clipper, the optimizer's update) is a
visible part of a short run's time (``make bench``'s breakdown measures it: docs/speed.md). A run
that ``train`` is allowed to (``reuse_compiled``: ``run_one``, whose task comes from its config) hands its
compiled functions back when it ends; the next run of the same shape in the process (same task, clipper,
optimizer, data shapes; any seed and learning rate) loads its own start into their variables instead of
tracing them again: its fresh model's weights, a fresh optimizer's slots and learning rate, the clipper's
initial state, its training examples. The functions then compute what they would compute traced anew (the
same graph on the same values: tested bit for bit, ``tests/training/test_loop.py``); the run's own model
receives the trained weights at its end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clipstudy import caches
from clipstudy.lazy_tf import tf

#: Compiled runs kept for a later run of the same shape in this process, the most recent (each holds its
#: model, optimizer and training examples: its last run's, until the next one loads its own). Two, so that a
#: sweep worker whose runs alternate between two tasks or methods keeps both.
MAX_KEPT = 2
_kept = caches.ProcessCache(
    "compiled steps", MAX_KEPT, "compiled training steps of the last runs, by what they depend on"
)


def make_train_step(net, task, clip, optimizer, x_train, y_train, clip_state=None):
    """A ``tf.function(batch, loss_scale, shuffle_labels)`` that does one optimizer step on the
    examples ``batch`` of ``x_train``/``y_train`` and returns the step's record (``steplog.RECORD_FIELDS``).

    The clipper's state lives in non-trainable variables (``clip_state``: made here if not given). A step
    whose loss or gradient is not finite is recorded but not applied, and leaves the clipper's state alone.
    """
    variables = net.trainable_variables
    optimizer.build(variables)
    if clip_state is None:
        clip_state = make_clip_state(clip, variables)

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.bool)]
    )
    def train_step(batch, loss_scale, shuffle_labels):
        x = tf.gather(x_train, batch)
        y = tf.gather(y_train, batch)
        y = tf.cond(shuffle_labels, lambda: tf.roll(y, 1, axis=0), lambda: y)
        with tf.GradientTape() as tape:
            pred = net(x, training=True)
            batch_loss = tf.reduce_mean(task.per_example_loss(y, pred))
            scaled_loss = batch_loss * loss_scale
        grads = tape.gradient(scaled_loss, variables)
        state = {k: v.read_value() for k, v in clip_state.items()}
        # Keras' own norm, which overflows past about 1.8e19: the published runs were made so, and an exploding
        # run stops as diverged at that step (clipping.Clipper; the library's wrapper takes the overflow-safe norm)
        clipped, new_state, stats = clip(grads, variables, state, overflow_safe=False)
        healthy = tf.math.is_finite(batch_loss) & tf.logical_not(stats["nonfinite"])
        if healthy:
            optimizer.apply(clipped, variables)
            for k, v in clip_state.items():
                v.assign(new_state[k])
        record = [
            batch_loss,
            stats["norm_before"],
            stats["norm_after"],
            stats["clipped"],
            stats["threshold"],
            tf.cast(stats["nonfinite"], tf.float32),
            task.batch_score(y, pred),
        ]
        return tf.stack([tf.cast(r, tf.float32) for r in record])

    return train_step


def make_clip_state(clip, variables) -> dict:
    return {k: tf.Variable(v, trainable=False, name=f"clip_{k}") for k, v in clip.init(variables).items()}


def make_predict(net, input_shape):
    """``net`` in inference mode, compiled once for batches of ``input_shape`` (without the batch axis)."""

    @tf.function(input_signature=[tf.TensorSpec([None, *input_shape], tf.float32)])
    def predict(x):
        return net(x, training=False)

    return predict


@dataclass
class Compiled:
    """A run's compiled step and prediction function, with every variable they read and write."""

    key: tuple | None
    net: Any
    optimizer: Any
    clip_state: dict
    x: Any
    y: Any
    train_step: Callable
    predict: Callable
    input_shape: tuple
    seeded_random: bool | None = None  # whether its functions hold stateful random ops (known once traced)

    def fits(self, net, optimizer, clip, x_train, y_train, input_shape) -> bool:
        """Whether a run's fresh model, optimizer, clipper and data have the shapes this one was traced for."""
        ours = [*self.net.variables, *self.clip_state.values(), self.x, self.y]
        theirs = [*net.variables, *clip.init(net.trainable_variables).values(), x_train, y_train]
        return (
            _optimizer_config(optimizer) == _optimizer_config(self.optimizer)
            and tuple(input_shape) == self.input_shape
            and [_shape(v) for v in ours] == [_shape(v) for v in theirs]
        )

    def load(self, net, optimizer, clip, x_train, y_train) -> None:
        """Start a run here: ``net``'s weights, ``optimizer``'s initial slots and rate, the clipper's
        initial state and the run's training examples, each assigned to the variable it stands for."""
        for mine, theirs in zip(self.net.variables, net.variables, strict=True):
            mine.assign(theirs)
        optimizer.build(self.net.trainable_variables)  # its fresh slots, for these variables
        for mine, theirs in zip(self.optimizer.variables, optimizer.variables, strict=True):
            mine.assign(theirs)
        for k, value in clip.init(self.net.trainable_variables).items():
            self.clip_state[k].assign(value)
        self.x.assign(x_train)
        self.y.assign(y_train)

    def finish(self, net) -> None:
        """Give the trained weights to the run's own model ``net``; keep this for the next run of its key,
        unless its functions draw from TensorFlow's global seed (their op seeds were fixed when traced)."""
        if self.net is net:
            return
        for mine, theirs in zip(net.variables, self.net.variables, strict=True):
            mine.assign(theirs)
        if self.seeded_random is None:
            self.seeded_random = any(_draws_from_global_seed(f) for f in (self.train_step, self.predict))
        if self.seeded_random:
            return
        _kept.put(self.key, self)  # the oldest dropped beyond MAX_KEPT


def _optimizer_config(optimizer) -> dict:
    config = dict(optimizer.get_config())
    config.pop("name", None)
    config.pop("learning_rate", None)
    return {"class": type(optimizer), **config}


def _shape(v) -> tuple:
    return tuple(v.shape), str(getattr(v.dtype, "name", v.dtype))


def _draws_from_global_seed(function) -> bool:
    """Whether the traced ``function`` (a ``tf.function`` with an input signature) or a function it calls holds
    a stateful random op, whose seeds TensorFlow fixed from its global seed at tracing."""
    graph = function.get_concrete_function().graph.as_graph_def()
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    return any("seed2" in n.attr for n in nodes)


def compiled_step_kept(key) -> bool:
    """Whether a finished run of ``key`` left its compiled functions (then ``compile_run`` needs no spare model)."""
    return key in _kept


def compile_run(net, task, clip, optimizer, x_train, y_train, input_shape, key=None, spare=None, seed=None) -> Compiled:
    """The compiled functions of a run, started at ``net``'s weights, ``optimizer``'s state, the clipper's
    initial state and ``x_train``/``y_train``.

    With ``key``, a finished run of that key left them (if they fit), or they are traced for ``spare`` (an
    unused model of ``net``'s architecture, built before the run was seeded) and kept by ``Compiled.finish``
    for the next run. Without ``key`` (or a spare), they are traced for ``net`` and ``optimizer`` themselves.
    ``seed``: TensorFlow's global seed is still to be set (to it) if they are traced after all.
    """
    if key is not None:
        kept = _kept.pop(key)
        if kept is not None and kept.fits(net, optimizer, clip, x_train, y_train, input_shape):
            kept.load(net, optimizer, clip, x_train, y_train)
            return kept
    if seed is not None:
        tf.random.set_seed(seed)  # the run counted on a kept step that another thread took, or that did not fit
    keep = key is not None and spare is not None
    target = spare if keep else net
    target_optimizer = type(optimizer).from_config(optimizer.get_config()) if keep else optimizer
    x = tf.Variable(x_train, trainable=False, name="x_train")
    y = tf.Variable(y_train, trainable=False, name="y_train")
    clip_state = make_clip_state(clip, target.trainable_variables)
    compiled = Compiled(
        key if keep else None,
        target,
        target_optimizer,
        clip_state,
        x,
        y,
        make_train_step(target, task, clip, target_optimizer, x, y, clip_state),
        make_predict(target, input_shape),
        tuple(input_shape),
    )
    if keep:
        compiled.load(net, optimizer, clip, x_train, y_train)
    return compiled


def forget_compiled() -> int:
    """Drop every kept compiled run of this process; returns how many there were."""
    n = len(_kept)
    _kept.clear()
    return n
