"""``eqbench sweep run|status|worker`` (arguments and dispatch)."""

from __future__ import annotations

import argparse
import os
import sys

from eqbench.cli import parse_key_values

DEFAULT_RUNS_DIR = "runs/sweeps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="create or resume the study and run its trials until every cell is done")
    status = commands.add_parser("status", help="trials (state, factors, objective, duration, failure reason) "
                                                "and the objective per grid point")
    worker = commands.add_parser("worker", help="claim and run queued trials (what `run` starts on each GPU "
                                                "or SLURM task)")
    for sub in (run, status, worker):
        sub.add_argument("spec", help="sweep spec (YAML in sweeps/)")
        sub.add_argument("--profile", help="named override set of the spec (e.g. cpu, paper)")
        sub.add_argument("--storage", help="Optuna RDB URL, e.g. postgresql://user@host/db (default: $EQBENCH_SWEEP_"
                                           "STORAGE, else SQLite RUNS_DIR/<study>/study.db)")
        sub.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR,
                         help=f"where trial run directories go, RUNS_DIR/<study>/<trial>-<factors> "
                              f"(default {DEFAULT_RUNS_DIR})")
    run.add_argument("--workers", type=int, default=None,
                     help="local: worker processes (default: one per visible GPU, else 1); slurm: array tasks")
    run.add_argument("--launcher", choices=["local", "slurm"], default="local")
    run.add_argument("--skip-failed", action="store_true",
                     help="do not re-run cells whose trials failed by their own fault (error, NaN, OOM, timeout)")
    slurm = run.add_argument_group("SLURM (--launcher slurm, through submitit)")
    slurm.add_argument("--partition")
    slurm.add_argument("--time", type=int, default=24 * 60, help="minutes per array task (default 1440)")
    slurm.add_argument("--cpus-per-task", type=int, default=8)
    slurm.add_argument("--gpus-per-task", type=int, default=1)
    slurm.add_argument("--mem-gb", type=float)
    slurm.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. account=myproj (repeatable)")
    slurm.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                       help="shell line run before the worker, e.g. 'module load cuda' (repeatable)")
    status.add_argument("--plain", action="store_true", help="plain text instead of rich tables")
    status.add_argument("--watch", type=float, nargs="?", const=10.0, default=None, metavar="SECONDS",
                        help="refresh every SECONDS (default 10) until no cell is running or queued")
    worker.add_argument("--worker-id", help="label of this worker in the trials' user attributes and logs")
    worker.add_argument("--no-wait", action="store_true",
                        help="exit when nothing is queued, without waiting for other workers' running trials")
    worker.add_argument("--max-trials", type=int, help="stop after this many trials")


def run(args: argparse.Namespace) -> int:
    from eqbench.sweep.spec import load_spec
    from eqbench.sweep.study import resolve_storage_url

    spec = load_spec(args.spec, args.profile)
    storage_url = resolve_storage_url(spec, args.storage, args.runs_dir)
    if args.command == "run":
        from eqbench.sweep.worker import Terminated

        try:
            return _run(spec, storage_url, args)
        except (KeyboardInterrupt, Terminated) as err:
            print(f"\nstopped by {'SIGINT' if isinstance(err, KeyboardInterrupt) else 'SIGTERM'}; "
                  f"`eqbench sweep run {spec.path}` resumes (running trials were marked interrupted and run again)",
                  file=sys.stderr)
            return 130 if isinstance(err, KeyboardInterrupt) else 143
    if args.command == "status":
        return _status(spec, storage_url, args)
    return _worker(spec, storage_url, args)


def _run(spec, storage_url: str, args) -> int:
    from eqbench.sweep import launchers
    from eqbench.sweep.status import print_status
    from eqbench.sweep.study import enqueue_missing_cells, open_storage, open_study, redact

    storage = open_storage(storage_url, spec.heartbeat)
    study = open_study(spec, storage)
    queued = enqueue_missing_cells(study, spec, retry_failed=not args.skip_failed)
    print(f"sweep {spec.study_name}: {len(spec.cells())} cells, {len(queued)} queued now; "
          f"storage {redact(storage_url)}", flush=True)
    if args.launcher == "slurm":
        extra = parse_key_values(args.slurm_arg, "--slurm-arg", "KEY=VALUE (an sbatch option without dashes)")
        options = launchers.SlurmOptions(partition=args.partition, time_min=args.time, cpus_per_task=args.cpus_per_task,
                                         gpus_per_task=args.gpus_per_task, mem_gb=args.mem_gb, additional=extra,
                                         setup=args.slurm_setup)
        launchers.submit_slurm(spec, storage_url, args.runs_dir, args.workers or 1, options)
        print(f"follow with: eqbench sweep status {spec.path}" + (f" --profile {spec.profile}" if spec.profile else ""))
        return 0
    launchers.run_local(spec, storage_url, args.runs_dir, args.workers)
    counts = print_status(spec, study)
    unfinished = counts["cells"] - counts["complete"] - counts["pruned"]
    if unfinished:
        print(f"{unfinished} cell(s) not complete; fix what failed (see fail reasons above) and run "
              f"`eqbench sweep run {spec.path}` again to resume", file=sys.stderr)
    return 1 if unfinished else 0


def _status(spec, storage_url: str, args) -> int:
    from eqbench.sweep.status import print_status
    from eqbench.sweep.study import open_existing_study

    plain = True if args.plain else None
    if args.watch is not None:
        from eqbench.sweep.status import watch_status

        if args.watch <= 0:
            from eqbench.errors import ConfigError

            raise ConfigError(f"--watch {args.watch}: give a refresh interval in seconds (> 0)")
        try:
            watch_status(spec, lambda: open_existing_study(spec, storage_url), args.watch, plain=plain)
        except KeyboardInterrupt:
            return 0
        return 0
    print_status(spec, open_existing_study(spec, storage_url), plain=plain)
    return 0


def _worker(spec, storage_url: str, args) -> int:
    import platform

    from eqbench.sweep.worker import SweepWorker, Terminated

    name = f"{platform.node()}:{os.getpid()}" + (f"/w{args.worker_id}" if args.worker_id is not None else "")
    worker = SweepWorker(spec, storage_url, args.runs_dir, name=name, wait_for_running=not args.no_wait,
                         max_trials=args.max_trials)
    try:
        counts = worker.run()
    except (KeyboardInterrupt, Terminated) as err:
        print(f"[{name}] stopped by {'SIGINT' if isinstance(err, KeyboardInterrupt) else 'SIGTERM'}; its running "
              f"trial was marked interrupted and will be run again", file=sys.stderr, flush=True)
        return 130 if isinstance(err, KeyboardInterrupt) else 143
    print(f"[{name}] done: " + (", ".join(f"{n} {state}" for state, n in counts.items()) or "no trials left"),
          flush=True)
    return 0


