"""Where a sweep's workers run.

- ``local`` (default): N worker processes on this machine. With GPUs, one GPU per worker through
  ``CUDA_VISIBLE_DEVICES`` (and at most one worker per GPU); on CPU, the cores are shared out through
  ``OMP_NUM_THREADS``. One CPU worker runs inside ``sweep run`` itself.
- ``slurm``: a job array through submitit; every array task runs ``eqbench sweep worker SPEC ...``
  (a ``submitit.helpers.CommandFunction``), with partition, time, CPUs and GPUs per task. The tasks do
  not wait for each other's trials at the end, so no allocation idles; trials of a task that was
  killed are retried by the other tasks, or by the next ``sweep run``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from eqbench.errors import ConfigError
from eqbench.sweep.spec import SweepSpec
from eqbench.sweep.study import STORAGE_ENV


def visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_command(spec: SweepSpec, storage_url: str, runs_dir: str | Path, wait: bool) -> list[str]:
    """``python -m eqbench.cli sweep worker SPEC ...`` with absolute paths (workers may start elsewhere)."""
    command = [sys.executable, "-m", "eqbench.cli", "sweep", "worker", str(Path(spec.path).resolve()),
               "--runs-dir", str(Path(runs_dir).resolve())]
    if spec.profile:
        command += ["--profile", spec.profile]
    if _has_password(storage_url):
        os.environ[STORAGE_ENV] = storage_url  # inherited by local workers and by SLURM jobs (--export=ALL)
    else:
        command += ["--storage", storage_url]
    if not wait:
        command.append("--no-wait")
    return command


def _has_password(url: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).password is not None
    except ArgumentError:
        return False


# ------------------------------------------------------------------------------------------- local
def run_local(spec: SweepSpec, storage_url: str, runs_dir: str | Path, workers: int | None = None, log=print) -> None:
    from eqbench.sweep.worker import SweepWorker, Terminated

    gpus = visible_gpus()
    if workers is None:
        workers = max(1, len(gpus))
    if workers < 1:
        raise ConfigError(f"--workers {workers}: give 1 or more")
    if gpus and workers > len(gpus):
        log(f"{workers} workers asked for, {len(gpus)} GPU(s) visible: running {len(gpus)} (one GPU each)")
        workers = len(gpus)
    if gpus:
        envs = [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus[:workers]]
    else:
        share = str(max(1, cpu_count() // workers))  # cores per worker, so that workers do not oversubscribe
        threads = {} if workers == 1 or "OMP_NUM_THREADS" in os.environ else \
            {"OMP_NUM_THREADS": share, "MKL_NUM_THREADS": share}
        envs = [threads] * workers
    log(f"sweep {spec.study_name}: {workers} local worker(s) on " + (f"GPU(s) {gpus[:workers]}" if gpus else "CPU"))
    if workers == 1:
        SweepWorker(spec, storage_url, runs_dir, name="worker-0", trial_env=envs[0], log=log).run()
        return
    command = worker_command(spec, storage_url, runs_dir, wait=True)
    processes = [subprocess.Popen(command + ["--worker-id", str(i)], env={**os.environ, **env})
                 for i, env in enumerate(envs)]
    terminated = []

    def forward_sigterm(signum, frame):
        # SIGTERM reaches this process only (Ctrl-C reaches the whole process group): pass it on, so that no
        # worker goes on with the next cells after `sweep run` is stopped.
        terminated.append(signum)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, forward_sigterm)
    try:
        for process in processes:
            process.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too: let them record their interrupted trials before exiting.
        for process in processes:
            process.wait()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if terminated:
        raise Terminated()
    failed = [i for i, p in enumerate(processes) if p.returncode != 0]
    if failed:
        log(f"worker(s) {failed} exited with an error (see above); `eqbench sweep run` again resumes")


# ------------------------------------------------------------------------------------------- SLURM
@dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 24 * 60  # per array task; a task can run several trials
    cpus_per_task: int = 8
    gpus_per_task: int = 1
    mem_gb: float | None = None
    additional: dict = field(default_factory=dict)  # any other sbatch option, e.g. {"account": "proj"}
    setup: list[str] = field(default_factory=list)  # shell lines before the worker starts (module load ...)


def submit_slurm(spec: SweepSpec, storage_url: str, runs_dir: str | Path, workers: int, options: SlurmOptions,
                 cluster: str = "slurm", log=print) -> list:
    """Submit ``workers`` array tasks, each a sweep worker; returns submitit's jobs. ``cluster="local"``
    runs the same submission with submitit's local executor (no SLURM needed)."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm needs submitit: pip install 'eqbench[slurm]'") from None
    if workers < 1:
        raise ConfigError(f"--workers {workers}: give 1 or more array tasks")
    if storage_url.startswith("sqlite") and workers > 1:
        warnings.warn("SQLite storage with several SLURM tasks: fine on one node, unsafe on a shared network "
                      "filesystem across nodes; pass --storage postgresql://... for many machines", stacklevel=2)
    folder = Path(runs_dir).resolve() / spec.study_name / "slurm"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    parameters = {"name": f"eqbench-{spec.study_name}", "timeout_min": options.time_min, "nodes": 1,
                  "tasks_per_node": 1, "cpus_per_task": options.cpus_per_task, "gpus_per_node": options.gpus_per_task,
                  "slurm_array_parallelism": workers, "slurm_partition": options.partition}
    if options.mem_gb is not None:
        parameters["mem_gb"] = options.mem_gb
    if options.additional:
        parameters["slurm_additional_parameters"] = dict(options.additional)
    if options.setup:
        parameters["slurm_setup"] = list(options.setup)
    executor.update_parameters(**parameters)
    # The array index is appended to the command: it becomes the value of --worker-id.
    worker = submitit.helpers.CommandFunction(worker_command(spec, storage_url, runs_dir, wait=False) + ["--worker-id"],
                                              cwd=os.getcwd())
    jobs = executor.map_array(worker, list(range(workers)))
    log(f"submitted {len(jobs)} worker task(s) for sweep {spec.study_name}: {[job.job_id for job in jobs]} "
        f"(logs in {folder})")
    return jobs
