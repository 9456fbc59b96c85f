"""Scalars read back from a TensorBoard log folder, as a table the study's plots take."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clipstudy.lazy_tf import tf

#: ``ClipTelemetry``'s per-step keys (as ``keras.callbacks.TensorBoard`` names them) and the
#: ``steps`` columns of the study's runs they correspond to.
STEP_COLUMNS = {
    "batch_clip_norm_before": "norm_before",
    "batch_clip_norm_after": "norm_after",
    "batch_clip_threshold": "threshold",
    "batch_clip_fraction": "clipped",
}


def read_scalars(logdir: str | Path) -> pd.DataFrame:
    """Every scalar of the latest run logged under ``logdir``: one row per (tag, step), columns ``tag``, ``step``,
    ``value``. ``logdir`` is the folder given to ``keras.callbacks.TensorBoard`` (its ``train/`` subfolder is read)
    or the folder that holds the event files. Each ``fit`` into the same folder adds an event file of its own, with
    its steps numbered from 1 again: the newest file is read (``event_file`` picks another).

    Raises:
      FileNotFoundError: no event file in ``logdir`` or ``logdir/train``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(event_file(logdir)), size_guidance={"tensors": 0, "scalars": 0}).Reload()
    rows = []
    for tag in events.Tags()["tensors"]:  # TF2 summaries are tensors; keep the numeric scalars
        for event in events.Tensors(tag):
            value = tf.make_ndarray(event.tensor_proto)
            if value.dtype.kind in "fiu" and value.size == 1:
                rows.append((tag, event.step, float(value.reshape(()))))
    rows += [(tag, e.step, float(e.value)) for tag in events.Tags()["scalars"] for e in events.Scalars(tag)]
    return pd.DataFrame(rows, columns=["tag", "step", "value"]).sort_values(["tag", "step"], ignore_index=True)


def event_files(logdir: str | Path) -> list[Path]:
    """The event files under ``logdir`` (or ``logdir/train``, where ``keras.callbacks.TensorBoard`` writes the
    training scalars), oldest first: one per ``fit`` logged there."""
    logdir = Path(logdir)
    if not any(logdir.glob("events.out.tfevents.*")) and any((logdir / "train").glob("events.out.tfevents.*")):
        logdir = logdir / "train"
    files = sorted(logdir.glob("events.out.tfevents.*"), key=lambda f: (f.stat().st_mtime_ns, f.name))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event file in {logdir} or {logdir / 'train'}")
    return files


def event_file(logdir: str | Path, run: int = -1) -> Path:
    """One run's event file under ``logdir``: the newest by default (``run=0``: the first logged there)."""
    files = event_files(logdir)
    try:
        return files[run]
    except IndexError:
        raise IndexError(f"run={run}: {logdir} holds {len(files)} logged run(s)") from None


def telemetry_steps(logdir: str | Path) -> pd.DataFrame:
    """``ClipTelemetry``'s per-step scalars under ``logdir`` as a steps table (``step``, ``norm_before``,
    ``norm_after``, ``threshold``, ``clipped``), the shape ``runplots.norm_trace`` draws; TensorBoard numbers
    the steps from 1. Of a folder several runs were logged to, the latest run's (``read_scalars``)."""
    scalars = read_scalars(logdir)
    scalars = scalars[scalars["tag"].isin(STEP_COLUMNS)]
    if scalars.empty:
        raise ValueError(
            f"no ClipTelemetry scalars in {logdir}: log with ClipTelemetry() before "
            "keras.callbacks.TensorBoard(..., update_freq=1) in the callbacks list"
        )
    table = scalars.pivot(index="step", columns="tag", values="value").rename(columns=STEP_COLUMNS)
    return table.reset_index().rename_axis(columns=None)
