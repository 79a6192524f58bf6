"""ASE calculator for trained eqbench runs.

    from eqbench.ase import Calculator
    atoms.calc = Calculator("runs/painn-ethanol", dtype="float64")
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_dipole_moment()

:class:`Calculator` loads a run directory (``config.yaml`` + ``checkpoints/{best,last}.ckpt``, weights
loaded with ``weights_only=True``) or one of its ``.ckpt`` files. It returns what ASE expects: energies in
eV, forces in eV/Å (−∂E/∂r of the model's energy), the dipole moment in e·Å and the polarizability in Å³,
converted from the units the run's data recorded (``run.json``; kcal/mol for the rotor and MD17 sets).
Dipole and polarizability are available when the run has those heads. :meth:`Calculator.evaluate`
predicts a list of structures in batches.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import ase.units
import numpy as np
import torch
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes
from ase.data import chemical_symbols

from eqbench.batch import Batch
from eqbench.errors import ConfigError, DataError, ModelError
from eqbench.heads import DipoleMoment, Energy, Polarizability

_ENERGY = {"eV": 1.0, "meV": 1e-3, "kcal/mol": ase.units.kcal / ase.units.mol,
           "kJ/mol": ase.units.kJ / ase.units.mol, "Hartree": ase.units.Hartree, "Ha": ase.units.Hartree,
           "hartree": ase.units.Hartree}
_DIPOLE = {"eÅ": 1.0, "e*Å": 1.0, "e·Å": 1.0, "e*Ang": 1.0, "D": ase.units.Debye, "Debye": ase.units.Debye,
           "e*Bohr": ase.units.Bohr, "e*a0": ase.units.Bohr, "ea0": ase.units.Bohr, "a.u.": ase.units.Bohr,
           "au": ase.units.Bohr}
_POLARIZABILITY = {"Å^3": 1.0, "Å³": 1.0, "Ang^3": 1.0, "a0^3": ase.units.Bohr**3, "Bohr^3": ase.units.Bohr**3,
                   "a.u.": ase.units.Bohr**3, "au": ase.units.Bohr**3}
_TABLES = {"energy": (_ENERGY, "eV"), "dipole": (_DIPOLE, "e·Å"), "polarizability": (_POLARIZABILITY, "Å³")}


def unit_factor(kind: str, unit: str | None, target: str, where: str) -> float:
    """Factor from ``unit`` to ASE's unit for a ``kind`` of quantity (energy, dipole, polarizability)."""
    table, ase_unit = _TABLES[kind]
    if not unit:
        raise ConfigError(f"{where} records no unit for {target!r}; pass units={{{target!r}: ...}} to the "
                          f"calculator (one of {sorted(table)})")
    if unit not in table:
        raise ConfigError(f"{where}: unit {unit!r} of {target!r} is not known; pass units={{{target!r}: ...}} with "
                          f"one of {sorted(table)} (converted to {ase_unit})")
    return table[unit]


def resolve_run(path: str | Path) -> tuple[Path, str]:
    """(run directory, checkpoint) of a run directory or of a ``.ckpt`` file inside one."""
    path = Path(path)
    if path.is_dir():
        return path, "best"
    if path.is_file() and path.suffix == ".ckpt":
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"checkpoint {path}: no config.yaml in {run_dir}; keep checkpoints inside their run "
                              f"directory (RUN/checkpoints/NAME.ckpt) so the model can be rebuilt")
        return run_dir, str(path)
    raise ConfigError(f"{path} is neither a run directory nor a .ckpt file; pass a directory written by "
                      f"`eqbench fit` or a checkpoint inside one")


class Calculator(_AseCalculator):
    """An eqbench model as an ASE calculator (energy, forces; dipole and polarizability with those heads).

    Args:
        run: run directory, a ``.ckpt`` inside one, or an ``AtomisticModel`` (then ``units`` is required).
        checkpoint: ``best`` (EMA weights when EMA was on) or ``last``, for a run directory.
        device: torch device to evaluate on (``cpu``, ``cuda``, ``cuda:1``).
        dtype: ``float32`` (as trained) or ``float64`` (for energy conservation in MD and finite differences).
        units: units of the model's outputs by target name (``{"energy": "kcal/mol", "dipole": "D"}``),
            overriding the run's record.
        batch_size: structures per forward pass in :meth:`evaluate`.
    """

    implemented_properties = ["energy", "free_energy", "forces", "dipole", "polarizability"]  # per instance below

    def __init__(self, run, checkpoint: str = "best", device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "float32", units: dict[str, str] | None = None, batch_size: int = 32,
                 **kwargs):
        super().__init__(**kwargs)
        dtypes = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32,
                  torch.float64: torch.float64}
        if dtype not in dtypes:
            raise ConfigError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
        self.dtype, self.device, self.batch_size = dtypes[dtype], torch.device(device), batch_size
        recorded: dict = {}
        self.elements: set[int] | None = None
        if isinstance(run, torch.nn.Module):
            model, where = run, "the model given"
        else:
            from eqbench.tracking import load_task

            run_dir, ckpt = resolve_run(run)
            ckpt = checkpoint if ckpt == "best" else ckpt
            model, where = load_task(run_dir, ckpt).model, f"run {run_dir}"
            run_json = run_dir / "run.json"
            if run_json.is_file():
                data = json.loads(run_json.read_text()).get("data") or {}
                recorded = dict(data.get("units") or {})
                if data.get("elements"):
                    self.elements = {int(z) for z in data["elements"]}
        units = {**recorded, **(units or {})}
        self.where = where
        # float32 keeps the heads' float64 standardisation buffers; float64 converts everything.
        model = model.to(self.device) if self.dtype == torch.float32 else model.to(self.device, self.dtype)
        self.model = model.eval()
        if where != "the model given":  # a loaded model is ours: no weight gradients needed for forces
            for p in self.model.parameters():
                p.requires_grad_(False)

        energy_heads = [h for h in self.model.heads if isinstance(h, Energy)]
        if not energy_heads:
            names = [getattr(h, "output", type(h).__name__) for h in self.model.heads]
            raise ModelError(f"{where} has no energy head (outputs {names}); an ASE calculator needs a model "
                             f"trained on energy (targets: energy, forces)")
        energy_head = energy_heads[0]
        energy_head.forces = True  # forces are exact gradients even when the run trained on energies only
        self.outputs = {"energy": (energy_head.output,
                                   unit_factor("energy", units.get(energy_head.output), energy_head.output, where))}
        # Forces are −∂E/∂r with r in Å: their unit is the energy unit per Å, whatever the data called it.
        self.outputs["forces"] = ("forces", self.outputs["energy"][1])
        for head in self.model.heads:
            if isinstance(head, DipoleMoment) and type(head) is DipoleMoment and "dipole" not in self.outputs:
                self.outputs["dipole"] = (head.output, unit_factor("dipole", units.get(head.output), head.output,
                                                                   where))
            if isinstance(head, Polarizability) and "polarizability" not in self.outputs:
                self.outputs["polarizability"] = (head.output, unit_factor(
                    "polarizability", units.get(head.output), head.output, where))
        self.implemented_properties = [*self.outputs, "free_energy"]
        self.max_z = self.model.representation.embedding.num_embeddings - 1 \
            if hasattr(self.model.representation, "embedding") else None

    @property
    def properties(self) -> list[str]:
        """What this calculator computes: energy, forces, and dipole/polarizability with those heads."""
        return list(self.outputs)

    # ------------------------------------------------------------------ input checks
    def _check(self, atoms, index: int) -> None:
        if len(atoms) == 0:
            raise DataError(f"structure {index} has no atoms")
        if np.any(atoms.pbc) and not self.model.representation.supports_periodic:
            raise ConfigError(f"structure {index} is periodic (pbc={atoms.pbc.tolist()}), which "
                              f"{type(self.model.representation).__name__} does not handle: set atoms.pbc = False "
                              f"or use a run of a periodic-capable model (SchNet, PaiNN)")
        pos = atoms.positions
        if not np.all(np.isfinite(pos)):
            raise DataError(f"structure {index} has non-finite coordinates")
        for z in sorted(set(int(z) for z in atoms.numbers)):
            unseen = self.elements is not None and z not in self.elements
            if (self.max_z is not None and z > self.max_z) or unseen:
                known = ", ".join(chemical_symbols[e] for e in sorted(self.elements or []))
                raise ModelError(f"structure {index} contains {chemical_symbols[z]} (Z={z}), which {self.where} "
                                 f"was not trained on (elements: {known or f'Z ≤ {self.max_z}'}); its predictions "
                                 f"would be meaningless")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, atoms_list, batch_size: int | None = None) -> list[dict[str, np.ndarray | float]]:
        """Predictions for each structure (ASE units): ``energy`` [eV], ``forces`` [n, 3] eV/Å, and
        ``dipole`` [3] e·Å / ``polarizability`` [3, 3] Å³ when the run has those heads."""
        atoms_list = list(atoms_list)
        for i, atoms in enumerate(atoms_list):
            self._check(atoms, i)
        batch_size = batch_size or self.batch_size
        results: list[dict] = []
        for start in range(0, len(atoms_list), batch_size):
            chunk = atoms_list[start:start + batch_size]
            results.extend(self._predict(chunk))
        return results

    def _predict(self, atoms_list) -> list[dict]:
        batch = Batch.from_atoms(atoms_list)
        # Positions in the calculator's dtype straight from ASE's float64 (from_atoms uses the default dtype).
        pos = np.concatenate([np.asarray(a.positions, dtype=np.float64) for a in atoms_list])
        batch = replace(batch, pos=torch.as_tensor(pos, dtype=self.dtype))
        charges = torch.tensor([float(a.get_initial_charges().sum()) for a in atoms_list])
        if bool(charges.abs().gt(0).any()):
            batch.targets["total_charge"] = charges
        batch = batch.to(self.device, self.dtype)
        out = self.model(batch)
        results = [{} for _ in atoms_list]
        ptr = batch.ptr.tolist()
        for prop, (key, factor) in self.outputs.items():
            value = out[key].detach().to("cpu", torch.float64).numpy() * factor
            for m, res in enumerate(results):
                res[prop] = value[ptr[m]:ptr[m + 1]] if prop == "forces" else value[m]
        for res in results:
            res["energy"] = float(res["energy"])
            res["free_energy"] = res["energy"]
        return results

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = self.evaluate([self.atoms])[0]
