"""Shared fixtures: environment for offline runs, random molecules, small datasets and caches."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def eqbench_home(tmp_path_factory):
    """A fresh EQBENCH_HOME per test session, so that no test writes to the user's cache."""
    home = tmp_path_factory.mktemp("eqbench_home")
    old = os.environ.get("EQBENCH_HOME")
    os.environ["EQBENCH_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("EQBENCH_HOME", None)
    else:
        os.environ["EQBENCH_HOME"] = old


@pytest.fixture
def one_torch_thread():
    """Tiny tensors gain nothing from threads; on a busy 2-core machine OpenMP's waiting threads slow them down."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_positions(rng: np.random.Generator, n: int, spread: float = 1.5, min_dist: float = 0.9) -> np.ndarray:
    """``n`` points from a Gaussian cloud, pairwise at least ``min_dist`` apart (rejection sampling)."""
    pos: list[np.ndarray] = []
    while len(pos) < n:
        p = rng.normal(size=3) * spread
        if all(np.linalg.norm(p - q) >= min_dist for q in pos):
            pos.append(p)
    return np.array(pos, dtype=np.float64).reshape(n, 3)


def make_molecules(sizes, seed: int = 0, elements=(1, 6, 7, 8), spread: float = 1.5):
    """Per-molecule lists (numbers, positions, properties) with random targets of several kinds.

    properties: ``energy`` (per molecule, scalar), ``dipole`` (per molecule, 3-vector), ``n_carbon``
    (per molecule, int), ``forces`` (per atom, 3-vector), ``charges`` (per atom, scalar).
    """
    rng = np.random.default_rng(seed)
    numbers, positions = [], []
    props = {"energy": [], "dipole": [], "n_carbon": [], "forces": [], "charges": []}
    for n in sizes:
        z = rng.choice(elements, size=n).astype(np.int64)
        numbers.append(z)
        positions.append(random_positions(rng, n, spread))
        props["energy"].append(float(rng.normal() * 10))
        props["dipole"].append(rng.normal(size=3))
        props["n_carbon"].append(int((z == 6).sum()))
        props["forces"].append(rng.normal(size=(n, 3)))
        props["charges"].append(rng.normal(size=n))
    return numbers, positions, props


UNITS = {"energy": "eV", "dipole": "D", "n_carbon": "", "forces": "eV/Å", "charges": "e"}
PER_ATOM = ("forces", "charges")


@pytest.fixture
def molecules():
    """Raw per-molecule lists of a small mixed-size set (one single-atom molecule included)."""
    return make_molecules([3, 1, 7, 5, 2, 9, 4, 6, 8, 3, 5, 2], seed=1)


@pytest.fixture
def dataset(molecules):
    from eqbench.data import AtomisticDataset

    numbers, positions, props = molecules
    ds = AtomisticDataset.from_molecules(numbers, positions, props, UNITS, per_atom=PER_ATOM,
                                         metadata={"method": "random test data", "n": 3})
    ref = np.zeros(119)
    ref[[1, 6, 7, 8]] = [-0.5, -37.8, -54.6, -75.1]
    ds.atomrefs["energy"] = ref
    return ds


@pytest.fixture
def cache_file(dataset, tmp_path):
    from eqbench.data import write_cache

    path = tmp_path / "data" / "small.h5"
    write_cache(dataset, path, compression=None)
    return path


@pytest.fixture
def grid_dataset():
    """40 molecules with a per-molecule ``n_carbon`` in {0, 1, 2, 3}, for splits and the DataModule."""
    from eqbench.data import AtomisticDataset

    rng = np.random.default_rng(7)
    numbers, positions, energy, n_carbon = [], [], [], []
    for b in range(40):
        n = 2 + b % 4
        z = np.ones(n, dtype=np.int64)
        z[: b % 4] = 6
        numbers.append(z)
        positions.append(random_positions(rng, n))
        energy.append(float(b))
        n_carbon.append(b % 4)
    forces = [rng.normal(size=(len(z), 3)) for z in numbers]
    return AtomisticDataset.from_molecules(numbers, positions,
                                           {"energy": energy, "n_carbon": n_carbon, "forces": forces},
                                           {"energy": "eV", "n_carbon": "", "forces": "eV/Å"},
                                           per_atom=["forces"])
