"""How a run ended: stop reason, epochs, steps and wall time in metrics.json and run.json; the code
version (git describe, dirty-tree diff hash) in run.json."""

import hashlib
import json
import subprocess

import pytest
import yaml
from lightning.pytorch.callbacks import Callback

import eqbench
from eqbench.cli import main
from eqbench.tracking import git_state
from tests.sweep_fixtures import TINY_BASE
from tests.toy_data import toy_cache


def _fit(tmp_path, trainer=None, model=None):
    config = {**TINY_BASE, "trainer": {**TINY_BASE["trainer"], **(trainer or {})},
              "model": {**TINY_BASE["model"], **(model or {})},
              "data": {**TINY_BASE["data"], "path": str(toy_cache(tmp_path, n_molecules=60))}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    main(["fit", "--config", str(tmp_path / "config.yaml"), "--run.dir", str(run_dir)])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    return metrics, run


def test_a_run_that_ends_at_max_epochs_says_so(tmp_path):
    metrics, run = _fit(tmp_path, {"max_epochs": 2})
    assert metrics["stop_reason"] == "max_epochs" and metrics["stop_detail"] is None
    assert metrics["epochs"] == 2 and metrics["global_step"] == 4  # 40 molecules / batch 20 = 2 steps per epoch
    assert metrics["max_epochs"] == 2 and metrics["max_time_s"] is None and metrics["wall_time_s"] > 0
    assert run["ended"]["stop_reason"] == "max_epochs" and run["ended"]["epochs"] == 2
    assert "test" in metrics  # the tests after fit still write their metrics next to the ending


def test_a_time_limited_run_is_marked_max_time(tmp_path):
    metrics, run = _fit(tmp_path, {"max_epochs": 100_000, "max_time": {"seconds": 1}})
    assert metrics["stop_reason"] == "max_time", metrics
    assert metrics["epochs"] < 100_000 and metrics["max_time_s"] == 1.0
    assert "max_time" in metrics["stop_detail"] and run["ended"]["stop_reason"] == "max_time"


def test_early_stopping_is_its_own_reason(tmp_path):
    # lr 0: the validation loss never improves, so patience 1 stops after the second epoch.
    metrics, _ = _fit(tmp_path, {"max_epochs": 50}, {"lr": 0.0, "early_stopping_patience": 1})
    assert metrics["stop_reason"] == "early_stopping" and metrics["epochs"] < 50


class ExplodeAtSecondEpoch(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("boom")


def test_a_failing_run_records_failed_with_the_error(tmp_path):
    callback = {"class_path": "tests.test_run_ending.ExplodeAtSecondEpoch"}
    with pytest.raises(RuntimeError, match="boom"):
        _fit(tmp_path, {"max_epochs": 5, "callbacks": [callback]})
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert metrics["stop_reason"] == "failed" and "RuntimeError: boom" in metrics["stop_detail"]
    assert metrics["epochs"] == 1 and run["ended"]["stop_reason"] == "failed"


def test_run_json_records_git_describe_and_a_diff_hash_when_dirty(tmp_path):
    state = git_state()
    if not state:
        pytest.skip("eqbench is not a git checkout here")
    assert state["git_describe"] and state["git_commit"]
    assert state["git_dirty"] == state["git_describe"].endswith("-dirty")
    if state["git_dirty"]:
        diff = subprocess.run(["git", "diff", "HEAD", "--binary"], capture_output=True, check=True,
                              cwd=eqbench.__path__[0]).stdout
        assert state["git_diff_sha256"] == hashlib.sha256(diff).hexdigest() and state["git_dirty_files"]
    else:
        assert "git_diff_sha256" not in state
