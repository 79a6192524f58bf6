"""`eqbench sweep run|worker|status` on tiny data: grids × seeds, failures, killed workers, concurrent workers.

Each trial is a real `eqbench fit` in its own process (1 epoch, ~1k parameters, 40 toy molecules).
"""

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from eqbench.cli import main
from eqbench.sweep.study import enqueue_missing_cells, open_storage, open_study
from eqbench.sweep.trial import TRIAL_PID
from tests.sweep_fixtures import assert_exactly_once, claim_race, load, wait_for, write_sweep

PAINN = "eqbench.models.PaiNN"


def sqlite_url(runs: Path, study: str) -> str:
    return f"sqlite:///{(runs / study / 'study.db').resolve()}"


def test_grid_times_seeds_runs_every_cell_once_and_resumes_without_repeating(tmp_path, capsys):
    spec_path = write_sweep(tmp_path, {"model.representation.init_args.n_features": [6, 10]}, seeds=[0, 1])
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(spec_path), "--runs-dir", str(runs)]) == 0
    spec, study = load(spec_path, sqlite_url(runs, "tiny"))
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert_exactly_once(spec, study)
    run_dirs = sorted(p for p in (runs / "tiny").iterdir() if p.is_dir())
    assert [p.name for p in run_dirs] == ["0000-n_features=6-seed=0", "0001-n_features=6-seed=1",
                                          "0002-n_features=10-seed=0", "0003-n_features=10-seed=1"]
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir in [p.resolve() for p in run_dirs]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert t.value == pytest.approx(metrics["val"]["energy_mae"]["value"])
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        seed, width = t.params["seed"], t.params["model.representation.init_args.n_features"]
        assert config["seed_everything"] == seed and config["data"]["seed"] == seed  # the seed picks the split
        assert config["model"]["representation"]["init_args"]["n_features"] == width
        assert config["run"]["wandb_group"] == "tiny"
        assert config["run"]["tags"] == [f"n_features={width}", f"seed={seed}", "sweep=tiny"]
        assert json.loads((run_dir / "run.json").read_text())["data"]["split_seed"] == seed
    out = capsys.readouterr().out
    assert "4 cells, 4 complete" in out and "n_features" in out

    # Resume: nothing left to do, nothing repeated.
    assert main(["sweep", "run", str(spec_path), "--runs-dir", str(runs)]) == 0
    assert len(study.get_trials()) == 4

    # A cell queued twice (e.g. two launchers at once) runs once: the later copy is dropped unrun.
    study.enqueue_trial({"model.representation.init_args.n_features": 6, "seed": 0},
                        user_attrs={"cell": spec.cells()[0].key, "seed": 0})
    assert main(["sweep", "worker", str(spec_path), "--runs-dir", str(runs), "--no-wait"]) == 0
    duplicate = study.get_trials()[-1]
    assert duplicate.state == TrialState.FAIL and duplicate.user_attrs["fail_kind"] == "duplicate"
    assert "run_dir" not in duplicate.user_attrs
    assert_exactly_once(spec, study)

    assert main(["sweep", "status", str(spec_path), "--runs-dir", str(runs), "--plain"]) == 0
    status = capsys.readouterr().out
    assert "duplicate: cell model.representation.init_args.n_features=6|seed=0 is run by trial 0" in status
    assert "per grid point" in status and "2/2" in status


def test_failing_trials_fail_alone_with_their_reasons(tmp_path, capsys):
    """An exception, a NaN loss, CUDA out-of-memory and a killed trial process each fail only their trial."""
    def explode(how):
        return {"trainer.callbacks": [{"class_path": "tests.sweep_fixtures.Explode", "init_args": {"how": how}}]}

    variants = {"ok": {}, "nan": {"model.targets": [{"name": "energy", "weight": math.nan}, {"name": "forces"}]},
                "oom": explode("oom"), "kill": explode("kill"), "error": explode("error")}
    spec_path = write_sweep(tmp_path, {"variant": variants}, seeds=[0])
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(spec_path), "--runs-dir", str(runs)]) == 1  # not every cell complete
    _, study = load(spec_path, sqlite_url(runs, "tiny"))
    by_variant = {t.params["variant"]: t for t in study.get_trials()}
    assert len(by_variant) == 5 and by_variant["ok"].state == TrialState.COMPLETE
    expected = {"nan": "non-finite training loss (nan) at epoch 0, batch 0",
                "oom": "out of memory: CUDA out of memory. Tried to allocate 20.00 GiB (test)",
                "kill": "trial process killed by SIGKILL (out of memory?",
                "error": "RuntimeError: boom (test)"}
    for variant, reason in expected.items():
        trial = by_variant[variant]
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs["fail_kind"] == {"kill": "killed"}.get(variant, variant)
        assert reason in trial.user_attrs["fail_reason"], trial.user_attrs["fail_reason"]
    assert "nan: non-finite training loss" in capsys.readouterr().out
    # --skip-failed leaves them alone; a plain `sweep run` would try them again.
    assert main(["sweep", "run", str(spec_path), "--runs-dir", str(runs), "--skip-failed"]) == 1
    assert len(study.get_trials()) == 5


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            continue
    return found


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited orphan may wait for its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="looks for leftover trial processes in /proc")
def test_worker_killed_mid_trial_is_detected_and_its_cell_run_again(tmp_path):
    spec_path = write_sweep(tmp_path, {"model.representation.init_args.n_features": [8]}, seeds=[0, 1],
                            heartbeat={"interval": 1, "grace_period": 3})
    runs = tmp_path / "runs"
    url = sqlite_url(runs, "tiny")
    from eqbench.sweep.spec import load_spec

    spec = load_spec(spec_path)
    study = open_study(spec, open_storage(url, spec.heartbeat))
    enqueue_missing_cells(study, spec)
    worker = subprocess.Popen([sys.executable, "-m", "eqbench.cli", "sweep", "worker", str(spec_path),
                               "--runs-dir", str(runs), "--storage", url], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # trial.pid is written by the trial process itself once it has checked its worker (not by the worker
        # before starting it), so the kill below always comes after the trial's start-up. A kill before it is
        # tests/test_faults.py::test_a_trial_whose_worker_died_before_its_start_up_exits_without_training.
        def started_trial():
            running = study.get_trials(states=(TrialState.RUNNING,))
            return running and "run_dir" in running[0].user_attrs and \
                (Path(running[0].user_attrs["run_dir"]) / TRIAL_PID).is_file() and running[0]

        victim = wait_for(started_trial, timeout=300, message="a trial to start")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    trial_pid = int((Path(victim.user_attrs["run_dir"]) / TRIAL_PID).read_text())
    # The orphaned trial process notices (within a second) and exits: a killed worker leaves no training behind.
    wait_for(lambda: not _alive(trial_pid) and not _processes_mentioning(victim.user_attrs["run_dir"]), timeout=120,
             message="the orphaned trial process to exit")
    assert study.get_trials()[victim.number].state == TrialState.RUNNING  # as the kill left it

    # In a process with a time limit: if the lost trial were never detected, `sweep run` would wait forever.
    resume = subprocess.run([sys.executable, "-m", "eqbench.cli", "sweep", "run", str(spec_path), "--runs-dir",
                             str(runs)], capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stdout + resume.stderr
    trials = study.get_trials()
    assert trials[victim.number].state == TrialState.FAIL  # stale: no heartbeat for grace_period
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["cell"] == victim.user_attrs["cell"]
    assert_exactly_once(spec, study)


def test_two_workers_on_one_sqlite_study_run_disjoint_cells(tmp_path):
    spec_path = write_sweep(tmp_path, {"model.representation.init_args.n_features": [6, 10]}, seeds=[0, 1])
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(spec_path), "--runs-dir", str(runs), "--workers", "2"]) == 0
    spec, study = load(spec_path, sqlite_url(runs, "tiny"))
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)  # no duplicates, no drops
    assert_exactly_once(spec, study)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers should have run trials"


def test_concurrent_claims_on_sqlite_are_exclusive(tmp_path):
    claim_race(tmp_path, f"sqlite:///{tmp_path / 'race.db'}")


def test_median_pruner_stops_a_hopeless_trial(tmp_path):
    # "bad" cannot learn (lr 0) and predicts unscaled energies; "good" runs first and sets the median.
    grid = {"variant": {"good": {}, "bad": {"model.lr": 0.0, "model.standardize": False}}}
    spec_path = write_sweep(tmp_path, grid, seeds=[0], budget={"max_epochs": 3},
                            pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(spec_path), "--runs-dir", str(runs)]) == 0  # pruned counts as done
    _, study = load(spec_path, sqlite_url(runs, "tiny"))
    good, bad = study.get_trials()
    assert good.state == TrialState.COMPLETE and sorted(good.intermediate_values) == [0, 1, 2]
    assert bad.state == TrialState.PRUNED and list(bad.intermediate_values) == [0]
    config = yaml.safe_load((Path(bad.user_attrs["run_dir"]) / "config.yaml").read_text())
    assert {"class_path": "eqbench.sweep.callbacks.OptunaPruning", "init_args": {"monitor": "val_energy_mae"}} \
        in config["trainer"]["callbacks"]
