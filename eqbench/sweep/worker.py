"""A sweep worker: claims queued trials one after another, runs each as its own process, tells Optuna.

One worker runs one trial at a time (one GPU, or a share of the CPU cores). While a trial runs, the
worker records its heartbeat in the storage; if the worker dies, the trial goes stale and the next
worker or ``sweep run`` retries it (see :mod:`eqbench.sweep.study`). A trial's failure — an exception,
a NaN loss, out of memory, a timeout, a killed trial process — is recorded on that trial only
(``fail_kind``, ``fail_reason``), and the worker goes on with the next one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from eqbench.errors import ConfigError
from eqbench.sweep.callbacks import SWEEP_TRIAL_ENV
from eqbench.sweep.compose import trial_config
from eqbench.sweep.progress import ProgressFollower
from eqbench.sweep.spec import SweepSpec
from eqbench.sweep.study import claim_next_trial, earlier_trial_of_cell, open_storage, open_study, running_elsewhere
from eqbench.sweep.trial import TRIAL_CONFIG, TRIAL_LOG, TRIAL_RESULT

STOP_GRACE_S = 30  # after SIGTERM, how long a trial process may take to stop before SIGKILL


class Terminated(Exception):
    """The worker received SIGTERM (e.g. SLURM's time limit or preemption)."""


@dataclass
class Outcome:
    state: TrialState
    value: float | None = None
    # fail_kind: error | nan | oom | timeout | killed | config | storage | interrupted | duplicate
    kind: str | None = None
    reason: str | None = None
    attrs: dict = field(default_factory=dict)

    @classmethod
    def failed(cls, kind: str, reason: str, **attrs) -> Outcome:
        return cls(TrialState.FAIL, kind=kind, reason=reason, attrs=attrs)


class HeartbeatThread:
    """Records a trial's heartbeat every ``interval`` seconds while it runs (as ``study.optimize`` does)."""

    def __init__(self, storage, trial_id: int, interval: int):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except optuna.exceptions.StorageInternalError as err:  # database briefly unreachable: try again
                warnings.warn(f"heartbeat of trial id {self.trial_id} not recorded: {err}", stacklevel=1)

    def __enter__(self) -> HeartbeatThread:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class SweepWorker:
    """Claims and runs the trials of one study until none is queued.

    Args:
        wait_for_running: when nothing is queued but other workers' trials are running, wait: one of
            them may turn out lost and be queued again (``sweep run`` waits; SLURM array tasks don't, so
            they release their allocation; the next ``sweep run`` retries what was lost).
        trial_env: extra environment of the trial processes (CUDA_VISIBLE_DEVICES, thread counts).
    """

    def __init__(self, spec: SweepSpec, storage_url: str, runs_dir: str | Path, name: str | None = None,
                 wait_for_running: bool = True, trial_env: dict | None = None, max_trials: int | None = None,
                 log: Callable[[str], None] | None = None):
        self.spec, self.storage_url, self.runs_dir = spec, storage_url, Path(runs_dir)
        self.name = name or f"{platform.node()}:{os.getpid()}"
        self.wait_for_running, self.trial_env, self.max_trials = wait_for_running, dict(trial_env or {}), max_trials
        self._log = log or (lambda line: print(line, flush=True))
        hard = None if spec.budget.max_time_min is None else 2 * 60 * spec.budget.max_time_min + 600
        self.hard_timeout_s = hard  # Lightning stops at max_time and then tests; this only catches hangs

    def log(self, message: str) -> None:
        self._log(f"[{self.name}] {message}")

    # ------------------------------------------------------------------ loop
    def run(self) -> Counter:
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the worker prints its own one-line reports
        try:
            return self._loop()
        finally:
            optuna.logging.set_verbosity(verbosity)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _loop(self) -> Counter:
        storage = open_storage(self.storage_url, self.spec.heartbeat)
        study = open_study(self.spec, storage)
        cells = {c.key for c in self.spec.cells()}
        counts: Counter = Counter()
        waiting_announced = False
        while self.max_trials is None or sum(counts.values()) < self.max_trials:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # lost workers' trials → FAIL, and queued again
            trial_id = claim_next_trial(study, storage, cells)
            if trial_id is None:
                busy = running_elsewhere(study, cells)
                if not busy or not self.wait_for_running:
                    break
                if not waiting_announced:
                    self.log(f"nothing queued; waiting for trial(s) {[t.number for t in busy]} running elsewhere "
                             f"(one whose worker is lost is retried {self.spec.heartbeat.grace_period} s after "
                             f"its last heartbeat)")
                    waiting_announced = True
                time.sleep(min(self.spec.heartbeat.interval, 10))
                continue
            waiting_announced = False
            counts[self._run_claimed(study, storage, trial_id).name] += 1
        return counts

    def _run_claimed(self, study: optuna.Study, storage, trial_id: int) -> TrialState:
        trial = optuna.trial.Trial(study, trial_id)
        frozen = storage.get_trial(trial_id)
        earlier = earlier_trial_of_cell(study, frozen)
        if earlier is not None:
            outcome = Outcome.failed("duplicate", f"cell {frozen.user_attrs.get('cell')} is run by trial "
                                                  f"{earlier.number} ({earlier.state.name}); this copy was not run")
            return self._tell(study, trial, frozen.number, outcome)
        with HeartbeatThread(storage, trial_id, self.spec.heartbeat.interval):
            try:
                outcome = self._execute(trial, frozen, trial_id)
            except (KeyboardInterrupt, Terminated) as err:
                signal_name = "SIGINT" if isinstance(err, KeyboardInterrupt) else "SIGTERM"
                self._tell(study, trial, frozen.number, Outcome.failed(
                    "interrupted", f"worker stopped by {signal_name}; the next `eqbench sweep run` runs it again"))
                raise
            return self._tell(study, trial, frozen.number, outcome)

    # ------------------------------------------------------------------ one trial
    def _execute(self, trial: optuna.trial.Trial, frozen, trial_id: int) -> Outcome:
        spec = self.spec
        params = {f.name: trial.suggest_categorical(f.name, list(f.choices)) for f in spec.grid}
        seed = trial.suggest_categorical("seed", list(spec.seeds)) if not spec.is_tuning \
            else frozen.user_attrs.get("seed", spec.seeds[0])
        params.update({d.name: d.suggest(trial) for d in spec.space})
        run_dir = self._run_dir(frozen.number, params, seed)
        tags = [f"{_short(k)}={v}" for k, v in params.items()] + [f"seed={seed}", f"sweep={spec.study_name}"]
        try:
            config, matching = trial_config(spec, params, seed, run_dir, tags)
        except ConfigError as err:
            return Outcome.failed("config", str(err))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / TRIAL_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
        attrs = {"run_dir": str(run_dir), "factors": params, "seed": seed, "worker": self.name, **matching}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        width = f", width {matching['matched_width']} ({matching['n_params']:,} parameters)" if matching else ""
        self.log(f"trial {frozen.number} started: {_describe(params, seed)}{width} → {run_dir}")
        start = time.time()
        with ProgressFollower(run_dir, self.log, f"trial {frozen.number}"):
            returncode, timed_out = self._run_process(run_dir, trial_id)
        outcome = read_outcome(run_dir, returncode, timed_out, spec.objective.metric, self.hard_timeout_s)
        outcome.attrs["duration_s"] = round(time.time() - start, 1)
        return outcome

    def _run_dir(self, number: int, params: dict, seed: int) -> Path:
        label = "-".join(f"{_short(k)}={v}" for k, v in params.items()) if not self.spec.space else "tune"
        label = re.sub(r"[^A-Za-z0-9_.=+-]", "_", f"{label}-seed={seed}" if label else f"seed={seed}")
        run_dir = (self.runs_dir / self.spec.study_name / f"{number:04d}-{label}").resolve()
        if run_dir.exists():  # left by a study in another storage: never mix its files into this trial
            run_dir = run_dir.with_name(f"{run_dir.name}-{uuid.uuid4().hex[:6]}")
        return run_dir

    def _run_process(self, run_dir: Path, trial_id: int) -> tuple[int, bool]:
        # The trial process finds its trial through this (for the pruner); see eqbench.sweep.callbacks.
        context = {"storage": self.storage_url, "spec": str(self.spec.path), "profile": self.spec.profile,
                   "trial_id": trial_id}
        env = {**os.environ, **self.trial_env, SWEEP_TRIAL_ENV: json.dumps(context)}
        with open(run_dir / TRIAL_LOG, "ab") as log:
            # The trial exits at start-up if this worker is not its parent any more (see eqbench.sweep.trial).
            proc = subprocess.Popen([sys.executable, "-m", "eqbench.sweep.trial", str(run_dir), str(os.getpid())],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                return proc.wait(timeout=self.hard_timeout_s), False
            except subprocess.TimeoutExpired:
                return _stop(proc), True
            finally:
                if proc.poll() is None:  # the worker is being interrupted: take the trial down with it
                    _stop(proc)

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, number: int, outcome: Outcome) -> TrialState:
        attrs = dict(outcome.attrs)
        if outcome.state == TrialState.FAIL:
            attrs.update(fail_kind=outcome.kind, fail_reason=outcome.reason)
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            if outcome.state == TrialState.COMPLETE:
                study.tell(trial, outcome.value)
            else:
                study.tell(trial, state=outcome.state)
        except optuna.exceptions.UpdateFinishedTrialError:
            self.log(f"trial {number} was failed by another worker meanwhile (no heartbeat seen for "
                     f"{self.spec.heartbeat.grace_period} s); its cell is retried, its files are kept")
            return TrialState.FAIL
        summary = f"= {outcome.value:.5g}" if outcome.value is not None else (outcome.reason or "")
        duration = outcome.attrs.get("duration_s")
        self.log(f"trial {number} {outcome.state.name} {summary}" + (f" ({duration:.0f} s)" if duration else ""))
        return outcome.state


# ------------------------------------------------------------------------------------------- outcome
def read_outcome(run_dir: Path, returncode: int, timed_out: bool, metric: str, hard_timeout_s) -> Outcome:
    """What the trial process left: its result file, metrics.json and profile.json, or how it died."""
    metrics = _read_json(run_dir / "metrics.json") or {}
    profile = _read_json(run_dir / "profile.json") or {}
    values = {f"{stage}_{name}": entry["value"] for stage in ("val", "test")
              for name, entry in (metrics.get(stage) or {}).items()}
    attrs = {"metrics": values}
    for key in ("mae", "r2"):
        if key in profile:
            attrs[f"profile_{key}"] = profile[key]
            values[f"profile_{key}"] = profile[key]
    for key in ("n_parameters", "stop_reason", "epochs"):  # stop_reason: max_epochs, max_time, ... (tracking)
        if key in metrics:
            attrs[key] = metrics[key]
    if timed_out:
        return Outcome.failed("timeout", f"trial process still running after the hard limit of {hard_timeout_s:.0f} s "
                                         f"(2 × budget.max_time + 10 min); stopped", **attrs)
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
        return Outcome.failed("killed", f"trial process killed by {name}{hint}", **attrs)
    result = _read_json(run_dir / TRIAL_RESULT)
    if result is None:
        return Outcome.failed("error", f"trial process exited with code {returncode} without a result; see "
                                       f"{run_dir / TRIAL_LOG}", **attrs)
    if result["status"] == "pruned":
        return Outcome(TrialState.PRUNED, attrs=attrs)
    if result["status"] == "failed":
        return Outcome.failed(result.get("kind", "error"), result.get("reason", ""), **attrs)
    if metric not in values:
        return Outcome.failed("error", f"objective {metric} not recorded (metrics: {sorted(values)})", **attrs)
    value = float(values[metric])
    if not math.isfinite(value):
        return Outcome.failed("nan", f"objective {metric} is {value}", **attrs)
    return Outcome(TrialState.COMPLETE, value=value, attrs=attrs)


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:  # a file cut off by a kill: as if absent
        return None


def _stop(proc: subprocess.Popen) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _raise_terminated(signum, frame):
    raise Terminated()


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _describe(params: dict, seed: int) -> str:
    return ", ".join([f"{_short(k)}={v}" for k, v in params.items()] + [f"seed={seed}"])
