"""Clipping telemetry through Keras' own channels: the training logs.

``ClipTelemetry`` adds the ``ClippingOptimizer``'s statistics to the logs every callback after it
reads, so ``History``, ``CSVLogger`` and ``keras.callbacks.TensorBoard`` show them with no code of
their own. Per step (every ``every`` steps), from the last step:

* ``clip_norm_before`` / ``clip_norm_after``: global gradient norm before and after clipping;
* ``clip_threshold``: the threshold in force (NaN while a method has none, e.g. ZClip's warm-up);
* ``clip_fraction``: the share the method clipped (0 or 1 for global methods).

Per epoch, over all of the epoch's steps (exact: the optimizer keeps running sums):
``clip_norm_before`` and ``clip_norm_after`` (means), ``clip_norm_before_max``, ``clip_fraction``
(mean share) over the applied steps, ``clip_threshold`` (at the epoch's end) and ``clip_skipped_steps``
(non-finite steps).

Put it before the callbacks that should see these values: ``callbacks=[ClipTelemetry(), TensorBoard(...)]``
(``History`` and the progress bar always come last).

On JAX, ``fit`` keeps the optimizer's variables in its own state during an epoch; the callback asks the model
to write them back (``jax_state_sync``, the JAX trainer's public hook for callbacks) before it reads them, so
the values are the same as on TensorFlow.
"""

from __future__ import annotations

import inspect
import math
import warnings

from clipstudy.clipping.optimizer import find_clipping_optimizer, keras


class ClipTelemetry(keras.callbacks.Callback):
    """Writes the clipper's statistics into the training logs.

    Args:
      every: add the per-step values every ``every`` optimizer steps (reading them costs one small
        device-to-host copy); the epoch values are always added.
      prefix: the prefix of every key.
    """

    def __init__(self, every: int = 1, prefix: str = "clip_"):
        super().__init__()
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"ClipTelemetry: every={every!r} is invalid; it must be an integer ≥ 1")
        self.every, self.prefix = every, prefix
        self._steps = 0

    @property
    def optimizer(self):
        return find_clipping_optimizer(self.model.optimizer)

    def on_train_begin(self, logs=None):
        _ = self.optimizer  # fail at the start, not after the first epoch, when there is nothing to read
        self._steps = 0
        for problem in self.misplaced(_calling_callbacks()):
            warnings.warn(problem, UserWarning, stacklevel=2)

    def misplaced(self, callbacks) -> list[str]:
        """What keeps the per-step values from a TensorBoard callback among ``callbacks`` (the list ``fit`` runs):
        one that comes before this callback reads each batch's logs before they are added; one without
        ``update_freq=1`` writes only the epoch values."""
        if not callbacks or self not in callbacks:
            return []
        mine, problems = callbacks.index(self), []
        for i, c in enumerate(callbacks):
            if not isinstance(c, keras.callbacks.TensorBoard):
                continue
            if i < mine:
                problems.append(
                    "ClipTelemetry comes after keras.callbacks.TensorBoard in the callbacks: TensorBoard has written "
                    "each batch before the clip_* values are added, so none reach it; put ClipTelemetry() first"
                )
            if c.update_freq != 1 and self.every == 1:
                problems.append(
                    f"keras.callbacks.TensorBoard(update_freq={c.update_freq!r}) writes only what is in the logs at "
                    "that frequency: ClipTelemetry's per-step values need update_freq=1 (the epoch means still arrive)"
                )
        return problems

    def _sync(self):
        sync = getattr(self.model, "jax_state_sync", None)  # only the JAX trainer has it
        if sync is not None:
            sync()

    def on_epoch_begin(self, epoch, logs=None):
        self._sync()
        self.optimizer.reset_totals()

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if logs is None or self._steps % self.every:
            return
        self._sync()
        last = self.optimizer.last_stats()
        if last:
            p = self.prefix
            logs.update(
                {
                    f"{p}norm_before": last["norm_before"],
                    f"{p}norm_after": last["norm_after"],
                    f"{p}threshold": last["threshold"],
                    f"{p}fraction": last["clipped"],
                }
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        self._sync()
        totals, last = self.optimizer.totals(), self.optimizer.last_stats()
        if not totals.get("steps"):
            return
        n = max(totals["steps"] - totals["nonfinite"], 1.0)
        p = self.prefix
        logs.update(
            {
                f"{p}norm_before": totals["norm_before"] / n,
                f"{p}norm_after": totals["norm_after"] / n,
                f"{p}norm_before_max": totals["max_norm_before"],
                f"{p}fraction": totals["clipped"] / n,
                f"{p}threshold": last.get("threshold", math.nan),
                f"{p}skipped_steps": totals["nonfinite"],
            }
        )


def _calling_callbacks() -> list | None:
    """The callbacks of the ``keras.callbacks.CallbackList`` that is calling ``on_train_begin`` (Keras gives a
    callback no handle on its siblings; ``fit`` calls through that list), or None when called otherwise."""
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back if frame is not None and frame.f_back is not None else None
        owner = caller.f_locals.get("self") if caller is not None else None
        return list(owner.callbacks) if isinstance(owner, keras.callbacks.CallbackList) else None
    finally:
        del frame
