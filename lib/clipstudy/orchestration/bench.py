"""Throughput of the study's training loop against Keras ``model.fit`` (``make bench``).

Both sides train the seed CNN on the same images at the same batch size, with the same seed and
op determinism on (so ``fit`` runs without XLA, as the study does). Each measurement times
training epochs after the first (which pays for tracing), excluding evaluation; the pairs run
alternately, ``--repeats`` times, and the report gives medians and the ratio of the medians.

    python -m clipstudy.orchestration.bench [--images 12800] [--epochs 3] [--repeats 5] [--threshold 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from clipstudy import clipping, platforms, training
from clipstudy.data.split import Split, subset_indices
from clipstudy.fileio import write_json_atomic
from clipstudy.lazy_tf import keras
from clipstudy.orchestration import breakdown
from clipstudy.tasks.classification import ClassificationTask, prepare_images, seed_cnn
from clipstudy.training import RunConfig


def _epoch_timer():
    """A Keras callback that records the duration of each epoch in ``.durations``."""

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.durations = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.durations.append(time.perf_counter() - self._start)

    return EpochTimer()


def fit_rate(x, y, *, batch_size, epochs, seed, global_clipnorm=None) -> float:
    """Images per second of ``model.fit`` over epochs 2..n."""
    training.set_determinism(seed)
    model = seed_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=global_clipnorm),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    timer = _epoch_timer()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=[timer])
    return len(x) * (epochs - 1) / sum(timer.durations[1:])


def _train(data, *, images, batch_size, epochs, seed, clipper, clip_params):
    config = RunConfig(
        method=clipper,
        clip_params=clip_params,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        train_subset=images,
        test_subset=100,
    )
    return training.train(config, ClassificationTask(), data, progress=False)


def loop_rate(data, *, images, batch_size, epochs, seed, clipper, clip_params) -> float:
    """Images per second of ``clipstudy.training.train`` over epochs 2..n, evaluation excluded."""
    run = _train(
        data, images=images, batch_size=batch_size, epochs=epochs, seed=seed, clipper=clipper, clip_params=clip_params
    )
    e = run.epochs
    train_time = (e["wall_time_s"].diff() - e["eval_time_s"]).iloc[1:].sum()
    return images * (epochs - 1) / train_time


#: Every registered method at its reference setting.
OVERHEAD_METHODS = {name: dict(cls.reference_params) for name, cls in clipping.REGISTRY.items()}
OVERHEAD_TARGETS = {"global_norm": 1.03, "agc": 1.10, "autoclip": 1.10, "zclip": 1.10, "adagc": 1.10, "quantile": 1.10}


def method_overhead(data, *, steps: int, batch_size: int, rounds: int, skip: int = 5) -> dict:
    """Median step time of each method relative to ``none``, measured in this process, methods interleaved."""
    times = {m: [] for m in OVERHEAD_METHODS}
    by_round: list[dict[str, float]] = []
    for r in range(rounds):
        for method, clip_params in OVERHEAD_METHODS.items():
            run = _train(
                data,
                images=steps * batch_size,
                batch_size=batch_size,
                epochs=1,
                seed=0,
                clipper=method,
                clip_params=clip_params,
            )
            times[method].extend(run.steps["step_time_s"].iloc[skip:].tolist())
            by_round.append({"method": method, "median_step_s": statistics.median(times[method][-(steps - skip) :])})
        print(f"overhead round {r + 1}/{rounds} done", flush=True)
    base = statistics.median(times["none"])
    return {
        m: {
            "median_step_s": statistics.median(t),
            "ratio": statistics.median(t) / base,
            "steps": len(t),
            # the spread: each round's median step time over that round's unclipped one
            "round_ratios": [
                mine["median_step_s"] / none["median_step_s"]
                for mine, none in zip(
                    [b for b in by_round if b["method"] == m],
                    [b for b in by_round if b["method"] == "none"],
                    strict=True,
                )
            ],
        }
        for m, t in times.items()
    }


def throughput(data, args) -> dict:
    """Images/s of the loop against ``model.fit``, without clipping and with global-norm clipping,
    alternating, ``args.repeats`` times; medians and their ratio."""
    train_split: Split = data[0]
    idx = subset_indices(len(train_split), args.images, 0, "images")
    x = prepare_images(train_split.x[idx])
    y = np.asarray(train_split.y)[idx].astype(np.int32)
    common = dict(batch_size=args.batch_size, epochs=args.epochs, seed=0)
    pairs = {
        "none": (
            lambda: loop_rate(data, images=args.images, clipper="none", clip_params={}, **common),
            lambda: fit_rate(x, y, **common),
        ),
        "global_norm": (
            lambda: loop_rate(
                data, images=args.images, clipper="global_norm", clip_params={"threshold": args.threshold}, **common
            ),
            lambda: fit_rate(x, y, global_clipnorm=args.threshold, **common),
        ),
    }
    rates = {name: {"loop": [], "fit": []} for name in pairs}
    for r in range(args.repeats):
        for name, (ours, theirs) in pairs.items():
            rates[name]["loop"].append(ours())
            rates[name]["fit"].append(theirs())
            print(
                f"repeat {r + 1}/{args.repeats} {name:12s} loop {rates[name]['loop'][-1]:8.0f} img/s   "
                f"fit {rates[name]['fit'][-1]:8.0f} img/s",
                flush=True,
            )
    results = {}
    for name, r in rates.items():
        loop, fit = statistics.median(r["loop"]), statistics.median(r["fit"])
        results[name] = {"loop_images_per_s": loop, "fit_images_per_s": fit, "ratio": loop / fit, "runs": r}
    return results


def print_throughput(results: dict, args) -> None:
    print(
        f"\nseed CNN, batch {args.batch_size}, {args.images} images/epoch, epochs 2..{args.epochs}, "
        f"median of {args.repeats}"
    )
    print(f"{'method':12s} {'clipstudy loop':>15s} {'keras fit':>12s} {'ratio':>7s} {'target':>7s}")
    for name, r in results.items():
        print(
            f"{name:12s} {r['loop_images_per_s']:15.0f} {r['fit_images_per_s']:12.0f} {r['ratio']:7.3f} {'>=0.95':>7s}"
        )
    ok = all(r["ratio"] >= 0.95 for r in results.values())
    print("meets the 0.95x target" if ok else "BELOW the 0.95x target")


def print_overhead(overhead: dict, args) -> None:
    print(
        f"\nper-step overhead against none (seed CNN, batch {args.batch_size}, median over "
        f"{overhead['none']['steps']} steps per method, one process)"
    )
    print(f"{'method':12s} {'median step':>12s} {'ratio':>7s} {'target':>7s}")
    for method, o in overhead.items():
        target = OVERHEAD_TARGETS.get(method)
        verdict = "" if target is None else ("ok" if o["ratio"] <= target else "ABOVE")
        print(
            f"{method:12s} {1000 * o['median_step_s']:9.2f} ms {o['ratio']:7.3f} "
            f"{'<=' + format(target, '.2f') if target else '':>7s} {verdict}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipstudy.orchestration.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--images", type=int, default=12800)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=1.0)
    parser.add_argument("--overhead-steps", type=int, default=60, help="steps per method per round (0: skip)")
    parser.add_argument("--overhead-rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip the breakdown of a run of each task (breakdown)",
    )
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is excluded as warm-up")
    data = ClassificationTask().load_data()
    results = throughput(data, args) if args.repeats else {}
    if results:
        print_throughput(results, args)
    overhead = {}
    if args.overhead_steps:
        overhead = method_overhead(
            data, steps=args.overhead_steps, batch_size=args.batch_size, rounds=args.overhead_rounds
        )
        print_overhead(overhead, args)
    phases = {}
    if not args.no_breakdown:
        phases = breakdown.breakdown()
        breakdown.print_breakdown(phases)
    if args.json:
        write_json_atomic(
            {
                "args": vars(args),
                "results": results,
                "overhead": overhead,
                "breakdown": phases,
                "versions": training.library_versions(),
                "platform": platforms.current(training.library_versions()),
                "date": time.strftime("%Y-%m-%d", time.gmtime()),
            },
            args.json,
        )
        print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
