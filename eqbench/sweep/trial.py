"""One sweep trial as its own process: ``python -m eqbench.sweep.trial RUN_DIR WORKER_PID``.

The worker writes ``RUN_DIR/sweep_trial.yaml`` (the composed LightningCLI config) and starts this
process, which trains with ``eqbench fit`` (EqbenchCLI, in this process) and writes
``RUN_DIR/trial_result.json``: ``{"status": "complete" | "pruned" | "failed", "kind": ..., "reason": ...}``.
The worker reads the objective from metrics.json and tells Optuna.

Why a process per trial: an out-of-memory kill, a segfault in an extension or a CUDA error takes down
this process only, and every trial starts from a clean interpreter (CUDA caches, seeds, W&B state,
thread settings). Pruning still works because the pruning callback reports through the study storage.
The process exits when its worker dies, so a killed worker leaves no training behind. The worker
passes its own pid: a trial whose parent is no longer that worker when it starts (the worker died
between starting it and its start-up) exits at once, and afterwards a watcher thread checks every
second. Once past that check the trial writes ``RUN_DIR/trial.pid``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

TRIAL_CONFIG = "sweep_trial.yaml"
TRIAL_RESULT = "trial_result.json"
TRIAL_LOG = "train.log"
TRIAL_PID = "trial.pid"
ORPHANED_EXIT = 3  # exit status of a trial that found its worker gone
REASON_CHARS = 600


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print("usage: python -m eqbench.sweep.trial RUN_DIR [WORKER_PID]", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    _exit_when_parent_dies(int(argv[1]) if len(argv) == 2 else os.getppid())
    tmp = run_dir / (TRIAL_PID + ".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(run_dir / TRIAL_PID)
    result = run_trial(run_dir)
    tmp = run_dir / (TRIAL_RESULT + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(run_dir / TRIAL_RESULT)
    return 1 if result["status"] == "failed" else 0


def run_trial(run_dir: Path) -> dict:
    import optuna
    import torch
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from eqbench.errors import EqbenchError, StorageError
    from eqbench.sweep.callbacks import NonFiniteLossError
    from eqbench.training_cli import EqbenchCLI

    # As if `eqbench fit --config RUN_DIR/sweep_trial.yaml` had been typed: run.json records this command.
    sys.argv = ["eqbench", "fit", "--config", str(run_dir / TRIAL_CONFIG)]
    try:
        cli = EqbenchCLI()
    except optuna.TrialPruned as err:
        return {"status": "pruned", "reason": str(err)}
    except NonFiniteLossError as err:
        return _failed("nan", str(err))
    except (torch.cuda.OutOfMemoryError, MemoryError) as err:
        return _failed("oom", f"out of memory: {err}")
    except RuntimeError as err:
        if not _is_out_of_memory(err):
            traceback.print_exc()
            return _failed("error", f"{type(err).__name__}: {err}")
        return _failed("oom", f"out of memory: {' '.join(str(err).split())}")
    except EqbenchError as err:  # a config the CLI refuses (bad value, type, YAML, checkpoint); a full disk
        return _failed("storage" if isinstance(err, StorageError) else "config", str(err))
    except SIGTERMException:
        return _failed("interrupted", "training stopped by SIGTERM (last.ckpt written)")
    except SystemExit as err:  # LightningCLI/jsonargparse print a config error and exit
        return _failed("config", f"LightningCLI rejected the config (exit {err.code}): {_last_error_line(run_dir)}")
    except Exception as err:  # noqa: BLE001 - any error in training is this trial's failure and must be recorded
        traceback.print_exc()
        return _failed("error", f"{type(err).__name__}: {err}")
    if cli.trainer.interrupted:
        return _failed("interrupted", "training was interrupted (SIGINT)")
    if not (run_dir / "metrics.json").is_file():
        return _failed("error", "training ended without writing metrics.json")
    return {"status": "complete"}


def _failed(kind: str, reason: str) -> dict:
    return {"status": "failed", "kind": kind, "reason": reason[:REASON_CHARS]}


def _is_out_of_memory(err: RuntimeError) -> bool:
    """torch's CPU allocator reports a failed allocation (e.g. under a memory limit) as a RuntimeError."""
    text = str(err)
    return "can't allocate memory" in text or "not enough memory" in text or "out of memory" in text.lower()


def _last_error_line(run_dir: Path) -> str:
    sys.stdout.flush()
    sys.stderr.flush()
    log = run_dir / TRIAL_LOG
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["see train.log"])[-1].strip()


def _exit_when_parent_dies(worker_pid: int) -> None:
    """A worker killed by SIGKILL cannot stop its trial; the trial notices it was orphaned and exits.

    ``worker_pid`` comes from the worker's command line, not from ``os.getppid()`` at start-up: a worker
    that died before this runs has already left the trial to the reaper, whose pid would be taken for
    the worker's."""
    if os.getppid() != worker_pid:
        os._exit(ORPHANED_EXIT)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != worker_pid:
                os._exit(ORPHANED_EXIT)

    threading.Thread(target=watch, name="eqbench-parent-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
