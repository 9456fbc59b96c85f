"""Profiles: YAML files listing experiments, each the product methods × optimizers × rates × seeds.

``load_profile`` turns a profile into its plan, one ``RunSpec`` per run, checking every value
through ``RunConfig`` before anything runs; an error names the file, the field and the reason.
No TensorFlow is imported here.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from clipstudy import paths
from clipstudy.study import runfiles
from clipstudy.training.config import AXES as RUN_CONFIG_AXES
from clipstudy.training.config import OPTIMIZERS, TASKS, ConfigError, RunConfig

#: The notebook that executes a run, whatever its task.
RUN_NOTEBOOK = "10_train.ipynb"
#: What an experiment's ``settings`` may set: every run parameter that is not one of its axes.
AXES = RUN_CONFIG_AXES  # what varies within an experiment: RunConfig's definition
SETTINGS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in AXES)
EXPERIMENT_FIELDS = ("name", "task", "methods", "optimizers", "seeds")


#: A profile's name (its file's stem) becomes a folder name: nothing that could climb out of its parent.
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class ProfileError(ValueError):
    """A profile file is malformed; the message names the file, the field and the reason."""


@dataclass(frozen=True)
class RunSpec:
    """One planned run: its id, the notebook that executes it, and its configuration."""

    run_id: str
    notebook: str
    config: RunConfig = dataclasses.field(hash=False, compare=False)
    experiment: str = dataclasses.field(default="", hash=False, compare=False)  # the first that plans it

    @property
    def params(self) -> dict:
        return self.config.to_params()


def publishes(profile: str | Path) -> bool:
    """Whether the profile publishes its runs as a results bundle (``publish: true``); ``plan.load_plan`` gives
    this with the runs, from one reading of the file."""
    return parse_profile(profile)[2]


def resolve_profile(profile: str | Path) -> Path:
    """A profile name (``smoke``, ``quick``, ``full``) or the path of a YAML file."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ProfileError(f"{path}: no such profile file")
        path = path.resolve()
        if not PROFILE_NAME.fullmatch(path.stem):
            raise ProfileError(
                f"{path}: the profile's name {path.stem!r} (its file name) is invalid; it names the profile's "
                "folders under reports/ and results/, so it must be letters, digits, '_' and '-' only"
            )
        return path
    candidate = paths.PROFILES / f"{profile}.yaml"
    if not candidate.is_file():
        names = sorted(p.stem for p in paths.PROFILES.glob("*.yaml"))
        raise ProfileError(f"unknown profile {str(profile)!r}; valid choices: {', '.join(names)} or a .yaml path")
    return candidate


class _Checker:
    """Raises ``ProfileError`` naming the profile file and the field at fault."""

    def __init__(self, source: str):
        self.source = source

    def require(self, cond: bool, where: str, reason: str):
        if not cond:
            raise ProfileError(f"{self.source}: field {where}: {reason}")

    def config(self, where: str, **params) -> RunConfig:
        try:
            return RunConfig.for_task(params.pop("task"), **params)
        except ConfigError as exc:
            raise ProfileError(f"{self.source}: field {where}: {exc}") from None


def load_profile(profile: str | Path) -> tuple[str, list[RunSpec]]:
    """Parse and validate a profile; return its name and its runs. Nothing runs before this passes."""
    path, specs, _ = parse_profile(profile)
    return path.stem, specs


def parse_profile(profile: str | Path) -> tuple[Path, list[RunSpec], bool]:
    """Parse and validate a profile; return its file, its runs and whether it publishes them."""
    path = resolve_profile(profile)
    check = _Checker(str(path))
    text = path.read_text()
    try:
        nodes = _expanded_nodes(yaml.compose(text, Loader=yaml.SafeLoader), {}) if text.strip() else 0
        check.require(
            nodes <= MAX_NODES,
            "(top level)",
            f"the file expands to {nodes:,} YAML nodes (aliases counted at each use), more than {MAX_NODES:,}: "
            "an alias repeated inside aliases?",
        )
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    check.require(isinstance(doc, dict), "(top level)", "must be a mapping with 'experiments'")
    unknown = sorted(set(doc) - {"description", "experiments", "publish"})
    check.require(not unknown, ", ".join(unknown), "unknown field; valid: description, experiments, publish")
    check.require(isinstance(doc.get("publish", False), bool), "publish", "must be true or false")
    check.require("experiments" in doc, "experiments", "missing")
    experiments = doc["experiments"]
    check.require(isinstance(experiments, list) and experiments, "experiments", "must be a non-empty list")
    planned = sum(_grid_size(exp) for exp in experiments)
    check.require(
        planned <= MAX_RUNS,
        "experiments",
        f"the grids hold {planned:,} runs, more than {MAX_RUNS:,}: split the profile or shrink its grids",
    )
    specs: dict[str, RunSpec] = {}
    same: dict[str, RunSpec] = {}  # the runs by their parameters with every number a float: 1 and 1.0 are one
    for i, exp in enumerate(experiments):
        for spec in _experiment_runs(check, f"experiments[{i}]", exp):
            key = json.dumps(_numbers_as_floats(spec.params), sort_keys=True)
            twin = same.setdefault(key, spec)
            check.require(
                twin.run_id == spec.run_id,
                f"experiments[{i}] ({spec.experiment})",
                f"run {spec.run_id} is run {twin.run_id} of experiment {twin.experiment!r} with a number written "
                "another way (1 and 1.0 are one number); write it as that experiment does, so it runs and counts once",
            )
            specs.setdefault(spec.run_id, spec)  # experiments may share runs: run once
    return path, list(specs.values()), doc.get("publish", False)


#: The most runs a profile may plan (the paper profile plans about 500, full about 1,500).
MAX_RUNS = 20_000


def _grid_size(exp) -> int:
    """The runs an experiment plans (methods × rates × seeds), counted before any is built; 0 if malformed."""
    if not isinstance(exp, dict):
        return 0
    methods, optimizers, seeds = exp.get("methods"), exp.get("optimizers"), exp.get("seeds")
    if not (isinstance(methods, list) and isinstance(optimizers, dict) and isinstance(seeds, list)):
        return 0
    rates = sum(len(r) for r in optimizers.values() if isinstance(r, list))
    return len(methods) * rates * len(seeds)


def _numbers_as_floats(value):
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


#: The most YAML nodes a profile may expand to, aliases counted at every use (a profile is a few hundred).
MAX_NODES = 100_000


def _expanded_nodes(node, memo: dict) -> int:
    """The number of nodes ``node`` stands for with every alias expanded (memoised: a bomb is counted, not built)."""
    key = id(node)
    if key not in memo:
        memo[key] = 0  # a node that holds itself counts once
        if isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(_expanded_nodes(n, memo) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(_expanded_nodes(k, memo) + _expanded_nodes(v, memo) for k, v in node.value)
        else:
            memo[key] = 1
    return memo[key]


def _experiment_runs(check: _Checker, at: str, exp) -> list[RunSpec]:
    check.require(isinstance(exp, dict), at, "must be a mapping")
    for key in EXPERIMENT_FIELDS:
        check.require(key in exp, f"{at}.{key}", "missing")
    extra = sorted(set(exp) - set(EXPERIMENT_FIELDS) - {"settings"})
    check.require(
        not extra, f"{at}.{', '.join(extra)}", f"unknown field; valid: {', '.join(EXPERIMENT_FIELDS + ('settings',))}"
    )
    task = exp["task"]
    check.require(task in TASKS, f"{at}.task", f"{task!r} is not one of {', '.join(TASKS)}")
    settings = _settings(check, at, task, exp.get("settings") or {})
    methods = _methods(check, at, task, settings, exp["methods"])
    rates = _optimizers(check, at, task, settings, exp["optimizers"])
    seeds = exp["seeds"]
    check.require(
        isinstance(seeds, list)
        and seeds
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds),
        f"{at}.seeds",
        "must be a non-empty list of integers ≥ 0",
    )
    doubled = sorted({s for s in seeds if seeds.count(s) > 1})
    if doubled:
        warnings.warn(
            f"{check.source}: field {at}.seeds: seed(s) {', '.join(map(str, doubled))} listed more than once; "
            "each runs once",
            stacklevel=3,
        )
    runs = []
    for method, clip_params in methods:
        for optimizer, learning_rate in rates:
            for seed in seeds:
                config = RunConfig.for_task(
                    task,
                    **settings,
                    method=method,
                    clip_params=clip_params,
                    optimizer=optimizer,
                    learning_rate=learning_rate,
                    seed=seed,
                )
                runs.append(RunSpec(runfiles.run_id(config), RUN_NOTEBOOK, config, str(exp["name"])))
    return runs


def _settings(check: _Checker, at: str, task: str, settings) -> dict:
    check.require(isinstance(settings, dict), f"{at}.settings", "must be a mapping")
    for key in settings:
        check.require(key in SETTINGS, f"{at}.settings.{key}", f"unknown setting; valid: {', '.join(SETTINGS)}")
    try:
        RunConfig.for_task(task, **settings)
    except ConfigError as exc:  # name the setting the message is about
        key = next((k for k in settings if re.match(rf"{k}\b", str(exc))), None)
        raise ProfileError(f"{check.source}: field {at}.settings{'.' + key if key else ''}: {exc}") from None
    return dict(settings)


def _methods(check: _Checker, at: str, task: str, settings: dict, methods) -> list[tuple[str, dict]]:
    check.require(isinstance(methods, list) and methods, f"{at}.methods", "must be a non-empty list")
    parsed = []
    for j, entry in enumerate(methods):
        where = f"{at}.methods[{j}]"
        entry = {"method": entry} if isinstance(entry, str) else entry
        check.require(
            isinstance(entry, dict) and "method" in entry,
            where,
            "must be a method name or a mapping with 'method' and its parameters",
        )
        params = {k: v for k, v in entry.items() if k != "method"}
        check.config(where, task=task, **settings, method=entry["method"], clip_params=params)
        parsed.append((entry["method"], params))
    return parsed


def _optimizers(check: _Checker, at: str, task: str, settings: dict, optimizers) -> list[tuple[str, float]]:
    check.require(
        isinstance(optimizers, dict) and optimizers,
        f"{at}.optimizers",
        "must map optimizer names to lists of learning rates",
    )
    pairs = []
    for name, rates in optimizers.items():
        where = f"{at}.optimizers.{name}"
        check.require(name in OPTIMIZERS, where, f"unknown optimizer; valid: {', '.join(OPTIMIZERS)}")
        check.require(isinstance(rates, list) and rates, where, "must be a non-empty list of learning rates")
        for rate in rates:
            check.config(where, task=task, **settings, optimizer=name, learning_rate=rate)
            pairs.append((name, float(rate)))
    return pairs
