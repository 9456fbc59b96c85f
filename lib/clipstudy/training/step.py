"""The compiled training step and prediction function of a run."""

from __future__ import annotations

from clipstudy._quiet import tf


def make_train_step(net, task, clip, optimizer, x_train, y_train):
    """A ``tf.function(batch, loss_scale, shuffle_labels)`` that does one optimizer step on the
    examples ``batch`` of ``x_train``/``y_train`` and returns the step's record (``steplog.RECORD_FIELDS``).

    The clipper's state lives in non-trainable variables. A step whose loss or gradient is not
    finite is recorded but not applied, and leaves the clipper's state alone.
    """
    variables = net.trainable_variables
    optimizer.build(variables)
    clip_state = {k: tf.Variable(v, trainable=False, name=f"clip_{k}") for k, v in clip.init(variables).items()}

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
        clipped, new_state, stats = clip(grads, variables, state)
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


def make_predict(net, input_shape):
    """``net`` in inference mode, compiled once for batches of ``input_shape`` (without the batch axis)."""

    @tf.function(input_signature=[tf.TensorSpec([None, *input_shape], tf.float32)])
    def predict(x):
        return net(x, training=False)

    return predict
