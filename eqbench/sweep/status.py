"""``eqbench sweep status``: every trial (state, factors, objective, duration, how it ended or how far a
running one is, failure reason) and, per grid point, the objective over seeds. Rich tables on a terminal,
plain text otherwise (or ``--plain``); ``--watch`` refreshes them until no cell is left to run.

A run stopped by ``budget.max_time`` before its last epoch is marked ``‡`` (its training was cut short,
so its numbers depend on the machine's speed and load), in the trial table and in its grid point's
objective, with a legend line.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from eqbench.sweep.spec import SweepSpec

NOTE_CHARS = 90
TIME_LIMITED = "‡"
LEGEND = f"{TIME_LIMITED} stopped by budget.max_time before max_epochs: cut short, its result depends on the " \
         f"machine's speed and load"


def trial_rows(spec: SweepSpec, study: optuna.Study) -> tuple[list[str], list[list[str]]]:
    trials = study.get_trials(deepcopy=False)
    retried_as = {t.system_attrs.get("failed_trial"): t.number for t in trials if "failed_trial" in t.system_attrs}
    names = [f.name for f in spec.grid] + [d.name for d in spec.space]
    header = ["#", "state", *names, "seed", spec.objective.metric, "width", "duration", "epochs", "note"]
    rows = []
    for t in trials:
        factors = t.user_attrs.get("factors") or t.params
        rows.append([str(t.number), t.state.name, *[_fmt(factors.get(n, "")) for n in names],
                     str(t.user_attrs.get("seed", t.params.get("seed", ""))), _fmt(_objective(spec, t)),
                     str(t.user_attrs.get("matched_width", "")), _duration(t), _epochs(t), _note(t, retried_as)])
    return header, rows


def ending(t: FrozenTrial) -> dict:
    """How a finished trial's training ended (stop_reason, epochs): from its user attributes, else from its
    run directory's metrics.json (trials recorded before the worker copied them)."""
    if "stop_reason" in t.user_attrs:
        return {"stop_reason": t.user_attrs["stop_reason"], "epochs": t.user_attrs.get("epochs")}
    metrics = _read_json(t.user_attrs.get("run_dir"), "metrics.json")
    return {k: metrics[k] for k in ("stop_reason", "epochs", "max_epochs") if k in metrics}


def time_limited(t: FrozenTrial) -> bool:
    return ending(t).get("stop_reason") == "max_time"


def _epochs(t: FrozenTrial) -> str:
    if t.state == TrialState.RUNNING:
        from eqbench.sweep.progress import PROGRESS_FILE, format_progress

        progress = _read_json(t.user_attrs.get("run_dir"), PROGRESS_FILE)
        return format_progress(progress).split(":")[0] + (f", ETA {progress['eta_s'] / 60:.1f} min"
                                                            if progress.get("eta_s") is not None else "") \
            if progress else ""
    end = ending(t)
    if not end:
        return ""
    text = f"{end.get('epochs', '?')} ({end.get('stop_reason', '?')})"
    return text + f" {TIME_LIMITED}" if end.get("stop_reason") == "max_time" else text


def _read_json(run_dir, name: str) -> dict:
    if not run_dir:
        return {}
    try:
        return json.loads((Path(run_dir) / name).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def point_rows(spec: SweepSpec, study: optuna.Study) -> tuple[list[str], list[list[str]]]:
    """Per grid point: seeds done and the objective (and profile R², when recorded) as mean ± std."""
    groups: dict[tuple, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        factors = t.user_attrs.get("factors") or {}
        groups.setdefault(tuple(factors.get(f.name) for f in spec.grid), []).append(t)
    show_r2 = spec.objective.metric != "profile_r2" and any("profile_r2" in t.user_attrs
                                                             for trials in groups.values() for t in trials)
    header = [f.name for f in spec.grid] + ["seeds", spec.objective.metric] + (["profile_r2"] if show_r2 else []) + \
        ["parameters"]
    rows = []
    for point, trials in sorted(groups.items(), key=lambda kv: [str(v) for v in kv[0]]):
        r2 = [t.user_attrs["profile_r2"] for t in trials if "profile_r2" in t.user_attrs]
        n_params = sorted({t.user_attrs.get("n_parameters") for t in trials} - {None})
        mark = f" {TIME_LIMITED}" if any(time_limited(t) for t in trials) else ""
        rows.append([*[_fmt(v) for v in point], f"{len(trials)}/{len(spec.seeds)}",
                     _mean_std([t.value for t in trials]) + mark,
                     *([_mean_std(r2) if r2 else ""] if show_r2 else []), ", ".join(f"{n:,}" for n in n_params)])
    return header, rows


def cell_summary(spec: SweepSpec, study: optuna.Study) -> dict[str, int]:
    """How many cells are complete, pruned, running, waiting, failed (no other trial) or not started."""
    cells = {c.key for c in spec.cells()}
    best: dict[str, TrialState] = {}
    for t in study.get_trials(deepcopy=False):
        cell = t.user_attrs.get("cell")
        if cell in cells and _PRIORITY[t.state] >= _PRIORITY.get(best.get(cell), -1):
            best[cell] = t.state
    counts = {"cells": len(cells), **{name: 0 for name in _LABEL.values()}}
    for state in best.values():
        counts[_LABEL[state]] += 1
    counts["not started"] = len(cells) - len(best)
    return counts


_PRIORITY = {TrialState.COMPLETE: 4, TrialState.PRUNED: 3, TrialState.RUNNING: 2, TrialState.WAITING: 1,
             TrialState.FAIL: 0}
_LABEL = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.RUNNING: "running",
          TrialState.WAITING: "waiting", TrialState.FAIL: "failed"}


def print_status(spec: SweepSpec, study: optuna.Study, plain: bool | None = None, out=None) -> dict[str, int]:
    out = out or sys.stdout
    plain = not out.isatty() if plain is None else plain
    counts = cell_summary(spec, study)
    title = f"sweep {spec.study_name} ({spec.path}): " + \
        ", ".join(f"{v} {k}" for k, v in counts.items() if v or k == "cells")
    header, rows = trial_rows(spec, study)
    _table(title, header, rows, plain, out)
    marked = any(TIME_LIMITED in cell for row in rows for cell in row)
    if not spec.is_tuning:
        header, rows = point_rows(spec, study)
        if rows:
            _table(f"per grid point, over seeds ({spec.objective.direction} {spec.objective.metric})", header, rows,
                   plain, out)
    if marked:
        print(LEGEND, file=out)
    return counts


def watch_status(spec: SweepSpec, open_study, interval: float = 10.0, plain: bool | None = None, out=None,
                 max_refreshes: int | None = None) -> dict[str, int]:
    """Print the status every ``interval`` seconds (clearing a terminal first) until no cell is running or
    waiting; ``open_study()`` gives a fresh view of the study each time."""
    out = out or sys.stdout
    tty = out.isatty() if plain is None else not plain
    refreshes = 0
    while True:
        if tty:
            out.write("\x1b[2J\x1b[H")  # clear the screen, cursor home
        else:
            print(f"--- {datetime.now():%H:%M:%S}", file=out)
        counts = print_status(spec, open_study(), plain=plain, out=out)
        refreshes += 1
        if not counts["running"] and not counts["waiting"] or (max_refreshes and refreshes >= max_refreshes):
            return counts
        out.flush()
        time.sleep(interval)


# ------------------------------------------------------------------------------------------- formatting
def _table(title: str, header: list[str], rows: list[list[str]], plain: bool, out) -> None:
    if not plain:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for name in header:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(*row)
        Console(file=out).print(table)
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(title, file=out)
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=out)
    print(file=out)


def _objective(spec: SweepSpec, t: FrozenTrial):
    if t.value is not None:
        return t.value
    return (t.user_attrs.get("metrics") or {}).get(spec.objective.metric)


def _note(t: FrozenTrial, retried_as: dict) -> str:
    if t.state == TrialState.FAIL:
        if "fail_kind" in t.user_attrs:
            note = f"{t.user_attrs['fail_kind']}: {t.user_attrs.get('fail_reason', '')}"
        else:
            note = "worker lost (no heartbeat)"
        if t.number in retried_as:
            note += f"; retried as #{retried_as[t.number]}"
        return note[:NOTE_CHARS]
    if t.state == TrialState.RUNNING:
        return f"on {t.user_attrs.get('worker', '?')}"
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "run_dir" in t.user_attrs:
        return _relative(t.user_attrs["run_dir"])
    return ""


def _relative(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:  # not below the current directory
        return path


def _duration(t: FrozenTrial) -> str:
    if t.datetime_start is None:
        return ""
    end = t.datetime_complete or datetime.now()
    seconds = (end - t.datetime_start).total_seconds()
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.5g}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def _mean_std(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"
