"""Which settings make a run bit-identical across CPUs, and what they cost: one short, fixed run under each
kernel setting, its outcome digest and step time recorded per CPU.

    python -m clipstudy.orchestration.kernel_settings [--record results/kernel_settings.json]

Each setting runs in a fresh process (oneDNN reads its settings once, at start): TensorFlow's defaults;
oneDNN capped at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``, an instruction set every supported CPU has); capped at
AVX; and oneDNN off (``TF_ENABLE_ONEDNN_OPTS=0``, Eigen's kernels). The run is a classifier of 64 steps of
128 images on one thread, evaluated twice. ``--record`` merges the rows into a JSON file keyed by CPU and
setting, written to a temporary name and renamed, so rows from machines with other CPUs accumulate in one
place; the table it prints says, per setting, whether every CPU recorded so far gave the same digest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from clipstudy.fileio import atomic_target

#: Setting name -> environment it runs under (on top of this process's, with the variables cleared first).
SETTINGS = {
    "default": {},
    "onednn<=avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "onednn<=avx": {"ONEDNN_MAX_CPU_ISA": "AVX"},
    "onednn off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
}
#: The run each setting trains (RunConfig overrides of the classifier's defaults).
RUN = dict(
    method="global_norm",
    clip_params={"threshold": 1.0},
    optimizer="adam",
    learning_rate=0.001,
    epochs=1,
    train_subset=64 * 128,
    test_subset=2000,
    eval_every=32,
    seed=0,
    threads=1,
)

_CHILD = """
import json, sys
from clipstudy import platforms, tasks
from clipstudy.training import RunConfig, set_threads, train
run = json.loads(sys.argv[1])
set_threads(run["threads"])
config = RunConfig.for_task("classifier", **run)
task = tasks.for_config(config)
result = train(config, task, task.load_data(), progress=False)
s = result.summary
print("RESULT " + json.dumps({"outcome_sha256": s["outcome_sha256"], "final_test_accuracy": s["final_test_accuracy"],
                              "median_step_time_s": s["median_step_time_s"], "platform": s["platform"]}))
"""


def measure(setting: str) -> dict:
    """Train :data:`RUN` in a fresh process under ``setting``; its digest, accuracy, step time and platform."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")
    }
    env.update(SETTINGS[setting])
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(RUN)], env=env, capture_output=True, text=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"setting {setting!r} failed:\n{out.stderr[-2000:]}")
    return json.loads(line[len("RESULT ") :])


def cpu_key(platform: dict) -> str:
    return (
        f"{platform['cpu_vendor']} {platform['cpu_model_name']} (family {platform['cpu_family']}, "
        f"model {platform['cpu_model']}; {platform['cpu_flags']})"
    )


def merge(path: Path, rows: list[dict]) -> list[dict]:
    """The rows of ``path`` with ``rows`` in place of those of the same CPU and setting; written atomically."""
    old = json.loads(path.read_text()) if path.exists() else []
    keys = {(r["cpu"], r["setting"]) for r in rows}
    merged = [r for r in old if (r["cpu"], r["setting"]) not in keys] + rows
    merged.sort(key=lambda r: (r["setting"], r["cpu"]))
    with atomic_target(path) as tmp:
        tmp.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def table(rows: list[dict]) -> str:
    """Per setting: each CPU's digest and step time relative to that CPU's default, and whether all CPUs agree."""
    default = {r["cpu"]: r["median_step_time_s"] for r in rows if r["setting"] == "default"}
    lines = [f"{'setting':14s} {'cpu':70s} {'digest':12s} {'accuracy':>8s} {'step ms':>8s} {'vs default':>10s}"]
    for setting in SETTINGS:
        mine = [r for r in rows if r["setting"] == setting]
        for r in mine:
            ratio = r["median_step_time_s"] / default[r["cpu"]] if r["cpu"] in default else float("nan")
            lines.append(
                f"{setting:14s} {r['cpu'][:70]:70s} {r['outcome_sha256'][:12]:12s} "
                f"{r['final_test_accuracy']:8.4f} {1000 * r['median_step_time_s']:8.1f} {ratio:10.2f}"
            )
        if len({r["cpu"] for r in mine}) > 1:
            same = len({r["outcome_sha256"] for r in mine}) == 1
            lines.append(f"{'':14s} -> {len(mine)} CPUs: {'bit-identical' if same else 'DIFFERENT bits'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipstudy.orchestration.kernel_settings", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--record", type=Path, default=None, help="merge the rows into this JSON file")
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args(argv)
    rows = []
    for setting in args.settings:
        print(f"== {setting} ...", flush=True)
        m = measure(setting)
        rows.append(
            {
                "setting": setting,
                "cpu": cpu_key(m["platform"]),
                "onednn_isa": m["platform"]["onednn_isa"],
                "outcome_sha256": m["outcome_sha256"],
                "final_test_accuracy": m["final_test_accuracy"],
                "median_step_time_s": m["median_step_time_s"],
                "tensorflow": m["platform"].get("tensorflow"),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            }
        )
    if args.record:
        rows = merge(args.record, rows)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
