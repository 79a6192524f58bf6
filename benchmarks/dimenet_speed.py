"""DimeNet++ training step: eqbench against PyTorch Geometric's DimeNetPlusPlus, same weights, same graph.

The standard batch is 50 QM9 molecules: the real samples in ../shared/data/qm9 repeated with coordinates
perturbed by 0.02 Å (random QM9-sized molecules when the samples are absent). One training step is
energy + forces (create_graph) → loss (energy MSE + forces MSE) → backward. Both models have the paper's
hyperparameters (F = 128, 4 blocks, 64/8/256, N_SHBF = 7, N_SRBF = N_RBF = 6) and identical weights
(tests/pyg_dimenet.py transfers them and checks the energies agree); PyG's graph helpers are replaced by
eqbench's radius graph and triplets. Times alternate between the models in one process (median of
``--repeats``); peak memory: ``--only ours`` / ``--only pyg`` run one model alone in the process (the
other is not built) and report the peak resident set size above the process's size before its first step.

    PYTHONPATH=$PWD python benchmarks/dimenet_speed.py [--repeats 7] [--threads 2] [--profile]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eqbench.batch import Batch  # noqa: E402
from eqbench.heads import Energy  # noqa: E402
from eqbench.models import AtomisticModel, create  # noqa: E402
from tests.pyg_dimenet import import_pyg_dimenet, pyg_graph_from_eqbench, transfer_weights  # noqa: E402

SHARED_QM9 = ROOT.parent / "shared" / "data" / "qm9"
SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


def standard_batch(n_molecules: int = 50, seed: int = 0) -> tuple[Batch, str]:
    rng = np.random.default_rng(seed)
    molecules = []
    for path in sorted(SHARED_QM9.glob("dsgdb9nsd_*.xyz")):
        lines = path.read_text().split("\n")
        n = int(lines[0])
        rows = [line.split("\t") for line in lines[2:2 + n]]
        z = [SYMBOLS[r[0]] for r in rows]
        pos = [[float(v.replace("*^", "e")) for v in r[1:4]] for r in rows]
        molecules.append((np.array(z), np.array(pos)))
    source = f"{len(molecules)} QM9 samples from {SHARED_QM9}"
    if not molecules:
        from tests.model_checks import random_molecules

        b = random_molecules(sizes=tuple(int(v) for v in rng.integers(12, 25, size=12)), seed=seed,
                             dtype=torch.float32)
        molecules = [(b.z[b.batch == m].numpy(), b.pos[b.batch == m].numpy()) for m in range(12)]
        source = "random QM9-sized molecules (../shared/data/qm9 absent)"
    zs, ps, sizes = [], [], []
    for k in range(n_molecules):
        z, pos = molecules[k % len(molecules)]
        zs.append(z)
        ps.append(pos + rng.normal(scale=0.02, size=pos.shape))
        sizes.append(len(z))
    n_atoms = torch.tensor(sizes)
    batch = Batch(z=torch.as_tensor(np.concatenate(zs)), pos=torch.as_tensor(np.concatenate(ps), dtype=torch.float32),
                  batch=torch.repeat_interleave(torch.arange(n_molecules), n_atoms), n_atoms=n_atoms)
    return batch, source


def build(seed: int = 0):
    dm = import_pyg_dimenet()
    if dm is None:
        raise SystemExit("PyTorch Geometric (and sympy) are needed for this benchmark: pip install torch-geometric")
    torch.manual_seed(seed)
    pyg = dm.DimeNetPlusPlus(128, 1, 4, 64, 8, 256, 7, 6, output_initializer="glorot_orthogonal")
    rep = create("dimenet++")
    ours = AtomisticModel(rep, [Energy(rep.n_features, forces=True, **rep.head_kwargs)])
    transfer_weights(pyg, ours)
    return dm, pyg, ours


def step_ours(model, batch, target_e, target_f):
    model.train()
    out = model(batch)
    loss = (out["energy"] - target_e).pow(2).mean() + (out["forces"] - target_f).pow(2).mean()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return out


def step_pyg(dm, model, batch, target_e, target_f):
    model.train()
    with pyg_graph_from_eqbench(dm):
        pos = batch.pos.detach().requires_grad_(True)
        energy = model(batch.z, pos, batch.batch).squeeze(-1)
        (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=True)
        loss = (energy - target_e).pow(2).mean() + (-grad - target_f).pow(2).mean()
        loss.backward()
    model.zero_grad(set_to_none=True)
    return energy


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(which: str, repeats: int, n_molecules: int) -> dict:
    """One model alone in this process (the other is not even built), so the peak RSS is this model's."""
    batch, _ = standard_batch(n_molecules)
    te, tf = torch.zeros(batch.n_molecules), torch.zeros_like(batch.pos)
    if which == "ours":
        dm, pyg, rep = None, None, create("dimenet++")
        ours = AtomisticModel(rep, [Energy(rep.n_features, forces=True, **rep.head_kwargs)])
    else:
        dm, ours = import_pyg_dimenet(), None
        pyg = dm.DimeNetPlusPlus(128, 1, 4, 64, 8, 256, 7, 6, output_initializer="glorot_orthogonal")
    before = peak_rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step_ours(ours, batch, te, tf) if which == "ours" else step_pyg(dm, pyg, batch, te, tf)
        times.append(time.perf_counter() - t0)
    return {"model": which, "median_s": statistics.median(times), "peak_rss_increase_mb": peak_rss_mb() - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--molecules", type=int, default=50)
    parser.add_argument("--only", choices=["ours", "pyg"], help="one model alone (what the memory measurement runs)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's table for one eqbench step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only:
        print(json.dumps(run_one(args.only, args.repeats, args.molecules)))
        return
    dm, pyg, ours = build()
    batch, source = standard_batch(args.molecules)
    te, tf = torch.zeros(batch.n_molecules), torch.zeros_like(batch.pos)
    e_ours = step_ours(ours, batch, te, tf)["energy"].detach()
    e_pyg = step_pyg(dm, pyg, batch, te, tf).detach()
    from eqbench.geometry import radius_graph, triplets

    graph = radius_graph(batch.pos, batch.batch, batch.n_atoms, 5.0)
    n_triplets = len(triplets(graph.center, graph.neighbor, len(batch.z)).i)
    print(f"batch: {batch.n_molecules} molecules, {len(batch.z)} atoms, {len(graph.dist)} edges, {n_triplets} "
          f"triplets ({source}); max |E_ours − E_pyg| = {float((e_ours - e_pyg).abs().max()):.2e}")
    if args.profile:
        with torch.profiler.profile() as prof:
            step_ours(ours, batch, te, tf)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    t_ours, t_pyg = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step_pyg(dm, pyg, batch, te, tf)
        t_pyg.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        step_ours(ours, batch, te, tf)
        t_ours.append(time.perf_counter() - t0)
    mo, mp = statistics.median(t_ours), statistics.median(t_pyg)
    print(f"train step (median of {args.repeats}, {args.threads} threads): eqbench {mo:.3f} s, PyG {mp:.3f} s, "
          f"PyG / eqbench = {mp / mo:.2f}×")
    print("peak memory: run this script with --only ours and with --only pyg (one model per process; the peak "
          "RSS above the process's size before its first step)")


if __name__ == "__main__":
    main()
