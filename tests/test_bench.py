"""``eqbench bench`` as a smoke test on a tiny batch (its numbers are not asserted), its registry, and the
peers' adaptors (skipped with the reason when a peer is not installed)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from eqbench.bench import BENCH_MODELS, BenchModel, register, run_bench
from eqbench.bench.contenders import Skipped, build_peer
from eqbench.bench.report import table
from eqbench.bench.structures import qm9_like_batch, water_batch
from eqbench.cli import main

SMALL = dict(n_features=16, n_interactions=1)


def test_bench_smoke_runs_every_operation_on_a_tiny_batch():
    record = run_bench(models=["painn", "schnet"], batch_sizes=[2], repeats=1, warmup=0, model_kwargs=SMALL,
                       only_peers=["schnetpack"], log=lambda m: None)
    rows = record["results"]
    ours = [r for r in rows if r["implementation"] == "eqbench"]
    assert {r["model"] for r in ours} == {"painn", "schnet"}
    for r in ours:
        assert set(r["times"]) == {"forward", "energy_forces", "train_step"} and not r["errors"]
        assert r["n_atoms"] == int(qm9_like_batch(2).pos.shape[0]) and r["n_edges"] > 0
        assert r["parameters"] > 0
    for r in rows:  # every peer either ran every operation or says why it did not
        assert r["skipped"] or (set(r["times"]) == {"forward", "energy_forces", "train_step"} and not r["errors"])
    assert record["environment"]["versions"]["torch"] == torch.__version__
    assert "| painn |" in table(record)


def test_scaling_structures_only_for_the_scaling_models_and_periodic_only_where_supported():
    record = run_bench(models=["schnet", "so3krates"], batch_sizes=[], repeats=1, warmup=0, peers=False,
                       ops=["forward"], memory=False, scaling=[12], scaling_models=["so3krates"],
                       model_kwargs=dict(n_features=12, n_interactions=1), log=lambda m: None)
    cases = {(r["model"], r["case"]) for r in record["results"]}
    assert cases == {("so3krates", "cluster")}  # So3krates refuses periodic cells; SchNet not asked for
    assert all(not r["errors"] for r in record["results"])


def test_memory_is_measured_only_after_every_timing(monkeypatch):
    # Measuring CPU memory fixes glibc's mmap threshold for the rest of the process, which slows every later
    # step 2–3×: no timing may come after the first memory measurement.
    import eqbench.bench.runner as runner

    events = []
    time_all, memory_class = runner._time_all, runner._Memory
    monkeypatch.setattr(runner, "_time_all", lambda *a, **k: events.append("time") or time_all(*a, **k))

    class Recorded(memory_class):
        def __init__(self, device):
            events.append("memory")
            super().__init__(device)

    monkeypatch.setattr(runner, "_Memory", Recorded)
    record = run_bench(models=["painn", "schnet"], batch_sizes=[2, 3], repeats=1, warmup=0, peers=False,
                       ops=["forward"], model_kwargs=SMALL, log=lambda m: None)
    assert events == ["time"] * 4 + ["memory"]
    assert all("forward" in r["memory_mb"] for r in record["results"])


def test_a_variant_entry_times_the_named_model_with_its_switches():
    """so3krates-nonlocal is So3krates with Eq. 14 on, with no peers, and not timed unless asked for (the
    non-local cost against molecule size comes from --scaling)."""
    from eqbench.bench.registry import DEFAULT_MODELS
    from eqbench.bench.runner import contenders_for

    small = dict(n_features=12, n_interactions=1, degrees=[1], n_heads=2, n_rbf=4)
    (local,) = contenders_for("so3krates", small, "cpu", torch.float32, peers=False, compile=False)
    (nonlocal_,) = contenders_for("so3krates-nonlocal", small, "cpu", torch.float32, peers=True, compile=False)
    assert not local.module.representation.nonlocal_corrections
    assert nonlocal_.module.representation.nonlocal_corrections
    assert "so3krates-nonlocal" not in DEFAULT_MODELS and "so3krates" in DEFAULT_MODELS
    record = run_bench(models=["so3krates-nonlocal"], batch_sizes=[1], repeats=1, warmup=0, ops=["forward"],
                       model_kwargs=small, scaling=[12], memory=False, log=lambda m: None)
    assert {(r["model"], r["case"]) for r in record["results"]} == {("so3krates-nonlocal", "qm9"),
                                                                     ("so3krates-nonlocal", "cluster")}


def test_isolated_models_run_in_fresh_processes(monkeypatch):
    """isolate=True: each model in its own spawned process (none of this process's state, such as a patched
    timer, reaches it), also an entry registered at run time."""
    import eqbench.bench.runner as runner

    monkeypatch.setattr(runner, "_time_all", lambda *a, **k: pytest.fail("timed in the parent process"))
    monkeypatch.setitem(BENCH_MODELS, "schnet-tiny", BenchModel("schnet-tiny", dict(SMALL), model="schnet"))
    record = run_bench(models=["schnet-tiny", "painn"], batch_sizes=[1], repeats=1, warmup=0, peers=False,
                       ops=["forward"], memory=False, isolate=True, model_kwargs=SMALL)
    rows = record["results"]
    assert [r["model"] for r in rows] == ["schnet-tiny", "painn"] and record["settings"]["isolate"]
    assert all(r["times"]["forward"] and not r["errors"] for r in rows)
    (tiny,) = runner.contenders_for("schnet-tiny", SMALL, "cpu", torch.float32, peers=False, compile=False)
    assert rows[0]["parameters"] == tiny.n_parameters


def test_a_spawned_process_takes_the_parents_thread_count_and_entry(monkeypatch):
    import eqbench.bench.runner as runner

    seen = {}

    def record(models, log, **settings):
        seen.update(models=models, threads=torch.get_num_threads(), entry=BENCH_MODELS[models[0]], **settings)
        return []

    entry = BenchModel("schnet", dict(SMALL), note="the parent's own")
    monkeypatch.setitem(BENCH_MODELS, "schnet", BENCH_MODELS["schnet"])  # restored afterwards
    monkeypatch.setattr(runner, "_time_models", record)
    threads = torch.get_num_threads()
    try:
        assert runner._time_model_in_child(entry, threads + 1, {"seed": 3}) == []
    finally:
        torch.set_num_threads(threads)
    assert seen == {"models": ["schnet"], "threads": threads + 1, "entry": entry, "seed": 3}


def test_a_model_eqbench_does_not_know_yet_is_skipped_with_the_reason():
    register(BenchModel("not-yet-a-model", {}, peers=("pyg",)))
    try:
        record = run_bench(models=["not-yet-a-model"], batch_sizes=[2], repeats=1, warmup=0, log=lambda m: None)
    finally:
        del BENCH_MODELS["not-yet-a-model"]
    (row,) = record["results"]
    assert "eqbench.models.create does not know 'not-yet-a-model'" in row["skipped"]
    assert "skipped: eqbench.models.create" in table(record)


def test_bench_cli_writes_table_json_and_report(tmp_path, capsys):
    rc = main(["bench", "--models", "schnet", "--batch-sizes", "1", "2", "--repeats", "1", "--warmup", "0",
               "--no-peers", "--ops", "forward", "energy_forces", "--scaling", "20", "--no-memory",
               "--json", str(tmp_path / "b.json"), "--report", str(tmp_path / "report")])
    assert rc == 0
    assert "| schnet |" in capsys.readouterr().out
    record = json.loads((tmp_path / "b.json").read_text())
    assert {r["case"] for r in record["results"]} == {"qm9", "cluster", "periodic"}
    index = (tmp_path / "report" / "index.md").read_text()
    assert "eqbench bench" in index and "| schnet |" in index
    assert (tmp_path / "report" / "time_vs_batch_atoms.svg").exists()
    assert (tmp_path / "report" / "time_vs_structure_atoms.svg").exists()


def test_bench_cli_refuses_an_unknown_model(capsys):
    assert main(["bench", "--models", "nonet", "--repeats", "1"]) == 2
    assert "unknown model 'nonet'" in capsys.readouterr().err


def test_structures_are_seeded_and_water_has_liquid_density():
    a, b = qm9_like_batch(3, seed=4), qm9_like_batch(5, seed=4)
    assert torch.equal(a.pos, b.pos[: len(a.pos)])
    assert 10 <= a.pos.shape[0] / 3 <= 30
    box = water_batch(81, periodic=True)
    density = box.pos.shape[0] / torch.det(box.cell[0].double())
    assert float(density) == pytest.approx(0.1, rel=0.02)  # atoms/Å³ of water at 1 g/cm³
    assert water_batch(100, periodic=False).pos.shape[0] == 102


@pytest.mark.parametrize("peer,model,params", [("schnetpack", "painn", 589_057), ("schnetpack", "schnet", 455_809),
                                               ("pyg", "schnet", 455_809)])
def test_peer_parameter_counts_at_the_papers_sizes(peer, model, params):
    c = build_peer(peer, model, BENCH_MODELS[model].kwargs, "cpu", torch.float32)
    if isinstance(c, Skipped):
        pytest.skip(c.reason)
    assert c.n_parameters == params  # measured with the peers' own constructors (PEERS.md)


def test_eqbench_contender_uses_the_head_a_training_run_builds():
    # DimeNet++ asks for its own output layer (one linear map per target, no bias): the benchmarked model must
    # be the one `eqbench fit` trains, i.e. PyG's 1,885,830 parameters plus 6 more embedding rows × 128.
    from eqbench.bench.contenders import EqbenchContender

    assert EqbenchContender("dimenet++", {}, "cpu", torch.float32).n_parameters == 1_885_830 + 6 * 128


@pytest.mark.skipif(importlib.util.find_spec("torch_geometric") is None, reason="torch-geometric is not installed")
def test_pyg_dimenetpp_runs_on_eqbench_triplets():
    c = build_peer("pyg", "dimenet++", dict(n_features=16, n_interactions=1, n_rbf=3, lmax=2), "cpu",
                   torch.float64)
    assert not isinstance(c, Skipped), getattr(c, "reason", "")
    batch = qm9_like_batch(2, dtype=torch.float64)
    inputs = c.prepare(batch)
    c.module.eval()
    energy, forces = c.energy_forces(inputs)
    assert energy.shape == (2,) and forces.shape == batch.pos.shape and torch.isfinite(forces).all()
    # rotating the molecules leaves the energies unchanged: the handed triplets and angles are consistent
    from tests.model_checks import random_rotation

    rot = random_rotation(1)
    rotated = c.prepare(type(batch)(**{**batch.__dict__, "pos": batch.pos @ rot.T}))
    assert torch.allclose(c.energy(rotated), c.energy(inputs), atol=1e-8)


@pytest.mark.skipif(importlib.util.find_spec("so3krates_torch") is None, reason="so3krates-torch is not installed")
def test_so3krates_torch_peer_runs():
    c = build_peer("so3krates-torch", "so3krates", dict(n_interactions=1), "cpu", torch.float32)
    assert not isinstance(c, Skipped), getattr(c, "reason", "")
    batch = qm9_like_batch(2)
    energy, forces = c.energy_forces(c.prepare(batch))
    assert energy.shape == (2,) and forces.shape == batch.pos.shape and torch.isfinite(forces).all()
