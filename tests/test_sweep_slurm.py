"""The SLURM launcher through submitit: the sbatch script it writes, and a worker run by submitit's local executor."""

import os
import pickle
from pathlib import Path

import pytest

from eqbench.sweep.launchers import SlurmOptions, submit_slurm
from eqbench.sweep.spec import load_spec
from eqbench.sweep.study import enqueue_missing_cells, open_storage, open_study
from tests.sweep_fixtures import assert_exactly_once, write_sweep

submitit = pytest.importorskip("submitit", reason="the SLURM launcher needs submitit (eqbench[slurm])")

FAKE_SBATCH = """#!/bin/sh
# Stands in for SLURM's sbatch: keeps the script it was given and answers like sbatch does.
cp "$1" "$FAKE_SBATCH_DIR/submitted.sh"
echo "Submitted batch job 4242"
"""


def test_sbatch_script_runs_an_array_of_sweep_workers(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for srun to detect a cluster
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_DIR", str(tmp_path))
    spec = load_spec(write_sweep(tmp_path, {"model.representation.init_args.n_features": [6, 10]}))
    runs = tmp_path / "runs"
    url = f"sqlite:///{tmp_path / 'study.db'}"
    options = SlurmOptions(partition="gpu", time_min=90, cpus_per_task=4, gpus_per_task=1, mem_gb=16,
                           additional={"account": "proj"}, setup=["module load cuda"])
    with pytest.warns(UserWarning, match="SQLite storage with several SLURM tasks"):
        jobs = submit_slurm(spec, url, runs, workers=3, options=options)
    assert [job.job_id for job in jobs] == ["4242_0", "4242_1", "4242_2"]

    script = (tmp_path / "submitted.sh").read_text()
    print(script)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --mem=16GB", "#SBATCH --account=proj",
                 "#SBATCH --array=0-2%3", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --job-name=eqbench-tiny", "module load cuda"):
        assert line in script.splitlines(), f"{line!r} missing from\n{script}"
    folder = runs.resolve() / "tiny" / "slurm"
    assert f"--output={folder}/%A_%a_0_log.out" in script and "submitit.core._submit" in script

    # What each array task runs: `eqbench sweep worker SPEC ...` with its index as --worker-id.
    pickles = sorted(folder.glob("4242_*_submitted.pkl"))
    assert len(pickles) == 3
    with pickles[1].open("rb") as f:
        submission = pickle.load(f)
    command = submission.function.command + [str(a) for a in submission.args]
    assert command[1:6] == ["-m", "eqbench.cli", "sweep", "worker", str(spec.path.resolve())]
    assert ["--storage", url] == command[command.index("--storage"):command.index("--storage") + 2]
    assert command[-3:] == ["--no-wait", "--worker-id", "1"]


def test_submitit_local_executor_runs_a_worker(tmp_path):
    spec = load_spec(write_sweep(tmp_path, {"model.representation.init_args.n_features": [8]}, seeds=[0, 1]))
    runs = tmp_path / "runs"
    url = f"sqlite:///{runs / 'tiny' / 'study.db'}"
    study = open_study(spec, open_storage(url, spec.heartbeat))
    enqueue_missing_cells(study, spec)
    jobs = submit_slurm(spec, url, runs, workers=1, options=SlurmOptions(time_min=10, cpus_per_task=2, gpus_per_task=0),
                        cluster="local")
    output = jobs[0].result()  # waits; raises with the worker's stderr if it failed
    assert "done: 2 COMPLETE" in output
    assert_exactly_once(spec, study)
    assert all(Path(t.user_attrs["run_dir"], "metrics.json").is_file() for t in study.get_trials())
