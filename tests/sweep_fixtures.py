"""Helpers for the sweep tests: a tiny dataset, base config and spec; a throwaway PostgreSQL server.

Trials run the real path (a worker, one process per trial, `eqbench fit`), so each costs a Python
start-up plus a 1-epoch fit of a ~1k-parameter model on 40 toy molecules: a few seconds.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from tests.toy_data import toy_cache

TINY_BASE = {
    "seed_everything": 0,
    "trainer": {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False,
                "num_sanity_val_steps": 0, "logger": False},
    "model": {
        "representation": {"class_path": "eqbench.models.SchNet",
                           "init_args": {"n_features": 8, "n_interactions": 1, "n_rbf": 8, "cutoff": 3.0}},
        "targets": [{"name": "energy"}, {"name": "forces"}],
        "lr": 1.0e-3,
    },
    "data": {"split": "random", "train_size": 40, "val_size": 10, "test_size": 10, "batch_size": 20},
    "run": {"wandb": "disabled"},
}


def write_sweep(directory: Path, grid: dict, seeds=(0, 1), name: str = "tiny", **spec) -> Path:
    """A toy cache, a tiny base config and a spec in ``directory``; returns the spec path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cache = directory / "toy.h5"
    if not cache.is_file():
        toy_cache(directory, n_molecules=60)
    base = {**TINY_BASE, "data": {**TINY_BASE["data"], "path": str(cache)}}
    (directory / "base.yaml").write_text(yaml.safe_dump(base))
    # Heartbeats every second; a trial without one for 10 s is lost (the kill test shortens this).
    body = {"name": name, "base": "base.yaml", "grid": grid, "seeds": list(seeds), "objective": "val_energy_mae",
            "heartbeat": {"interval": 1, "grace_period": 10}, **spec}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def load(spec_path: Path, storage_url: str):
    from eqbench.sweep.spec import load_spec
    from eqbench.sweep.study import open_storage, open_study

    spec = load_spec(spec_path)
    return spec, open_study(spec, open_storage(storage_url, heartbeat=None), create=False)


def complete_cells(study: optuna.Study) -> list[str]:
    return sorted(t.user_attrs["cell"] for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


def assert_exactly_once(spec, study) -> None:
    """Every cell of the spec COMPLETE once, none twice, nothing else COMPLETE."""
    assert complete_cells(study) == sorted(c.key for c in spec.cells())


# ------------------------------------------------------------------------------------------- claims
def _claim_all(url: str, spec_path: str, out: str, start) -> None:
    from eqbench.sweep.spec import load_spec
    from eqbench.sweep.study import claim_next_trial, open_storage, open_study

    spec = load_spec(spec_path)
    storage = open_storage(url, spec.heartbeat)
    study = open_study(spec, storage, create=False)
    cells = {c.key for c in spec.cells()}
    claimed = []
    start.wait()  # all processes claim at the same moment
    while (trial_id := claim_next_trial(study, storage, cells)) is not None:
        claimed.append(trial_id)
    Path(out).write_text(json.dumps(claimed))


def claim_race(tmp_path: Path, url: str, n_processes: int = 3) -> None:
    """Several processes drain one queue as fast as they can: every trial is claimed exactly once."""
    import multiprocessing

    from eqbench.sweep.spec import load_spec
    from eqbench.sweep.study import enqueue_missing_cells, open_storage, open_study

    spec_path = write_sweep(tmp_path, {"model.representation.init_args.n_features": list(range(4, 16))},
                            seeds=[0, 1])
    spec = load_spec(spec_path)
    study = open_study(spec, open_storage(url, spec.heartbeat))
    assert len(enqueue_missing_cells(study, spec)) == 24
    context = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"claimed-{i}.json" for i in range(n_processes)]
    start = context.Barrier(n_processes)
    processes = [context.Process(target=_claim_all, args=(url, str(spec_path), str(out), start)) for out in outs]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
        assert p.exitcode == 0
    claimed = [json.loads(out.read_text()) for out in outs]
    flat = [i for ids in claimed for i in ids]
    assert len(flat) == len(set(flat)) == 24, f"claims overlap or are missing: {claimed}"
    assert all(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials())


# ------------------------------------------------------------------------------------------- PostgreSQL
def _postgres_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").is_file() and Path(candidate, "pg_ctl").is_file():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server():
    """Yields the URL of a fresh PostgreSQL database on loopback, or a reason (str) why none could start.

    initdb refuses to run as root, so as root the server runs as the ``postgres`` user (runuser).
    """
    try:
        import psycopg2  # noqa: F401 - SQLAlchemy's default PostgreSQL driver
    except ImportError:
        yield "psycopg2 is not installed (pip install psycopg2-binary)"
        return
    bin_dir = _postgres_bin()
    if bin_dir is None:
        yield "no PostgreSQL server binaries (initdb, pg_ctl); apt-get install -y postgresql"
        return
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            yield "running as root and runuser is missing, so initdb cannot run"
            return
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="eqbench-pg-"))
    data = root / "data"
    port = _free_port()
    if as_user:
        shutil.chown(root, user="postgres")
    log = root / "server.log"

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)

    started = False
    try:
        init = run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        if init.returncode != 0:
            yield f"initdb failed: {init.stderr.strip()[-300:]}"
            return
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        if start.returncode != 0:
            yield f"pg_ctl start failed: {start.stderr.strip()[-300:]} {_tail(log)}"
            return
        started = True
        create = run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "eqbench")
        if create.returncode != 0:
            yield f"createdb failed: {create.stderr.strip()[-300:]}"
            return
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/eqbench"
    finally:
        if started:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _tail(path: Path) -> str:
    return path.read_text()[-300:] if path.is_file() else ""


def wait_for(condition, timeout: float, interval: float = 0.2, message: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


# ------------------------------------------------------------------------------------------- failures
class Explode(Callback):
    """Test-only: fail at the first training batch the way real trials fail (``oom``: CUDA out of memory,
    ``kill``: the kernel's OOM killer, ``error``: any exception)."""

    def __init__(self, how: str = "error"):
        self.how = how

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.how == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (test)")
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("boom (test)")
