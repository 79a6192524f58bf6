"""Sweep specs: one YAML file per study (``sweeps/*.yaml``), read with ``yaml.safe_load`` and validated.

Format (every error names the file and the key and says what to do)::

    name: painn_ablation                 # names the study and the results folder runs/sweeps/<name>[-<profile>]
    base: configs/painn_md17.yaml        # LightningCLI config (path from the project root or the spec)
    fixed:                               # dotted keys as LightningCLI takes them
      trainer.max_epochs: 50
      model.representation.init_args.cutoff: 3.0
    grid:                                # factors; the study runs their product × seeds
      variant:                           # named variants: {name: {dotted key: value}} ({} = the base)
        full: {}
        no_vectors: {model.representation.init_args.vector_features: false}
        schnet: {model.representation.class_path: eqbench.models.SchNet}   # a variant may switch class
      model.representation.init_args.n_rbf: [16, 20]                        # a dotted key: list of values
      cutoff: {key: model.representation.init_args.cutoff, values: [2.5, 3.0]}   # short name for a key
    space:                               # optional tuning (TPE; needs budget.n_trials)
      lr: {key: model.lr, type: log, low: 1.0e-4, high: 1.0e-2}    # float | int | log | categorical
    seeds: [0, 1, 2]                     # each point per seed; sets seed_everything and data.seed (split)
    objective: {metric: val_energy_mae, direction: minimize}   # <val|test>_<target>_<mae|rmse>, val_loss,
                                                               # or profile_mae / profile_r2 (profile.json)
    match_params: {factor: variant, reference: full, width: n_features}   # widen variants to the
                                                                          # reference's parameter count
    budget: {max_epochs: 100, max_time: 30, n_trials: 40}   # max_time in minutes per trial
    pruner: none                         # none | median | hyperband, or {type: median, n_warmup_steps: 5}
    heartbeat: {interval: 30, grace_period: 120, max_retry: 3}   # seconds; lost workers' trials are retried
    profiles:                            # named override sets: --profile cpu
      cpu: {fixed: {data.train_size: 500}, seeds: [0], budget: {max_epochs: 10}}
    report: {tables: [...], plots: [...], findings: [...]}   # what `eqbench report` makes (eqbench.report.spec)

A profile's ``fixed`` and ``report`` entries are added to (and override) the spec's; its other keys replace
the spec's.
Each profile is its own study (``<name>-<profile>``), so CPU results never count as paper-scale ones.

A **cell** is one unit of work that must end COMPLETE exactly once: a grid point × seed for a grid
study, or one tuning slot for a study with a ``space``.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eqbench.errors import ConfigError
from eqbench.yamlfiles import load_yaml, with_position

SPEC_KEYS = {"name", "description", "base", "fixed", "grid", "space", "seeds", "objective", "match_params",
             "budget", "pruner", "heartbeat", "profiles", "report"}
# A profile may replace any of these (``fixed`` is merged into the spec's fixed overrides instead).
PROFILE_KEYS = {"description", "base", "fixed", "grid", "space", "seeds", "objective", "match_params", "budget",
                "pruner", "heartbeat", "report"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Metrics of metrics.json are <stage>_<name> (val_energy_mae, test_forces_rmse, val_loss); profile.json
# gives profile_mae and profile_r2.
METRIC_PATTERN = re.compile(r"^(?:(val|test)_(loss|[a-z][a-z0-9]*(?:_[a-z0-9]+)*_(?:mae|rmse))|profile_(mae|r2))$",
                            re.IGNORECASE)
SCALAR_TYPES = (str, int, float, bool)


# ------------------------------------------------------------------------------------------- parts of a spec
@dataclass(frozen=True)
class Factor:
    """One grid dimension. ``choices`` are the Optuna parameter values (scalars, or variant names);
    ``overrides[i]`` are the dotted-key overrides that choice ``i`` applies."""

    name: str
    choices: tuple
    overrides: tuple[dict, ...]
    named_variants: bool

    def overrides_for(self, choice) -> dict:
        return self.overrides[self.choices.index(choice)]


@dataclass(frozen=True)
class Dimension:
    """One tuning dimension, sampled by TPE: ``float`` (optionally ``log``), ``int`` or ``categorical``."""

    name: str
    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial):
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # minimize | maximize

    @property
    def monitored_during_training(self) -> bool:
        return self.metric.startswith("val_")


@dataclass(frozen=True)
class MatchParams:
    factor: str  # the factor whose variants are matched
    reference: Any  # the choice every other choice is matched against
    width: str = "n_features"  # the model keyword that sets the width


@dataclass(frozen=True)
class Budget:
    max_epochs: int | None = None
    max_time_min: float | None = None  # per trial, Lightning's trainer.max_time (graceful stop, then test)
    n_trials: int | None = None  # tuning only


@dataclass(frozen=True)
class PrunerSpec:
    kind: str = "none"  # none | median | hyperband
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Heartbeat:
    interval: int = 30  # seconds between heartbeats of a running trial
    grace_period: int = 120  # a RUNNING trial without a heartbeat for this long is failed and retried
    max_retry: int = 3  # retries of one trial after lost workers (a later `sweep run` starts afresh)


@dataclass(frozen=True)
class Cell:
    key: str  # stable identity, stored as the trial's user attribute "cell"
    params: dict  # fixed Optuna parameters (factors and seed); empty for a tuning slot
    seed: int


@dataclass
class SweepSpec:
    name: str
    path: Path
    profile: str | None
    base_path: Path
    base_config: dict
    fixed: dict
    grid: list[Factor]
    space: list[Dimension]
    seeds: list[int]
    objective: Objective
    match: MatchParams | None
    budget: Budget
    pruner: PrunerSpec
    heartbeat: Heartbeat
    description: str = ""
    profiles: tuple[str, ...] = ()
    report: dict | None = None  # the ``report:`` section, read by eqbench.report.spec

    @property
    def study_name(self) -> str:
        """Different profiles are different experiments, so they are different studies."""
        return self.name if self.profile is None else f"{self.name}-{self.profile}"

    @property
    def is_tuning(self) -> bool:
        return bool(self.space)

    def cells(self) -> list[Cell]:
        if self.is_tuning:
            return [Cell(key=f"trial={k:04d}", params={}, seed=self.seeds[0]) for k in range(self.budget.n_trials)]
        cells = []
        for combo in itertools.product(*(f.choices for f in self.grid)):
            for seed in self.seeds:
                params = {f.name: c for f, c in zip(self.grid, combo)}
                params["seed"] = seed
                cells.append(Cell(key=cell_key(params), params=params, seed=seed))
        return cells

    def grid_search_space(self) -> dict[str, list]:
        space = {f.name: list(f.choices) for f in self.grid}
        space["seed"] = list(self.seeds)
        return space


def cell_key(params: dict) -> str:
    return "|".join(f"{name}={value}" for name, value in params.items())


# ------------------------------------------------------------------------------------------- loading
def load_spec(path: str | Path, profile: str | None = None) -> SweepSpec:
    """Read and validate a sweep spec, with ``profile``'s overrides applied."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep spec {path} not found; give the path of a YAML file (e.g. sweeps/quickstart.yaml)")
    raw = load_yaml(path, "sweep spec")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep spec is a mapping with keys {sorted(SPEC_KEYS)}")
    try:
        return _validate(raw, path, profile)
    except ConfigError as err:  # point at the line of the key the message names
        raise ConfigError(with_position(str(err), path)) from err


def _validate(raw: dict, path: Path, profile: str | None) -> SweepSpec:
    where = str(path)
    _check_known(raw, SPEC_KEYS, where)
    profiles = raw.get("profiles") or {}
    _require(isinstance(profiles, dict), f"{where}: 'profiles' must map profile names to override sets")
    if profile is not None:
        if profile not in profiles:
            raise ConfigError(f"{where}: unknown profile {profile!r}; this spec has profiles {sorted(profiles)} "
                              f"(or leave out --profile)")
        raw = apply_profile(raw, profiles[profile], f"{where}: profiles.{profile}")
    return _build(raw, path, profile, tuple(profiles))


def apply_profile(raw: dict, overrides, where: str) -> dict:
    """A profile's ``fixed`` entries are added to (and override) the spec's, and so are its ``report``
    entries (e.g. only ``notes``); its other keys replace the spec's."""
    _require(isinstance(overrides, dict), f"{where} must be a mapping of spec keys")
    _check_known(overrides, PROFILE_KEYS, where)
    merged = dict(raw)
    for key, value in overrides.items():
        if key in ("fixed", "report"):
            _require(isinstance(value, dict), f"{where}.{key} must be a mapping")
            merged[key] = {**(raw.get(key) or {}), **value}
        else:
            merged[key] = value
    return merged


def _build(raw: dict, path: Path, profile: str | None, profile_names: tuple[str, ...]) -> SweepSpec:
    from eqbench.sweep import compose

    where = str(path)
    name = raw.get("name")
    _require(isinstance(name, str) and NAME_PATTERN.match(name or ""),
             f"{where}: 'name' is required: letters, digits, '_', '.', '-' (it names the study and the results folder)")
    if "base" not in raw:
        raise ConfigError(f"{where}: 'base' is required: the LightningCLI config the sweep starts from "
                          f"(e.g. base: configs/quickstart.yaml)")
    base_path = resolve_base(raw["base"], path)
    base_config = compose.load_config(base_path)
    fixed = raw.get("fixed") or {}
    _require(isinstance(fixed, dict), f"{where}: 'fixed' must map dotted config keys to values "
                                      f"(e.g. trainer.max_epochs: 50)")
    grid = _parse_grid(raw.get("grid") or {}, where)
    space = _parse_space(raw.get("space") or {}, where)
    taken = {f.name for f in grid} & {d.name for d in space}
    _require(not taken, f"{where}: {sorted(taken)} are named in both 'grid' and 'space'; rename one")
    _require("seed" not in {f.name for f in grid} | {d.name for d in space},
             f"{where}: 'seed' is reserved for the seeds list; use 'seeds: [0, 1, ...]'")
    spec = SweepSpec(
        name=name, path=path, profile=profile, base_path=base_path, base_config=base_config, fixed=dict(fixed),
        grid=grid, space=space, seeds=_parse_seeds(raw.get("seeds", [0]), where),
        objective=_parse_objective(raw.get("objective"), where), match=None,
        budget=_parse_budget(raw.get("budget") or {}, bool(space), where),
        pruner=_parse_pruner(raw.get("pruner", "none"), where),
        heartbeat=_parse_heartbeat(raw.get("heartbeat") or {}, where),
        description=str(raw.get("description") or ""), profiles=profile_names, report=raw.get("report"),
    )
    spec.match = _parse_match(raw.get("match_params"), grid, where)
    if spec.pruner.kind != "none" and not spec.objective.monitored_during_training:
        raise ConfigError(f"{where}: pruner {spec.pruner.kind!r} compares the objective during training, but "
                          f"{spec.objective.metric!r} is only known at the end; use a val_* objective or pruner: none")
    compose.validate_cells(spec)
    from eqbench.report.spec import parse_report  # checked here so that a bad report section fails before a sweep

    parse_report(spec.report, where, {f.name for f in grid} | {"seed"})
    return spec


def resolve_base(value, spec_path: Path) -> Path:
    """``base`` is looked up in the current directory, then beside the spec, then one level up (the project
    root for ``sweeps/*.yaml``)."""
    _require(isinstance(value, str) and value, f"{spec_path}: 'base' must be the path of a LightningCLI YAML config")
    candidates = [Path(value)] if Path(value).is_absolute() else \
        [Path(value), spec_path.parent / value, spec_path.parent.parent / value]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"{spec_path}: base config {value!r} not found (looked in {[str(c) for c in candidates]}); "
                      f"give a path relative to the project root or the spec")


# ------------------------------------------------------------------------------------------- sections
def _parse_grid(grid, where: str) -> list[Factor]:
    _require(isinstance(grid, dict), f"{where}: 'grid' must map factor names to values or named variants")
    factors = []
    for name, body in grid.items():
        at = f"{where}: grid.{name}"
        _require(isinstance(name, str) and name, f"{where}: grid factor names must be strings")
        if isinstance(body, list):  # dotted key: [values]
            factors.append(_value_factor(name, name, body, at))
        elif isinstance(body, dict) and set(body) == {"key", "values"}:  # short name: {key, values}
            _require(isinstance(body["values"], list), f"{at}.values must be a list")
            factors.append(_value_factor(name, body["key"], body["values"], at))
        elif isinstance(body, dict) and body:  # named variants: {variant: {dotted key: value}}
            overrides = []
            for variant, changes in body.items():
                _require(isinstance(variant, str) and variant, f"{at}: variant names must be strings")
                changes = {} if changes is None else changes
                _require(isinstance(changes, dict), f"{at}.{variant} must map dotted config keys to values "
                                                    f"({{}} for the unchanged base)")
                overrides.append(dict(changes))
            factors.append(Factor(name, tuple(body), tuple(overrides), named_variants=True))
        else:
            raise ConfigError(f"{at}: a factor is a list of values (for a dotted key), {{key: ..., values: [...]}}, "
                              f"or named variants {{name: {{dotted.key: value}}}}")
    return factors


def _value_factor(name: str, key, values: list, at: str) -> Factor:
    _require(isinstance(key, str) and "." in key or key == "seed_everything",
             f"{at}: {key!r} is not a dotted config key (e.g. model.representation.init_args.cutoff)")
    _require(len(values) > 0, f"{at}: give at least one value")
    for v in values:
        _require(isinstance(v, SCALAR_TYPES) or v is None,
                 f"{at}: value {v!r} is not a scalar; use named variants for structured values")
    _require(len(set(map(repr, values))) == len(values), f"{at}: values must be distinct")
    return Factor(name, tuple(values), tuple({key: v} for v in values), named_variants=False)


def _parse_space(space, where: str) -> list[Dimension]:
    _require(isinstance(space, dict), f"{where}: 'space' must map names to {{key, type, low, high}} or "
                                      f"{{key, type: categorical, choices}}")
    dims = []
    for name, body in space.items():
        at = f"{where}: space.{name}"
        _require(isinstance(body, dict), f"{at} must be a mapping with key, type and range")
        _check_known(body, {"key", "type", "low", "high", "log", "step", "choices"}, at)
        key = body.get("key", name)
        _require(isinstance(key, str) and "." in key, f"{at}: 'key' must be a dotted config key (e.g. model.lr)")
        kind = body.get("type", "float")
        log = bool(body.get("log", False))
        if kind == "log":  # shorthand for a log-uniform float
            kind, log = "float", True
        if kind == "categorical":
            choices = body.get("choices")
            _require(isinstance(choices, list) and choices, f"{at}: a categorical dimension needs 'choices: [...]'")
            dims.append(Dimension(name, key, kind, choices=tuple(choices)))
            continue
        _require(kind in ("float", "int"), f"{at}: type must be float, int, log or categorical, not {kind!r}")
        low, high = body.get("low"), body.get("high")
        _require(isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high,
                 f"{at}: give numbers low < high")
        _require(not log or low > 0, f"{at}: a log dimension needs low > 0")
        dims.append(Dimension(name, key, kind, float(low), float(high), log, body.get("step")))
    return dims


def _parse_seeds(seeds, where: str) -> list[int]:
    _require(isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds),
             f"{where}: 'seeds' must be a non-empty list of integers (each grid point runs once per seed)")
    _require(len(set(seeds)) == len(seeds), f"{where}: 'seeds' must be distinct")
    return list(seeds)


def _parse_objective(objective, where: str) -> Objective:
    _require(objective is not None, f"{where}: 'objective' is required, e.g. objective: {{metric: val_energy_mae, "
                                    f"direction: minimize}}")
    if isinstance(objective, str):
        objective = {"metric": objective}
    _require(isinstance(objective, dict), f"{where}: 'objective' must be {{metric: ..., direction: ...}}")
    _check_known(objective, {"metric", "direction"}, f"{where}: objective")
    metric = objective.get("metric")
    if not isinstance(metric, str) or not METRIC_PATTERN.match(metric):
        raise ConfigError(f"{where}: objective.metric {metric!r} is not a metric eqbench records; use "
                          f"<val|test>_<target>_<mae|rmse> (e.g. val_energy_mae), val_loss, or profile_mae/profile_r2")
    default = "maximize" if metric.endswith("_r2") else "minimize"
    direction = objective.get("direction", default)
    _require(direction in ("minimize", "maximize"), f"{where}: objective.direction must be minimize or maximize")
    return Objective(metric, direction)


def _parse_match(match, grid: list[Factor], where: str) -> MatchParams | None:
    if match is None:
        return None
    _require(isinstance(match, dict), f"{where}: 'match_params' must be {{reference: VARIANT, width: n_features}}")
    _check_known(match, {"factor", "reference", "width"}, f"{where}: match_params")
    variant_factors = [f for f in grid if f.named_variants]
    name = match.get("factor")
    if name is None:
        _require(len(variant_factors) == 1, f"{where}: match_params.factor is needed when the grid has "
                                            f"{len(variant_factors)} factors with named variants")
        name = variant_factors[0].name
    factor = next((f for f in grid if f.name == name), None)
    _require(factor is not None, f"{where}: match_params.factor {name!r} is not a grid factor "
                                 f"({[f.name for f in grid]})")
    reference = match.get("reference")
    _require(reference in factor.choices, f"{where}: match_params.reference {reference!r} is not a choice of "
                                          f"factor {name!r} ({list(factor.choices)})")
    width = match.get("width", "n_features")
    _require(isinstance(width, str), f"{where}: match_params.width must be a model keyword such as n_features")
    return MatchParams(name, reference, width)


def _parse_budget(budget, tuning: bool, where: str) -> Budget:
    _require(isinstance(budget, dict), f"{where}: 'budget' must be {{max_epochs, max_time, n_trials}}")
    _check_known(budget, {"max_epochs", "max_time", "n_trials"}, f"{where}: budget")
    epochs, minutes, n_trials = budget.get("max_epochs"), budget.get("max_time"), budget.get("n_trials")
    _require(epochs is None or isinstance(epochs, int) and epochs > 0, f"{where}: budget.max_epochs must be > 0")
    _require(minutes is None or isinstance(minutes, (int, float)) and minutes > 0,
             f"{where}: budget.max_time is minutes per trial (> 0)")
    if tuning:
        _require(isinstance(n_trials, int) and n_trials > 0, f"{where}: a spec with 'space' needs budget.n_trials")
    else:
        _require(n_trials is None, f"{where}: budget.n_trials is for tuning ('space'); a grid runs every point × seed")
    return Budget(epochs, None if minutes is None else float(minutes), n_trials)


def _parse_pruner(pruner, where: str) -> PrunerSpec:
    if isinstance(pruner, str) or pruner is None:
        pruner = {"type": pruner or "none"}
    _require(isinstance(pruner, dict), f"{where}: 'pruner' must be none, median, hyperband or {{type: ..., options}}")
    kind = pruner.get("type", "none")
    options = {k: v for k, v in pruner.items() if k != "type"}
    allowed = {"none": set(), "median": {"n_startup_trials", "n_warmup_steps", "interval_steps"},
               "hyperband": {"min_resource", "reduction_factor"}}
    _require(kind in allowed, f"{where}: pruner.type must be none, median or hyperband, not {kind!r}")
    _check_known(options, allowed[kind], f"{where}: pruner ({kind})")
    return PrunerSpec(kind, options)


def _parse_heartbeat(heartbeat, where: str) -> Heartbeat:
    _require(isinstance(heartbeat, dict), f"{where}: 'heartbeat' must be {{interval, grace_period, max_retry}}")
    _check_known(heartbeat, {"interval", "grace_period", "max_retry"}, f"{where}: heartbeat")
    hb = Heartbeat(**heartbeat)
    _require(all(isinstance(v, int) and v > 0 for v in (hb.interval, hb.grace_period)),
             f"{where}: heartbeat.interval and grace_period are whole seconds > 0")
    _require(hb.grace_period > hb.interval, f"{where}: heartbeat.grace_period must exceed heartbeat.interval")
    _require(isinstance(hb.max_retry, int) and hb.max_retry >= 0, f"{where}: heartbeat.max_retry is a count ≥ 0")
    return hb


# ------------------------------------------------------------------------------------------- helpers
def _check_known(mapping: dict, known: set, where: str) -> None:
    unknown = sorted(set(mapping) - known, key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")


def _require(condition, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def max_time_string(minutes: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for a number of minutes (rounded up to whole seconds)."""
    seconds = int(math.ceil(minutes * 60))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days:02d}:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
