"""Records for report tables from a sweep's Optuna study and its run directories (never from logs).

Per cell (grid point × seed) the decisive trial is the COMPLETE one; a cell with no COMPLETE trial
reports its last real failure (duplicates dropped by the bookkeeping are ignored), and a cell with
no trial at all produces no record, so the table marks it missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from eqbench.report.tables import Record

IGNORED_FAILURES = ("duplicate",)  # the bookkeeping's own drops, not results


def records_from_study(study: optuna.Study) -> list[Record]:
    by_cell: dict[str, list[FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False):
        if "factors" in trial.user_attrs and trial.user_attrs.get("fail_kind") not in IGNORED_FAILURES:
            by_cell.setdefault(trial.user_attrs.get("cell", str(trial.number)), []).append(trial)
    records = []
    for trials in by_cell.values():
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        failed = [t for t in trials if t.state == TrialState.FAIL]
        decisive = done[0] if done else (failed[-1] if failed else None)
        if decisive is not None:
            record = record_from_trial(decisive)
            record.earlier_failures = [_reason(t) for t in failed if t.number < decisive.number]
            records.append(record)
    return records


def _reason(trial: FrozenTrial) -> str:
    attrs = trial.user_attrs
    if "fail_kind" not in attrs:
        return "worker lost (no heartbeat)"
    return f"{attrs['fail_kind']}: {attrs.get('fail_reason', '')}".strip(": ")


def record_from_trial(trial: FrozenTrial) -> Record:
    attrs = trial.user_attrs
    run_dir = Path(attrs["run_dir"]) if attrs.get("run_dir") else None
    metrics, units, n_parameters = {}, {}, attrs.get("n_params")
    ending = {k: attrs[k] for k in ("stop_reason", "epochs") if k in attrs}
    if trial.state == TrialState.COMPLETE and run_dir is not None:
        metrics, units, n_parameters = read_run_metrics(run_dir, n_parameters)
        if not ending:  # trials recorded before workers copied the ending into the study
            ending = read_run_ending(run_dir)
    state = trial.state.name
    reason = _reason(trial) if trial.state == TrialState.FAIL else None
    return Record(factors=dict(attrs["factors"]), seed=attrs.get("seed", 0), state=state, metrics=metrics,
                  units=units, n_parameters=n_parameters, width=attrs.get("matched_width"), reason=reason,
                  run_dir=str(run_dir) if run_dir is not None else None, stop_reason=ending.get("stop_reason"),
                  epochs=ending.get("epochs"))


def read_run_ending(run_dir: Path) -> dict:
    """``stop_reason`` and ``epochs`` of a run from its metrics.json (empty for runs that predate them)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {k: data[k] for k in ("stop_reason", "epochs") if k in data}


def read_run_metrics(run_dir: Path, n_parameters: int | None = None) -> tuple[dict, dict, int | None]:
    """``{stage}_{metric}`` values and units from metrics.json, plus ``profile_mae``/``profile_r2``."""
    metrics, units = {}, {}
    path = run_dir / "metrics.json"
    if path.is_file():
        data = json.loads(path.read_text())
        n_parameters = data.get("n_parameters", n_parameters)
        for stage in ("val", "test"):
            for name, entry in data.get(stage, {}).items():
                metrics[f"{stage}_{name}"] = entry["value"]
                units[f"{stage}_{name}"] = entry.get("unit", "")
    profile = run_dir / "profile.json"
    if profile.is_file():
        data = json.loads(profile.read_text())
        metrics["profile_mae"], units["profile_mae"] = data["mae"], data.get("energy_unit", "")
        metrics["profile_r2"] = data["r2"]
    return metrics, units, n_parameters
