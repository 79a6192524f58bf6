"""A trial's LightningCLI config: the base config with the spec's overrides, parameter matching, budget,
seed, run options and the sweep callbacks applied.

Overrides are dotted keys as LightningCLI takes them (``model.representation.init_args.cutoff``). Every
key is checked against the signature of the class it configures (AtomisticTask, the representation
named by ``class_path``, AtomisticDataModule, lightning.Trainer, RunOptions), so a typo fails when the
spec is read, naming the key, not hours later in a trial. When an override switches a ``class_path``,
inherited ``init_args`` the new class does not take are dropped (as LightningCLI does on the command
line); keys the override sets explicitly are kept and checked.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib
import inspect
import json
from pathlib import Path

from eqbench.errors import ConfigError
from eqbench.sweep.spec import SweepSpec, max_time_string
from eqbench.yamlfiles import load_yaml

SECTIONS = ("seed_everything", "ckpt_path", "trainer", "model", "data", "run")
DEFAULT_TARGETS = [{"name": "energy"}, {"name": "forces"}]  # AtomisticTask's default
REPRESENTATION = "model.representation"


def load_config(path: Path) -> dict:
    config = load_yaml(path, "base config")
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a LightningCLI config is a mapping (model, data, trainer, ...)")
    return config


# ------------------------------------------------------------------------------------------- composition
def set_key(config: dict, key: str, value, where: str) -> None:
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: cannot set {key!r}: {part!r} holds {child!r}, not a mapping")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def get_key(config: dict, key: str, default=None):
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def compose(spec: SweepSpec, params: dict) -> tuple[dict, dict[str, str]]:
    """Base config + fixed + each factor's choice + tuning values. Returns the config and, for every key an
    override set, where in the spec it came from (for error messages)."""
    config = copy.deepcopy(spec.base_config)
    layers = [("fixed", spec.fixed)]
    layers += [(f"grid.{f.name}={params[f.name]}", f.overrides_for(params[f.name])) for f in spec.grid]
    layers += [(f"space.{d.name}", {d.key: params[d.name]}) for d in spec.space if d.name in params]
    origin: dict[str, str] = {}
    for where, overrides in layers:
        for key, value in overrides.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"{spec.path}: {where}: override keys must be dotted config keys, not {key!r}")
            set_key(config, key, value, f"{spec.path}: {where}")
            origin[key] = where
    _fit_init_args_to_switched_classes(config, origin)
    return config, origin


def _fit_init_args_to_switched_classes(config: dict, origin: dict[str, str]) -> None:
    for key in origin:
        if not key.endswith(".class_path"):
            continue
        prefix = key[: -len(".class_path")]
        node = get_key(config, prefix)
        init_args = node.get("init_args") if isinstance(node, dict) else None
        if not isinstance(init_args, dict):
            continue
        accepted = constructor_arguments(import_class(node["class_path"], key))
        for name in list(init_args):
            if name not in accepted and f"{prefix}.init_args.{name}" not in origin:
                del init_args[name]  # inherited from the base's class, meaningless for the new one


def trial_config(spec: SweepSpec, params: dict, seed: int, run_dir: Path, tags: list[str]) -> tuple[dict, dict]:
    """The config one trial trains with, and the parameter-matching record for its user attributes."""
    config, origin = compose(spec, params)
    matching = apply_matching(spec, params, config)
    if spec.budget.max_epochs is not None:
        set_key(config, "trainer.max_epochs", spec.budget.max_epochs, "budget")
    if spec.budget.max_time_min is not None:
        set_key(config, "trainer.max_time", max_time_string(spec.budget.max_time_min), "budget")
    # The seed selects the initialisation and the random split.
    config["seed_everything"] = seed
    set_key(config, "data.seed", seed, "seeds")
    run = dict(config.get("run") or {})
    run.update({"dir": str(run_dir), "wandb_group": spec.study_name, "tags": tags})
    config["run"] = run
    callbacks = get_key(config, "trainer.callbacks") or []
    callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
    callbacks.append({"class_path": "eqbench.sweep.callbacks.NonFiniteLossGuard"})
    callbacks.append({"class_path": "eqbench.sweep.callbacks.TrialProgress", "init_args": progress_monitor(spec)})
    if spec.pruner.kind != "none":
        callbacks.append({"class_path": "eqbench.sweep.callbacks.OptunaPruning",
                          "init_args": {"monitor": spec.objective.metric}})
    set_key(config, "trainer.callbacks", callbacks, "sweep")
    return config, matching


def progress_monitor(spec: SweepSpec) -> dict:
    """The validation metric a trial's progress lines show: the objective when it is one (``test_X``
    shows ``val_X``), else the validation loss."""
    metric = spec.objective.metric
    if metric.startswith("test_"):
        metric = "val_" + metric[len("test_"):]
    if not metric.startswith("val_"):
        return {"monitor": "val_loss", "mode": "min"}
    return {"monitor": metric, "mode": "max" if spec.objective.direction == "maximize" else "min"}


# ------------------------------------------------------------------------------------------- validation
def validate_cells(spec: SweepSpec) -> None:
    """Compose every grid point once (seeds do not change the config) and check its keys, its objective
    metric, the parameter-matching width and the argument types."""
    where = str(spec.path)
    for key in ("trainer.max_epochs", "trainer.max_time"):
        budget_value = spec.budget.max_epochs if key.endswith("epochs") else spec.budget.max_time_min
        if budget_value is not None and key in spec.fixed:
            raise ConfigError(f"{where}: {key} is set in both 'fixed' and 'budget'; keep it in budget only")
    points = [dict(c.params) for c in spec.cells() if c.seed == spec.seeds[0]] if not spec.is_tuning else [{}]
    for params in points:
        for dim in spec.space:  # any value in range: only keys and types are checked here
            params[dim.name] = dim.choices[0] if dim.kind == "categorical" else \
                (int(dim.low) if dim.kind == "int" else dim.low)
        label = ", ".join(f"{k}={v}" for k, v in params.items())
        config, origin = compose(spec, params)
        for key, source in origin.items():
            check_key(config, key, f"{where}: {source}")
        check_objective(spec, config, f"{where}: objective (at {label})")
        if spec.match is not None:
            from eqbench.sweep.matching import default_width

            name, _, _ = model_of(config, f"{where}: match_params")
            default_width(name, spec.match.width)  # raises naming the keyword when the model has no such width
        check_types(config, f"{where} (at {label})")


def check_key(config: dict, key: str, where: str) -> None:
    parts = key.split(".")
    if parts[0] not in SECTIONS:
        raise ConfigError(f"{where}: unknown key {key!r}: an eqbench config has sections {list(SECTIONS)}")
    if parts[0] in ("seed_everything", "ckpt_path") or len(parts) == 1:
        if len(parts) > 1:
            raise ConfigError(f"{where}: unknown key {key!r}: {parts[0]} is a single value")
        return
    _check_argument(section_class(parts[0]), parts[1], key, where)
    if key.startswith(REPRESENTATION + ".") and len(parts) > 2:
        if parts[2] not in ("class_path", "init_args"):
            raise ConfigError(f"{where}: unknown key {key!r}: use {REPRESENTATION}.class_path or "
                              f"{REPRESENTATION}.init_args.<argument>")
        if parts[2] == "init_args" and len(parts) > 3:
            class_path = get_key(config, REPRESENTATION + ".class_path")
            _check_argument(import_class(class_path, REPRESENTATION + ".class_path"), parts[3], key, where)


def _check_argument(cls, name: str, key: str, where: str) -> None:
    accepted = constructor_arguments(cls)
    if name in accepted:
        return
    close = difflib.get_close_matches(name, accepted, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; it takes {sorted(accepted)}"
    raise ConfigError(f"{where}: unknown key {key!r}: {cls.__name__} has no argument {name!r}{hint}")


def check_objective(spec: SweepSpec, config: dict, where: str) -> None:
    metric = spec.objective.metric
    if metric.startswith("profile_"):
        callbacks = get_key(config, "trainer.callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if not any(isinstance(c, dict) and str(c.get("class_path", "")).endswith("ProfileEvaluation")
                   for c in callbacks):
            raise ConfigError(f"{where}: {metric} comes from profile.json, which needs the callback "
                              f"eqbench.evaluate.profile.ProfileEvaluation in trainer.callbacks")
        return
    name = metric.split("_", 1)[1]
    if name == "loss":
        return
    target = name.rsplit("_", 1)[0]
    targets = [t.get("name") for t in (get_key(config, "model.targets") or DEFAULT_TARGETS) if isinstance(t, dict)]
    if target not in targets:
        raise ConfigError(f"{where}: metric {metric!r} needs target {target!r}, but model.targets are {targets}; "
                          f"use e.g. {metric.split('_')[0]}_{targets[0]}_mae")


@functools.lru_cache(maxsize=1)
def _type_parser():
    from jsonargparse import ArgumentParser

    from eqbench.data.datamodule import AtomisticDataModule
    from eqbench.task import AtomisticTask
    from eqbench.tracking import RunOptions

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(AtomisticTask, "model")
    parser.add_class_arguments(AtomisticDataModule, "data")
    parser.add_class_arguments(RunOptions, "run")
    return parser


def check_types(config: dict, where: str) -> None:
    """Model, data and run sections parsed the way LightningCLI parses them (types, class_path), without
    building anything. The trainer section is checked by Lightning when the trial starts."""
    from jsonargparse import ArgumentError

    sections = {k: config[k] for k in ("model", "data", "run") if k in config}
    try:
        _type_parser().parse_object(sections)
    except ArgumentError as err:
        raise ConfigError(f"{where}: the composed config is invalid: {err}") from err


# ------------------------------------------------------------------------------------------- classes
def section_class(section: str):
    if section == "model":
        from eqbench.task import AtomisticTask

        return AtomisticTask
    if section == "data":
        from eqbench.data.datamodule import AtomisticDataModule

        return AtomisticDataModule
    if section == "run":
        from eqbench.tracking import RunOptions

        return RunOptions
    from lightning.pytorch import Trainer

    return Trainer


@functools.cache
def constructor_arguments(cls) -> tuple[str, ...]:
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def import_class(class_path, key: str):
    if not isinstance(class_path, str) or not class_path:
        raise ConfigError(f"{key}: expected a class path such as eqbench.models.PaiNN, got {class_path!r}")
    if "." not in class_path:  # LightningCLI also takes a registered model's class name
        from eqbench.models import MODELS

        for cls in MODELS.values():
            if cls.__name__ == class_path:
                return cls
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{key}: cannot import {class_path!r} ({err}); give a full class path "
                          f"such as eqbench.models.PaiNN") from err


# ------------------------------------------------------------------------------------------- parameter matching
def model_of(config: dict, where: str) -> tuple[str, dict, list]:
    """(registered model name, its keyword arguments, targets) of a composed config."""
    from eqbench.models import MODELS

    class_path = get_key(config, REPRESENTATION + ".class_path")
    cls = import_class(class_path, f"{where}: {REPRESENTATION}.class_path")
    name = next((n for n, c in MODELS.items() if c is cls), None)
    if name is None:
        raise ConfigError(f"{where}: parameter matching needs a model registered in eqbench.models.MODELS; "
                          f"{class_path} is not")
    kwargs = dict(get_key(config, REPRESENTATION + ".init_args") or {})
    targets = get_key(config, "model.targets") or DEFAULT_TARGETS
    return name, kwargs, targets


@functools.lru_cache(maxsize=256)
def _count(name: str, kwargs_json: str, targets_json: str) -> int:
    from eqbench.sweep.matching import count_model_parameters

    return count_model_parameters(name, json.loads(kwargs_json), json.loads(targets_json))


@functools.lru_cache(maxsize=256)
def _match(name: str, kwargs_json: str, targets_json: str, n_params: int, width: str):
    from eqbench.sweep.matching import width_for_budget

    return width_for_budget(name, json.loads(kwargs_json), n_params, key=width, targets=json.loads(targets_json))


def _dump(value) -> str:
    return json.dumps(value, sort_keys=True)


def apply_matching(spec: SweepSpec, params: dict, config: dict) -> dict:
    """Set the width of this trial's model so that its parameter count matches the reference variant's
    (same other factors); returns what was done, for the trial's user attributes."""
    if spec.match is None:
        return {}
    where = f"{spec.path}: match_params"
    name, kwargs, targets = model_of(config, where)
    match = spec.match
    factor = next(f for f in spec.grid if f.name == match.factor)
    choice = params[match.factor]
    reference_config, _ = compose(spec, {**params, match.factor: match.reference})
    ref_name, ref_kwargs, ref_targets = model_of(reference_config, where)
    reference_n = _count(ref_name, _dump(ref_kwargs), _dump(ref_targets))
    width_key = f"{REPRESENTATION}.init_args.{match.width}"
    if choice == match.reference or width_key in factor.overrides_for(choice):
        # The reference itself, or a variant whose width the spec sets by hand: nothing to match.
        from eqbench.sweep.matching import default_width

        width = kwargs.get(match.width, default_width(name, match.width))
        n_params = _count(name, _dump(kwargs), _dump(targets))
        how = "reference" if choice == match.reference else "set by the variant"
    else:
        result = _match(name, _dump(kwargs), _dump(targets), reference_n, match.width)
        width, n_params, how = result.width, result.n_params, "matched"
        set_key(config, width_key, width, where)
    return {"match_width_key": match.width, "matched_width": width, "match": how, "n_params": n_params,
            "reference_n_params": reference_n, "match_relative_difference": (n_params - reference_n) / reference_n}
