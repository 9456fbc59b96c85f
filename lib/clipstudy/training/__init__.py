"""Training: the run configuration (``RunConfig``) and one loop with gradient telemetry (``train``).

``config``, ``spikes`` and the names are importable without TensorFlow; the loop imports it on use.
"""

from clipstudy.training.config import FROM_DATA, OPTIMIZERS, TASKS, ConfigError, RunConfig
from clipstudy.training.loop import RunResult, set_determinism, set_threads, train
from clipstudy.training.monitor import DivergenceMonitor
from clipstudy.training.optimizers import make_optimizer
from clipstudy.training.spikes import SpikePlan, spike_plan
from clipstudy.training.steplog import RECORD_FIELDS, STEP_FIELDS, StepLog
from clipstudy.training.summary import library_versions, steps_to_target

__all__ = [
    "FROM_DATA",
    "OPTIMIZERS",
    "TASKS",
    "ConfigError",
    "RunConfig",
    "RunResult",
    "set_determinism",
    "set_threads",
    "train",
    "DivergenceMonitor",
    "make_optimizer",
    "SpikePlan",
    "spike_plan",
    "RECORD_FIELDS",
    "STEP_FIELDS",
    "StepLog",
    "library_versions",
    "steps_to_target",
]
