"""Fault injection: processes killed mid-epoch and mid-write, a full disk, an out-of-memory trial, concurrent
writers of one file, and a sweep worker that dies between starting a trial and the trial's start-up.

Faults are injected at a chosen point (a training batch, a chunk, a file size limit), never by timing, so
each test is deterministic. Models are ~1k parameters on 60 toy molecules, 3 epochs of 4 batches.
"""

from __future__ import annotations

import copy
import csv
import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from optuna.trial import TrialState

from eqbench.checkpoints import read_checkpoint
from eqbench.cli import main
from eqbench.data import read_cache
from tests.sweep_fixtures import TINY_BASE, load, write_sweep
from tests.toy_data import toy_cache

ROOT = Path(__file__).resolve().parents[1]
BATCHES_PER_EPOCH = 4  # train_size 40 / batch_size 10
EPOCHS = 3


def fit_config(directory: Path, run_dir: Path, callbacks=(), **trainer) -> Path:
    """A tiny fit config (CSV logger on, so metrics.csv is written) in ``directory``; returns its path."""
    cache = directory / "toy.h5"
    if not cache.is_file():
        toy_cache(directory, n_molecules=60)
    config = copy.deepcopy(TINY_BASE)
    del config["trainer"]["logger"]  # eqbench's loggers: metrics.csv
    config["trainer"].update({"max_epochs": EPOCHS, **trainer})
    config["trainer"]["callbacks"] = list(callbacks)
    config["data"].update(path=str(cache), batch_size=10)
    config["run"]["dir"] = str(run_dir)
    path = directory / f"fit-{len(list(directory.glob('fit-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def kill_at(epoch: int, batch: int, sig: str, marker: Path) -> dict:
    return {"class_path": "tests.fault_fixtures.KillAt",
            "init_args": {"epoch": epoch, "batch": batch, "signal": sig, "marker": str(marker)}}


def eqbench(*args: str, file_size_limit: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``eqbench ARGS`` in a fresh process (optionally with RLIMIT_FSIZE: writes past it fail with EFBIG)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error from write(), not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    env.pop("EQBENCH_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "eqbench.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout, preexec_fn=limit if file_size_limit else None)


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def epochs_with(rows: list[dict], column: str) -> list[int]:
    return [int(r["epoch"]) for r in rows if r.get(column)]


def global_step(path: Path) -> int:
    return int(read_checkpoint(path)["global_step"])


# ------------------------------------------------------------------------------------------- kill and resume
def test_fit_killed_by_sigkill_then_sigterm_resumes_from_last_ckpt(tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    sigkill, sigterm = tmp_path / "sigkill-at-step", tmp_path / "sigterm-at-step"
    # Killed (SIGKILL) at batch 1 of epoch 1; the resumed run is stopped (SIGTERM) at batch 1 of epoch 2.
    config = fit_config(tmp_path, run_dir, [kill_at(1, 1, "SIGKILL", sigkill), kill_at(2, 1, "SIGTERM", sigterm)])

    killed = eqbench("fit", "--config", str(config))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert int(sigkill.read_text()) == BATCHES_PER_EPOCH + 1  # the kill came mid-epoch
    assert global_step(last) == BATCHES_PER_EPOCH  # last.ckpt: the end of epoch 0
    assert epochs_with(csv_rows(run_dir), "train_loss") == [0]  # the finished epoch's rows are on disk
    assert not list(last.parent.glob(".*tmp*"))

    stopped = eqbench("fit", "--config", str(run_dir / "config.yaml"), "--ckpt_path", str(last))
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert "stopped by SIGTERM" in stopped.stderr and "Traceback" not in stopped.stderr
    # SIGTERM wrote last.ckpt at the batch reached (batch 1 of epoch 2 finished) before the process exited.
    assert int(sigterm.read_text()) == 2 * BATCHES_PER_EPOCH + 1
    assert global_step(last) == 2 * BATCHES_PER_EPOCH + 2 and read_checkpoint(last)["epoch"] == 2

    assert main(["fit", "--config", str(run_dir / "config.yaml"), "--ckpt_path", str(last)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == EPOCHS * BATCHES_PER_EPOCH  # as many steps as an uninterrupted run
    assert metrics["start_global_step"] == 2 * BATCHES_PER_EPOCH + 2
    assert metrics["epochs"] == EPOCHS and "test" in metrics
    rows = csv_rows(run_dir)
    # The learning curve continues across both kills: every epoch once, in order, no duplicates.
    assert epochs_with(rows, "train_loss") == list(range(EPOCHS))
    assert epochs_with(rows, "val_loss_smoothed") == list(range(EPOCHS))
    steps = [int(r["step"]) for r in rows if r.get("train_loss")]
    assert steps == sorted(steps) and len(set(steps)) == EPOCHS


def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path):
    run_dir = tmp_path / "run"
    config = fit_config(tmp_path, run_dir, max_epochs=1)
    assert main(["fit", "--config", str(config)]) == 0
    checkpoints = run_dir / "checkpoints"
    before = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    assert sorted(before) == ["best.ckpt", "last.ckpt"]
    assert all(len(data) > 20_000 for data in before.values())

    # Another epoch with a file-size limit below a checkpoint's size: saving one fails with EFBIG.
    full = eqbench("fit", "--config", str(run_dir / "config.yaml"), "--ckpt_path", str(checkpoints / "last.ckpt"),
                   "--trainer.max_epochs", "2", file_size_limit=16_000)
    assert full.returncode == 2, full.stderr[-2000:]
    error = full.stderr.strip().splitlines()[-1]
    assert error.startswith("eqbench: error: could not write checkpoint ") and "File too large" in error, error
    assert "the previous one is kept" in error and "Traceback" not in full.stderr
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == before  # intact, no temporary files left
    assert global_step(checkpoints / "last.ckpt") == BATCHES_PER_EPOCH


def test_full_disk_during_a_report_keeps_the_previous_report(tmp_path):
    from tests.test_report_build import synthetic_sweep

    spec_path, _, _, runs = synthetic_sweep(tmp_path)
    out = tmp_path / "report"
    assert main(["report", str(spec_path), "--runs-dir", str(runs), "--out", str(out), "--wandb", "disabled"]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any(p.suffix == ".png" for p in before)

    full = eqbench("report", str(spec_path), "--runs-dir", str(runs), "--out", str(out), "--wandb", "disabled",
                   file_size_limit=4_000)  # tables fit, plots do not
    assert full.returncode == 2, full.stderr[-2000:]
    error = full.stderr.strip().splitlines()[-1]
    assert error.startswith(f"eqbench: error: could not write report {out} (File too large"), error
    assert "the previous report is kept" in error and "Traceback" not in full.stderr
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("report")) == ["report"]


# ------------------------------------------------------------------------------------------- sweeps
def test_out_of_memory_trial_fails_alone_and_the_worker_carries_on(tmp_path):
    oom = {"trainer.callbacks": [{"class_path": "tests.fault_fixtures.MemoryLimit",
                                  "init_args": {"headroom_mb": 256, "allocate_mb": 4096}}]}
    spec_path = write_sweep(tmp_path, {"variant": {"oom": oom, "ok": {}}}, seeds=[0])
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(spec_path), "--runs-dir", str(runs)]) == 1  # not every cell complete
    _, study = load(spec_path, f"sqlite:///{(runs / 'tiny' / 'study.db').resolve()}")
    trials = study.get_trials()
    assert [t.params["variant"] for t in trials] == ["oom", "ok"]  # the worker went on with the next cell
    failed, ok = trials
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_kind"] == "oom"
    assert "out of memory" in failed.user_attrs["fail_reason"]
    assert "can't allocate memory" in failed.user_attrs["fail_reason"]  # torch's allocator under RLIMIT_AS
    assert ok.state == TrialState.COMPLETE and ok.user_attrs["worker"] == failed.user_attrs["worker"]


def test_sigterm_to_sweep_run_stops_its_local_workers(tmp_path):
    # `sweep run --workers 2` gets SIGTERM (as from `kill` or a batch system) while a trial trains: it passes
    # the signal on and exits 143 only when both workers have recorded their trials and exited; no worker goes
    # on to the other cells.
    marker = tmp_path / "launcher.pid"
    stop = {"trainer.callbacks": [{"class_path": "tests.fault_fixtures.TerminateSweepLauncher",
                                   "init_args": {"epoch": 0, "batch": 1, "marker": str(marker)}}]}
    spec_path = write_sweep(tmp_path, {"variant": {"stop": stop}}, seeds=[0, 1, 2, 3])
    runs = tmp_path / "runs"
    stopped = eqbench("sweep", "run", str(spec_path), "--runs-dir", str(runs), "--workers", "2")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert "stopped by SIGTERM" in stopped.stderr and "Traceback" not in stopped.stderr
    _, study = load(spec_path, f"sqlite:///{(runs / 'tiny' / 'study.db').resolve()}")
    trials = [t for t in study.get_trials() if t.state != TrialState.WAITING]
    assert 1 <= len(trials) <= 2  # stopped during the first cells; the other queued cells were not claimed
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    assert "interrupted" in [t.user_attrs.get("fail_kind") for t in trials]
    for worker in {t.user_attrs["worker"] for t in trials}:  # "host:pid/wN"
        pid = int(worker.split(":")[1].split("/")[0])
        assert not Path(f"/proc/{pid}").exists(), f"worker {worker} still runs"


def test_a_trial_whose_worker_died_before_its_start_up_exits_without_training(tmp_path):
    # The worker passes its pid; a trial process whose parent is not that pid when it starts (its worker was
    # killed between Popen and the trial's start-up, so the reaper adopted it) must exit before training.
    run_dir = tmp_path / "trial"
    run_dir.mkdir()
    (run_dir / "sweep_trial.yaml").write_text(yaml.safe_dump(TINY_BASE))  # would train if it ever started
    not_my_parent = 1 if os.getpid() != 1 else os.getpid() + 1
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    orphan = subprocess.run([sys.executable, "-m", "eqbench.sweep.trial", str(run_dir), str(not_my_parent)],
                            capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    from eqbench.sweep.trial import ORPHANED_EXIT

    assert orphan.returncode == ORPHANED_EXIT, orphan.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["sweep_trial.yaml"]  # no trial.pid, no result, no run


# ------------------------------------------------------------------------------------------- concurrent writers
def _prepare_then_split(args: list[str], cache: str, barrier, out: str) -> None:
    """`eqbench data prepare` of one cache and then one split file, at the same moment as another process."""
    import numpy as np

    from eqbench.data import make_split

    barrier.wait()
    code = main(args)
    ds = read_cache(cache)
    barrier.wait()
    split = make_split(np.arange(len(ds)), "random", 3, Path(cache).parent / "splits", ds.fingerprint, train=30,
                       val=10)
    np.savez(out, code=code, train=split.train, val=split.val, test=split.test)


def test_two_preparers_of_one_cache_and_split_never_expose_a_half_written_file(tmp_path):
    import numpy as np
    from ase import Atoms
    from ase.io import write

    from eqbench.errors import DataError

    frames = []
    for i in range(300):
        atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96 + 0.001 * i, 0, 0], [-0.24, 0.93, 0]])
        atoms.info["energy"] = -1.0 - 0.01 * i
        frames.append(atoms)
    src = tmp_path / "frames.extxyz"
    write(src, frames, format="extxyz")
    cache = tmp_path / "cache" / "water.h5"
    args = ["data", "prepare", str(src), "--out", str(cache), "--units", "energy=eV"]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    outs = [tmp_path / f"out-{i}.npz" for i in range(2)]
    processes = [context.Process(target=_prepare_then_split, args=(args, str(cache), barrier, str(out)))
                 for out in outs]
    for p in processes:
        p.start()
    seen = set()  # meanwhile, this process reads the cache as fast as it can
    while any(p.is_alive() for p in processes):
        try:
            seen.add(len(read_cache(cache)))
        except DataError as err:
            assert "not found" in str(err), err  # absent until the first rename, never half-written
        time.sleep(0.01)  # leave the two writers most of the CPU
    for p in processes:
        p.join(300)
        assert p.exitcode == 0
    assert seen <= {300}, seen  # every read saw the whole dataset
    results = [np.load(out) for out in outs]
    assert [int(r["code"]) for r in results] == [0, 0]  # both preparers succeeded
    assert sorted(p.name for p in cache.parent.iterdir()) == ["splits", "water.h5"]  # no temporary file left
    assert len(read_cache(cache, validate=True)) == 300
    for key in ("train", "val", "test"):  # both got the same split, and the file holds it whole
        np.testing.assert_array_equal(results[0][key], results[1][key])
    files = list((cache.parent / "splits").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    with np.load(files[0]) as f:
        np.testing.assert_array_equal(f["train"], results[0]["train"])


# ------------------------------------------------------------------------------------------- generation
KILL_DURING_GENERATE = """
import os, signal, sys
from eqbench.data.generate import chunks
from eqbench.cli import main

original = chunks.os.replace
def replace(src, dst):
    if str(dst).endswith("chunk-00001.npz"):  # chunk 1 written to its temporary file, not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
    return original(src, dst)

chunks.os.replace = replace
sys.exit(main(sys.argv[1:]))
"""


def test_generate_killed_mid_write_resumes_from_its_chunks(tmp_path, monkeypatch):
    pytest.importorskip("tblite.interface", reason="tblite not installed (pip install 'eqbench[xtb]')")
    out = tmp_path / "cu.h5"
    args = ["data", "generate", "cumulene", "--out", str(out), "--n", "2", "--sizes", "3", "--chunk-size", "1",
            "--workers", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_GENERATE, *args], capture_output=True, text=True,
                            timeout=300, env=env, cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    parts = tmp_path / "cu.h5.parts"
    assert not out.exists()  # nothing that looks like a finished file
    assert sorted(p.name for p in parts.glob("chunk-*.npz")) == ["chunk-00000.npz"]
    assert len(list(parts.glob("chunk-00001.npz.tmp-*"))) == 1  # the half-done chunk, never used

    from eqbench.data.generate import chunks

    labels, original = [], chunks.single_point
    monkeypatch.setattr(chunks, "single_point", lambda *a, **k: labels.append(1) or original(*a, **k))
    assert main(args) == 0
    assert len(labels) == 1  # only the unfinished chunk was computed again
    assert not parts.exists()
    ds = read_cache(out, validate=True)
    assert len(ds) == 2 and len(ds.metadata["resume_commands"]) == 1
    assert torch.isfinite(torch.as_tensor(ds.properties["energy"].values)).all()
