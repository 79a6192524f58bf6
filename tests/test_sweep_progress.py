"""A sweep shows its progress: per-epoch lines from the worker, how each trial ended in the study, and
`sweep status --watch`."""

import io
import json

from optuna.trial import TrialState

from eqbench.cli import main
from eqbench.sweep.progress import PROGRESS_FILE, ProgressFollower, format_progress
from eqbench.sweep.status import watch_status
from tests.sweep_fixtures import load, write_sweep
from tests.test_sweep_run import sqlite_url


def test_worker_prints_epochs_and_the_study_records_how_trials_ended(tmp_path, capsys):
    spec_path = write_sweep(tmp_path, {"model.representation.init_args.n_features": [6]}, seeds=[0],
                            budget={"max_epochs": 3, "max_time": 30})
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(spec_path), "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "trial 0 epoch 3/3: val_energy_mae " in out  # the last epoch is always shown
    spec, study = load(spec_path, sqlite_url(runs, "tiny"))
    (trial,) = study.get_trials()
    assert trial.user_attrs["stop_reason"] == "max_epochs" and trial.user_attrs["epochs"] == 3
    progress = json.loads((tmp_path / "runs" / "tiny" / "0000-n_features=6-seed=0" / PROGRESS_FILE).read_text())
    assert progress["epoch"] == 3 and progress["max_epochs"] == 3 and progress["eta_s"] == 0
    assert progress["max_time_s"] == 1800 and not progress["time_limited"]

    # --watch on a finished sweep prints the table once and returns.
    assert main(["sweep", "status", str(spec_path), "--runs-dir", str(runs), "--watch", "0.01", "--plain"]) == 0
    text = capsys.readouterr().out
    assert text.count("sweep tiny") == 1 and "3 (max_epochs)" in text


def test_watch_refreshes_while_cells_are_running(tmp_path):
    class FakeStudy:
        def __init__(self, running):
            self.running = running

        def get_trials(self, deepcopy=False, states=None):
            return []

    views = iter([True, True, False])
    counts_seen = []

    def fake_status(spec, study, plain, out):
        counts = {"cells": 1, "running": int(study.running), "waiting": 0, "complete": int(not study.running)}
        counts_seen.append(counts)
        print("table", file=out)
        return counts

    import eqbench.sweep.status as status

    original = status.print_status
    status.print_status = fake_status
    try:
        out = io.StringIO()
        watch_status(None, lambda: FakeStudy(next(views)), interval=0.01, plain=True, out=out)
    finally:
        status.print_status = original
    assert len(counts_seen) == 3 and out.getvalue().count("table") == 3 and out.getvalue().count("--- ") == 3


def test_progress_lines_at_a_modest_rate(tmp_path):
    lines = []
    follower = ProgressFollower(tmp_path, lines.append, "trial 7", min_interval_s=3600, poll_s=3600)
    state = {"epoch": 1, "max_epochs": 20, "metric": "val_loss", "value": 2.0, "best": 2.0, "epoch_s": 30.0,
             "elapsed_s": 30.0, "eta_s": 570.0, "max_time_s": None, "time_limited": False}
    follower.check()
    assert lines == []  # nothing written yet
    (tmp_path / PROGRESS_FILE).write_text(json.dumps(state))
    follower.check()
    (tmp_path / PROGRESS_FILE).write_text(json.dumps({**state, "epoch": 2, "value": 2.5}))
    follower.check()  # within min_interval_s of the last line: skipped
    follower.check(final=True)
    assert lines == ["trial 7 epoch 1/20: val_loss 2, 30 s/epoch, ETA 9.5 min",
                     "trial 7 epoch 2/20: val_loss 2.5 (best 2), 30 s/epoch, ETA 9.5 min"]
    limited = format_progress({**state, "eta_s": 60.0, "max_time_s": 90.0, "time_limited": True})
    assert limited.endswith("ETA 60 s (max_time stops it before the last epoch)")


def test_status_marks_trial_endings_without_attributes_from_metrics_json(tmp_path):
    # Trials recorded before workers copied stop_reason into the study: status reads the run's metrics.json.
    from optuna.trial import create_trial

    from eqbench.sweep.status import ending

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"stop_reason": "max_time", "epochs": 17}))
    trial = create_trial(state=TrialState.COMPLETE, value=1.0, user_attrs={"run_dir": str(run_dir)})
    assert ending(trial) == {"stop_reason": "max_time", "epochs": 17}
