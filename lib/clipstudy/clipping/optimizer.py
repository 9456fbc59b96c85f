"""Any of the study's clipping methods inside any Keras 3 optimizer, for ``model.fit`` and custom loops.

    import keras
    from clipstudy.clipping import ClippingOptimizer, ClipTelemetry

    optimizer = ClippingOptimizer(keras.optimizers.Adam(1e-3), "zclip", {"z_thresh": 2.5})
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(x, y, callbacks=[ClipTelemetry(), keras.callbacks.TensorBoard("logs", update_freq=1)])

The wrapper is built like Keras' own ``LossScaleOptimizer``: it owns no update rule, it rewrites the
gradients and hands them to the inner optimizer. The clipper's state (ZClip's running moments,
AutoClip's history) and the last step's statistics are optimizer variables, so checkpoints,
``model.save`` and ``keras.models.load_model`` keep them, and training continues where it stopped.

With mixed precision, loss scaling goes outside: ``LossScaleOptimizer(ClippingOptimizer(inner, ...))``.
The loss-scale optimizer divides the scale out first and skips steps whose scaled gradients
overflowed, so the clipper sees the true gradients. The other order would clip gradients that
are still multiplied by the loss scale; the wrapper refuses it.

Backends: TensorFlow and JAX (each rule is written once, ``clipping.ops``; on JAX ``fit`` steps through
``stateless_apply``, which the wrapper inherits from Keras' base optimizer: its ``apply`` is written in
``keras.ops`` there, and a skipped step selects the old values instead of branching). PyTorch is refused at
construction. Under ``tf.distribute.MirroredStrategy`` the wrapper all-reduces the gradient itself and clips the
global batch's gradient, so a step equals the one-device step with the same global batch, and its telemetry
reports the true norms; another multi-replica strategy is refused, never run silently wrong.
"""

from __future__ import annotations

from clipstudy.clipping.base import REGISTRY, Clipper, get
from clipstudy.lazy_tf import import_keras_once
from clipstudy.lazy_tf import plain_tf as tf

keras = import_keras_once()  # ``import keras``, TensorFlow's start-up lines written once instead of twice

#: The statistics of the last step the wrapper exposes (``ClippingOptimizer.last_stats``).
STAT_NAMES = ("norm_before", "norm_after", "clipped", "threshold", "nonfinite")
#: Running totals since the last ``reset_totals`` (``ClippingOptimizer.totals``).
TOTAL_NAMES = ("steps", "norm_before", "norm_after", "clipped", "nonfinite", "max_norm_before")

try:  # Keras' own marker, as LossScaleOptimizer uses it: variables made in build are tracked once.
    # Keras has no public name for it; without it the wrapper's variables would be tracked twice, so a
    # Keras that moved it is refused here, loudly, rather than run with a wrong variable list.
    from keras.src.utils.tracking import no_automatic_dependency_tracking as _untracked
except ImportError as exc:  # pragma: no cover - depends on the installed Keras
    raise ImportError(
        f"clipstudy.clipping.ClippingOptimizer needs keras.src.utils.tracking.no_automatic_dependency_tracking, "
        f"which this Keras ({keras.__version__}) does not have (it is tested with Keras 3.15)"
    ) from exc


def _method_parameters(method: str) -> tuple[str, ...]:
    return REGISTRY[method].parameter_names() if method in REGISTRY else ()


@keras.saving.register_keras_serializable(package="clipstudy")
class ClippingOptimizer(keras.optimizers.Optimizer):
    """Clips the gradients with one of ``clipstudy.clipping``'s methods, then lets ``inner_optimizer`` step.

    Args:
      inner_optimizer: a Keras 3 optimizer (instance, name or config), as ``keras.optimizers.get`` takes.
      method: a registered method name (``clipping.METHODS``) or a built ``Clipper``.
      clip_params: the method's parameters when ``method`` is a name, e.g. ``{"threshold": 1.0}``.
      skip_nonfinite: a step whose gradients hold inf or NaN is recorded but not applied, and the
        clipper's state is left alone (as the study's training loop does). ``False``: hand such
        gradients to the inner optimizer like Keras' own clipping does.
      name: the optimizer's name.

    Raises:
      ValueError: an unknown method or parameter, or an inner optimizer that scales the loss or
        accumulates gradients itself (the clipper would see gradients it cannot judge).
    """

    def __init__(
        self,
        inner_optimizer,
        method: str | Clipper = "global_norm",
        clip_params: dict | None = None,
        skip_nonfinite: bool = True,
        name: str | None = None,
        **kwargs,
    ):
        if kwargs:
            ours = sorted(k for k in kwargs if isinstance(method, str) and k in _method_parameters(method))
            given = ", ".join(f"{k!r}: {kwargs[k]!r}" for k in ours)
            hint = (
                f"{', '.join(ours)} belong{'s' if len(ours) == 1 else ''} to the clipping method: "
                f"ClippingOptimizer(..., {method!r}, clip_params={{{given}}})"
                if ours
                else "set such options on the inner optimizer"
            )
            raise ValueError(f"ClippingOptimizer does not take {', '.join(sorted(kwargs))}; {hint}")
        _check_backend()
        inner = keras.optimizers.get(inner_optimizer)
        _check_inner(inner)
        _check_replicas()
        clipper = get(method, **(clip_params or {}))
        super().__init__(learning_rate=0.0, name=name or f"clipping_{clipper.name}")
        self.inner_optimizer = inner
        self.clipper = clipper
        self.skip_nonfinite = bool(skip_nonfinite)

    # -- variables ---------------------------------------------------------------------------
    @_untracked
    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        if _on_tensorflow():
            with tf.init_scope():  # the clipper's initial state as constants, even when built inside a tf.function
                initial = {k: tf.convert_to_tensor(v) for k, v in self.clipper.init(var_list).items()}
        else:
            initial = self.clipper.init(var_list)
        self._clip_state = {k: self._scalar_or_tensor(v, f"clip_{k}") for k, v in initial.items()}
        self._last = {k: self._float_variable(f"last_{k}") for k in STAT_NAMES}
        self._totals = {k: self._float_variable(f"total_{k}") for k in TOTAL_NAMES}
        super().build(var_list)

    def _scalar_or_tensor(self, value, name):
        return self.add_variable(
            shape=tuple(value.shape),
            dtype=keras.backend.standardize_dtype(value.dtype),
            name=name,
            initializer=lambda shape, dtype: keras.ops.cast(value, dtype),
            aggregation=_AGGREGATION,
        )

    def _float_variable(self, name):
        return self.add_variable(shape=(), dtype="float32", initializer="zeros", name=name, aggregation=_AGGREGATION)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    # -- the step ----------------------------------------------------------------------------
    # One step, two ways to apply it: ``apply`` on TensorFlow (a ``tf.cond`` skip, ``tf.distribute``) and
    # ``_apply_keras`` on the other backends (a select); both begin with ``_begin`` and clip with ``_clip``.
    def _begin(self, trainable_variables):
        """Build on the first step; the step's variables, the clipper's state, and which variables Keras
        overwrites with their "gradient" (float8 scales: no gradient, left out of the norm, handed on untouched)."""
        if not self.built:
            if _on_tensorflow():
                with tf.name_scope(self.name):
                    self.build(trainable_variables)
            else:
                self.build(trainable_variables)
        variables = list(trainable_variables) if trainable_variables is not None else self._trainable_variables
        state = {k: v.value for k, v in self._clip_state.items()}
        return variables, state, [_overwrites(v) for v in variables]

    def _clip(self, grads, weights, state, overwrite):
        """The clipper's step (the overwritten variables' values handed on as they came); its statistics recorded."""
        clipped, new_state, stats = self.clipper([None if o else g for g, o in zip(grads, overwrite)], weights, state)
        self._record(stats)
        return [g if o else c for g, c, o in zip(grads, clipped, overwrite)], new_state, stats

    def _step(self, clipped, new_state, trainable_variables):
        for key, variable in self._clip_state.items():
            variable.assign(new_state[key])
        self.inner_optimizer.apply(clipped, trainable_variables)

    def apply(self, grads, trainable_variables=None):
        if not _on_tensorflow():
            return self._apply_keras(list(grads), trainable_variables)
        replicas = _check_replicas()
        grads = list(grads)
        variables, state, overwrite = self._begin(trainable_variables)
        context = tf.distribute.get_replica_context() if replicas > 1 else None
        if context is not None:
            # Several replicas: clip the gradient of the global batch, not each replica's share of it. Keras
            # scales each replica's loss by 1/replicas, so the all-reduced sum is the global batch's gradient;
            # every replica then holds the same numbers and takes the same decision.
            present = [i for i, (g, o) in enumerate(zip(grads, overwrite)) if g is not None and not o]
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
            for i, g in zip(present, summed):
                grads[i] = g
        clipped, new_state, stats = self._clip(grads, variables, state, overwrite)
        if context is not None:
            # The inner optimizer all-reduces (sums) again: hand it each replica's 1/replicas share of the clipped
            # gradient, so that its sum is the clipped gradient (exactly, for a power-of-two replica count).
            clipped = [g if (g is None or o) else g / replicas for g, o in zip(clipped, overwrite)]

        def step(clipped, new_state):
            self._step(clipped, new_state, trainable_variables)

        if not self.skip_nonfinite:
            step(clipped, new_state)
        elif context is None:
            tf.cond(stats["nonfinite"], lambda: None, lambda: step(clipped, new_state))
        else:
            # The inner optimizer's apply calls merge_call, which a cond in replica context cannot hold: decide
            # in cross-replica context, as Keras' LossScaleOptimizer does.
            def cross_replica(distribution, nonfinite, clipped, new_state):
                skip = distribution.experimental_local_results(nonfinite)[0]

                def apply_fn():
                    distribution.extended.call_for_each_replica(step, args=(clipped, new_state))

                tf.cond(skip, lambda: None, apply_fn)

            context.merge_call(cross_replica, args=(stats["nonfinite"], clipped, new_state))

    def _apply_keras(self, grads, trainable_variables):
        """The step in ``keras.ops`` for the backends other than TensorFlow: eagerly, and inside the
        ``StatelessScope`` of Keras' ``stateless_apply`` (how JAX's ``fit`` steps). A skipped step applies
        nothing: the old values of the weights, the inner optimizer's variables and the clipper's state are
        selected back (a select, not a branch, so it traces once)."""
        ops = keras.ops
        variables, state, overwrite = self._begin(trainable_variables)
        clipped, new_state, stats = self._clip(grads, [v.value for v in variables], state, overwrite)
        if not self.skip_nonfinite:
            self._step(clipped, new_state, trainable_variables)
            return
        skip = stats["nonfinite"]
        kept = list(variables) + list(self.inner_optimizer.variables)
        before = [v.value for v in kept]
        self.inner_optimizer.apply(clipped, trainable_variables)
        for variable, old in zip(kept, before):
            variable.assign(ops.where(skip, old, variable.value))
        for key, variable in self._clip_state.items():
            variable.assign(ops.where(skip, state[key], ops.cast(new_state[key], variable.dtype)))

    def _record(self, stats):
        ops = keras.ops
        values = {k: ops.cast(stats[k], "float32") for k in STAT_NAMES}
        for key, variable in self._last.items():
            variable.assign(values[key])
        totals, skipped = self._totals, stats["nonfinite"]
        totals["steps"].assign_add(1.0)
        totals["nonfinite"].assign_add(values["nonfinite"])
        for key in ("norm_before", "norm_after", "clipped"):  # sums over the steps that were applied
            totals[key].assign_add(ops.where(skipped, 0.0, values[key]))
        totals["max_norm_before"].assign(
            ops.where(
                skipped,
                totals["max_norm_before"].value,
                ops.maximum(totals["max_norm_before"].value, values["norm_before"]),
            )
        )

    # -- telemetry ---------------------------------------------------------------------------
    def last_stats(self) -> dict[str, float]:
        """The last step's ``norm_before``, ``norm_after``, ``clipped`` (share, 0-1), ``threshold``
        (NaN where the method has none yet) and ``nonfinite`` (1.0 when the step was skipped)."""
        if not self.built:
            return {}
        return {k: float(v.numpy()) for k, v in self._last.items()}

    def totals(self) -> dict[str, float]:
        """Since the last ``reset_totals``: ``steps`` and ``nonfinite`` (skipped) steps, the sums of
        ``norm_before``, ``norm_after`` and ``clipped`` over the applied steps, and their largest
        ``max_norm_before``."""
        if not self.built:
            return {}
        return {k: float(v.numpy()) for k, v in self._totals.items()}

    def reset_totals(self) -> None:
        if self.built:
            for variable in self._totals.values():
                variable.assign(0.0)

    # -- what the inner optimizer owns ------------------------------------------------------------
    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    # -- serialization ------------------------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "method": self.clipper.name,
            "clip_params": self.clipper.config(),
            "skip_nonfinite": self.skip_nonfinite,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        return cls(inner, **config)


#: The wrapper's own variables hold one value for every replica (the clipper's state, counters): never averaged.
_AGGREGATION = "only_first_replica"


def _overwrites(variable) -> bool:
    return bool(getattr(variable, "overwrite_with_gradient", False))


#: The Keras backends the wrapper runs on (both tested in ``make test``).
SUPPORTED_BACKENDS = ("tensorflow", "jax")


def _on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


#: Inner-optimizer settings that clip by themselves: the gradients would be clipped twice.
INNER_CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")


def _check_backend() -> None:
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"ClippingOptimizer runs on the Keras backends {', '.join(SUPPORTED_BACKENDS)}; this Keras runs on "
            f"{backend!r} (KERAS_BACKEND). Use one of those, or clip with keras.optimizers' own "
            "clipnorm / global_clipnorm there"
        )


#: The tf.distribute strategies whose all-reduce the wrapper is tested under (on two logical CPU devices).
SUPPORTED_STRATEGIES = ("MirroredStrategy", "OneDeviceStrategy", "_DefaultDistributionStrategy")


def _check_replicas() -> int:
    """The number of replicas in sync (1 without a strategy); a strategy the wrapper is not tested under is
    refused, never run silently wrong."""
    if not _on_tensorflow() or not tf.distribute.has_strategy():
        return 1
    strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 and type(strategy).__name__ not in SUPPORTED_STRATEGIES:
        raise NotImplementedError(
            f"ClippingOptimizer under {type(strategy).__name__} with {replicas} replicas is not supported: it is "
            f"tested under {', '.join(SUPPORTED_STRATEGIES[:2])}, where it clips the all-reduced gradient of the "
            "global batch; train under one of those, or on one replica"
        )
    return replicas


def _check_inner(inner) -> None:
    if isinstance(inner, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "ClippingOptimizer(LossScaleOptimizer(...)) would clip loss-scaled gradients; wrap the "
            "other way round: LossScaleOptimizer(ClippingOptimizer(inner, ...))"
        )
    if not isinstance(inner, keras.optimizers.Optimizer):
        raise TypeError(f"ClippingOptimizer needs a Keras 3 optimizer, got {type(inner).__name__}")
    if getattr(inner, "loss_scale_factor", None):
        raise ValueError(
            f"the inner optimizer has loss_scale_factor={inner.loss_scale_factor}: the clipper would "
            "see scaled gradients; use LossScaleOptimizer(ClippingOptimizer(...)) instead"
        )
    clipping = {k: getattr(inner, k, None) for k in INNER_CLIPPING}
    clipping = {k: v for k, v in clipping.items() if v is not None}
    if clipping:
        setting = ", ".join(f"{k}={v}" for k, v in clipping.items())
        raise ValueError(
            f"the inner optimizer already clips ({setting}): the gradients would be clipped twice; remove "
            f"{' and '.join(clipping)} from the inner optimizer and let ClippingOptimizer clip"
        )
    if getattr(inner, "gradient_accumulation_steps", None):
        raise ValueError(
            f"the inner optimizer accumulates gradients (gradient_accumulation_steps="
            f"{inner.gradient_accumulation_steps}): the clipper would judge each micro-batch alone"
        )


def find_clipping_optimizer(optimizer) -> ClippingOptimizer:
    """The ``ClippingOptimizer`` in ``optimizer`` or among the optimizers it wraps (``inner_optimizer``).

    Raises:
      ValueError: there is none.
    """
    seen = optimizer
    while seen is not None:
        if isinstance(seen, ClippingOptimizer):
            return seen
        seen = getattr(seen, "inner_optimizer", None)
    raise ValueError(
        f"no ClippingOptimizer in the model's optimizer ({type(optimizer).__name__}); compile the "
        "model with clipstudy.clipping.ClippingOptimizer(...)"
    )
