"""The models ``eqbench bench`` knows, with their papers' hyperparameters and the peers to compare with.

A model joins the benchmark by one entry here. An entry whose name ``eqbench.models.create`` does not
know (yet) is listed and skipped with the reason. Peers are named as in
:data:`eqbench.bench.contenders.PEER_CLASSES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BenchModel:
    name: str  # the benchmark's name for the entry (``--models``)
    kwargs: dict = field(default_factory=dict)  # hyperparameters (eqbench vocabulary); {} = the model's defaults
    peers: tuple[str, ...] = ()
    note: str = ""
    model: str = ""  # as eqbench.models.create knows it, when not ``name`` (a variant of a model's switches)
    default: bool = True  # timed when ``--models`` is not given

    @property
    def model_name(self) -> str:
        return self.model or self.name


BENCH_MODELS: dict[str, BenchModel] = {}


def register(entry: BenchModel) -> BenchModel:
    BENCH_MODELS[entry.name] = entry
    return entry


register(BenchModel("schnet", dict(n_features=128, n_interactions=6, n_rbf=50, cutoff=5.0),
                    peers=("schnetpack", "pyg"), note="F = 128, 6 interactions, 50 Gaussians, 5 Å"))
register(BenchModel("painn", dict(n_features=128, n_interactions=3, n_rbf=20, cutoff=5.0),
                    peers=("schnetpack",), note="F = 128, 3 interactions, 20 sinc RBF, 5 Å (PaiNN's QM9 model)"))
register(BenchModel("dimenet++", {}, peers=("pyg",), note="the model's defaults (DimeNet++ paper)"))
register(BenchModel("l1net", {}, note="the model's defaults"))
register(BenchModel("so3krates", dict(n_features=132, n_interactions=3, degrees=[1, 2, 3], n_heads=4, n_rbf=32,
                                      cutoff=5.0, nonlocal_corrections=False), peers=("so3krates-torch",),
                    note="F = 132, 3 layers, degrees {1, 2, 3}, 4 heads, 32 RBF, 5 Å, local (so3krates-torch has no "
                         "non-local term)"))
# The cost of Eq. 14 against molecule size: time both So3krates entries on --scaling structures (all atom
# pairs of a molecule grow as n², the local neighbourhoods do not).
register(BenchModel("so3krates-nonlocal", {**BENCH_MODELS["so3krates"].kwargs, "nonlocal_corrections": True},
                    model="so3krates", default=False,
                    note="the so3krates entry with non-local corrections (Eq. 14); no peer has them"))

DEFAULT_MODELS = tuple(name for name, entry in BENCH_MODELS.items() if entry.default)


def known_to_eqbench(name: str) -> str | None:
    """None if ``eqbench.models.create`` knows the entry's model, else the reason it is skipped."""
    from eqbench.models import MODELS

    model = BENCH_MODELS[name].model_name
    if model.lower() in MODELS:
        return None
    return f"eqbench.models.create does not know {model!r} yet (models: {', '.join(sorted(MODELS))})"
