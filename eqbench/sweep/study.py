"""The Optuna side of a sweep: storage, study, and the cell bookkeeping that makes every cell
(grid point × seed, or tuning slot) end COMPLETE exactly once.

How work is handed out:

- ``sweep run`` first fails stale trials (Optuna heartbeats: a RUNNING trial whose worker stopped
  sending heartbeats for ``grace_period`` seconds becomes FAIL, and Optuna's
  ``RetryHeartbeatStaleTrialCallback`` queues a copy of it), then enqueues one WAITING trial, with
  fixed parameters and the user attribute ``cell``, for every cell that has no trial WAITING,
  RUNNING, COMPLETE or PRUNED.
- Workers claim WAITING trials with Optuna's own atomic WAITING → RUNNING transition (what
  ``Study.ask`` does for the queue) but, unlike ``ask``, never create a trial when the queue is
  empty. A worker records a heartbeat before claiming, so a worker killed at any moment leaves a
  trial that goes stale and is retried.
- A cell queued twice (two launchers at once, or a retry racing a fresh enqueue) is run by its
  lowest-numbered live trial only: each worker checks this right after claiming, and drops its trial
  (FAIL, ``fail_kind: duplicate``) when an earlier trial of the same cell is live or done. Two
  claimers of copies of one cell always see each other's claim in that order, so exactly one runs.

SQLite: Optuna's claim reads the state and updates it in one transaction, relying on ``SELECT ...
FOR UPDATE`` (PostgreSQL). SQLite ignores that clause and Python's sqlite3 opens transactions only
at the first write, so two processes could both read WAITING and both claim. The engine here begins
every transaction with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe for pysqlite), which takes
the database's write lock up front and makes the claim atomic. SQLite suits one machine; use
PostgreSQL (``--storage postgresql://...``) for workers on several machines.
"""

from __future__ import annotations

import os
import warnings
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from eqbench.errors import ConfigError
from eqbench.sweep.spec import Heartbeat, SweepSpec

LIVE = (TrialState.WAITING, TrialState.RUNNING)
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
# Failures caused by the trial itself (re-running needs a change), as opposed to lost or interrupted workers.
TRIAL_FAULTS = ("error", "nan", "oom", "timeout", "killed", "config")


STORAGE_ENV = "EQBENCH_SWEEP_STORAGE"  # a storage URL with a password travels here, not on command lines


def default_storage_url(spec: SweepSpec, runs_dir: Path) -> str:
    """SQLite beside the sweep's run directories: ``<runs_dir>/<study>/study.db``."""
    return f"sqlite:///{(Path(runs_dir) / spec.study_name / 'study.db').resolve()}"


def resolve_storage_url(spec: SweepSpec, storage: str | None, runs_dir: str | Path) -> str:
    """``--storage``, else ``$EQBENCH_SWEEP_STORAGE``, else SQLite beside the runs."""
    return storage or os.environ.get(STORAGE_ENV) or default_storage_url(spec, Path(runs_dir))


def open_existing_study(spec: SweepSpec, storage_url: str) -> optuna.Study:
    """The sweep's study for reading (status, reports); never creates an empty SQLite database."""
    database = Path(storage_url[len("sqlite:///"):]) if storage_url.startswith("sqlite:///") else None
    if database is not None and not database.is_file():
        raise ConfigError(f"no study {spec.study_name!r} yet ({database} does not exist); run the sweep first: "
                          f"eqbench sweep run {spec.path}" + (f" --profile {spec.profile}" if spec.profile else ""))
    return open_study(spec, open_storage(storage_url, heartbeat=None), create=False)


STORAGE_FORMS = ("sqlite:///PATH (the default, beside the runs)", "postgresql+psycopg2://USER@HOST[:PORT]/DB",
                 "postgresql+DRIVER://... (psycopg, pg8000)", "mysql+pymysql://USER@HOST[:PORT]/DB")


def check_storage_url(url: str) -> str:
    """``url`` when SQLAlchemy can open it with an installed driver (the forms in :data:`STORAGE_FORMS`);
    else one :class:`ConfigError` naming the URL (password hidden) and the supported forms."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    forms = "; ".join(STORAGE_FORMS)
    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError, TypeError) as err:
        raise ConfigError(f"storage {redact(str(url))!r} is not a usable Optuna storage URL ({err}); use one of: "
                          f"{forms}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql"):
        raise ConfigError(f"storage {redact(url)!r}: the {parsed.get_backend_name()} backend is not supported by "
                          f"Optuna's RDB storage; use one of: {forms}")
    try:
        dialect.import_dbapi()
    except ImportError as err:
        hint = " (pip install psycopg2-binary and use postgresql+psycopg2://...)" if "psycopg" in str(err) else ""
        raise ConfigError(f"storage {redact(url)!r}: database driver missing ({err}){hint}; install it or use one "
                          f"of: {forms}") from None
    return url


def open_storage(url: str, heartbeat: Heartbeat | None) -> optuna.storages.RDBStorage:
    """RDBStorage with heartbeats (workers) or without (the trial process reporting for the pruner)."""
    from sqlalchemy.exc import SQLAlchemyError

    check_storage_url(url)
    sqlite = url.startswith("sqlite")
    if sqlite and url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # sqlite: wait for the write lock instead of failing; others: reconnect after idle hours of training.
    engine_kwargs = {"connect_args": {"timeout": 120}} if sqlite else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
        options = {}
        if heartbeat is not None:
            options = {"heartbeat_interval": heartbeat.interval, "grace_period": heartbeat.grace_period,
                       "heartbeat_stale_trial_callback":
                           optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)}
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **options)
        except ImportError as err:
            raise ConfigError(f"storage {redact(url)}: database driver missing ({err}); for PostgreSQL "
                              f"pip install psycopg2-binary") from err
        except SQLAlchemyError as err:  # server unreachable, no such database, no permission
            detail = " ".join(str(getattr(err, "orig", None) or err).split())[:300]
            raise ConfigError(f"storage {redact(url)}: cannot open the database ({detail}); check that it exists "
                              f"and is reachable, or use another --storage") from None
    if sqlite:
        _begin_immediate(storage.engine)
    return storage


def _begin_immediate(engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None  # sqlite3 must not BEGIN on its own; the hook below does

    @event.listens_for(engine, "begin")
    def _take_write_lock(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # drop connections opened while Optuna created its tables, before the hooks existed


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL SQLAlchemy can parse: nothing to hide
        return url


class QueueGridSampler(optuna.samplers.GridSampler):
    """GridSampler over factors × seeds, for a study whose grid points are all enqueued as fixed trials.

    The study records its grid like any grid study (Optuna's tools see one), while the queue decides
    which point runs. ``GridSampler.after_trial`` would call ``study.stop()``, which only works inside
    ``study.optimize``; completion is the cell bookkeeping's business here, so it does nothing.
    """

    def after_trial(self, study, trial, state, values) -> None:
        return None


def build_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    options = dict(spec.pruner.options)
    if spec.pruner.kind == "median":
        return optuna.pruners.MedianPruner(**options)
    if spec.pruner.kind == "hyperband":
        options.setdefault("max_resource", spec.budget.max_epochs or "auto")
        return optuna.pruners.HyperbandPruner(**options)
    return optuna.pruners.NopPruner()


def open_study(spec: SweepSpec, storage, create: bool = True) -> optuna.Study:
    if spec.is_tuning:
        sampler = optuna.samplers.TPESampler(constant_liar=True)  # parallel workers avoid the same point
    else:
        sampler = QueueGridSampler(spec.grid_search_space())
    if not create:
        try:
            return optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler,
                                     pruner=build_pruner(spec))
        except KeyError:
            raise ConfigError(f"no study {spec.study_name!r} in storage {redact(storage.url)}; start it with "
                              f"`eqbench sweep run {spec.path}`") from None
    study = optuna.create_study(study_name=spec.study_name, storage=storage, sampler=sampler,
                                pruner=build_pruner(spec), direction=spec.objective.direction, load_if_exists=True)
    if study.direction.name.lower() != spec.objective.direction:
        raise ConfigError(f"study {spec.study_name!r} in {redact(storage.url)} was created to "
                          f"{study.direction.name.lower()}, the spec now says {spec.objective.direction}; give the "
                          f"sweep another name or use another storage")
    if not study.user_attrs:
        # Fixed before any result exists: reports judge these findings, and say so when the spec changes them.
        study.set_user_attr("spec", str(spec.path))
        study.set_user_attr("profile", spec.profile)
        study.set_user_attr("objective", spec.objective.metric)
        study.set_user_attr("objective_direction", spec.objective.direction)
        study.set_user_attr("findings", list((spec.report or {}).get("findings") or []))
        study.set_user_attr("created", datetime.now().isoformat(timespec="seconds"))
    return study


# ------------------------------------------------------------------------------------------- cells
def trials_by_cell(study: optuna.Study) -> dict[str, list[FrozenTrial]]:
    cells: dict[str, list[FrozenTrial]] = {}
    for trial in study.get_trials(deepcopy=False):
        cells.setdefault(trial.user_attrs.get("cell", ""), []).append(trial)
    return cells


def enqueue_missing_cells(study: optuna.Study, spec: SweepSpec, retry_failed: bool = True) -> list[str]:
    """Queue every cell that has no live or finished trial; returns the keys queued.

    ``retry_failed=False`` leaves out cells whose trials failed by their own fault (an error, NaN loss,
    out of memory, a timeout); cells of lost or interrupted workers are always queued again.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    existing = trials_by_cell(study)
    queued = []
    for cell in spec.cells():
        trials = existing.get(cell.key, [])
        if any(t.state in LIVE + DONE for t in trials):
            continue
        if not retry_failed and any(t.user_attrs.get("fail_kind") in TRIAL_FAULTS for t in trials):
            continue
        study.enqueue_trial(cell.params, user_attrs={"cell": cell.key, "seed": cell.seed})
        queued.append(cell.key)
    return queued


def claim_next_trial(study: optuna.Study, storage, cells: set[str]) -> int | None:
    """Atomically move the first queued trial of one of ``cells`` to RUNNING; its trial id, or None."""
    study_id = storage.get_study_id_from_name(study.study_name)
    for queued in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if queued.user_attrs.get("cell") not in cells:
            continue  # queued by another version of the spec: not this sweep's work
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, queued.number)
        # Heartbeat first: Optuna never fails a RUNNING trial that has no heartbeat at all.
        storage.record_heartbeat(trial_id)
        try:
            if storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker claimed and finished it meanwhile
    return None


def earlier_trial_of_cell(study: optuna.Study, trial: FrozenTrial) -> FrozenTrial | None:
    """An earlier trial of the same cell that is live or done: it runs (or ran) the cell, not ``trial``."""
    cell = trial.user_attrs.get("cell")
    for other in study.get_trials(deepcopy=False, states=LIVE + DONE):
        if other.number < trial.number and other.user_attrs.get("cell") == cell:
            return other
    return None


def running_elsewhere(study: optuna.Study, cells: set[str]) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get("cell") in cells]
