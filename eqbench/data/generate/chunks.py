"""Chunk files: the unit of work, of saving and of resuming a generation run.

A chunk holds structures ``start..stop-1`` of the run (minus SCF failures, which are listed in
its ``events``), as ragged arrays like the cache, plus an optional end ``state`` from which the
next chunk of the same chain continues (MD: positions, momenta and the thermostat's random
state). It is written to a temporary file and renamed, so a killed run leaves only whole chunks.
Imports numpy (and the engine) only: worker processes load this, not torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eqbench.data.generate.engine import Label, SCFNotConverged, XTBSettings, single_point, to_kcal_mol


@dataclass
class ChunkResult:
    numbers: list[np.ndarray] = field(default_factory=list)
    positions: list[np.ndarray] = field(default_factory=list)
    properties: dict[str, list] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)  # SCF retries and failures, JSON-able
    state: dict[str, np.ndarray] | None = None

    def add(self, numbers: np.ndarray, positions: np.ndarray, **props) -> None:
        self.numbers.append(np.asarray(numbers))
        self.positions.append(np.asarray(positions))
        for name, value in props.items():
            self.properties.setdefault(name, []).append(value)


def on_float32_grid(positions: np.ndarray) -> np.ndarray:
    """Positions rounded to float32 precision (~1e-6 Å), still as float64.

    The sampled sets are labelled at these rounded geometries, so labels are exact for what is
    stored, while the zeroed low mantissa bits let gzip halve the position arrays (bundled files
    must stay under 1.5 MB).
    """
    return np.asarray(positions, dtype=np.float32).astype(np.float64)


def record_label(result: ChunkResult, index: int, numbers: np.ndarray, positions: np.ndarray, label: Label,
                 **props) -> None:
    """Add one labelled structure; energy in kcal/mol (float64), forces in kcal/mol/Å (float32)."""
    if label.retries:
        result.events.append({"event": "scf_retry", "index": index, "retries": label.retries})
    result.add(numbers, positions, energy=float(to_kcal_mol(label.energy)),
               forces=to_kcal_mol(label.forces).astype(np.float32), sample_index=index, **props)


def label_into(result: ChunkResult, index: int, numbers: np.ndarray, positions: np.ndarray,
               settings: XTBSettings, **props) -> None:
    """Label one structure with GFN2-xTB and add it; an SCF failure (after retries) is recorded, not added."""
    try:
        label = single_point(numbers, positions, settings)
    except SCFNotConverged as err:
        result.events.append({"event": "scf_failure", "index": index, "errors": err.errors,
                              "positions": np.asarray(positions).round(6).tolist()})
        return
    record_label(result, index, numbers, positions, label, **props)


_REFERENCES: dict[tuple[str, int], dict[str, np.ndarray]] = {}


def reference_path(parts_dir: Path, name: str) -> Path:
    return parts_dir / f"reference-{name}.npz"


def load_reference(parts_dir: Path, name: str) -> dict[str, np.ndarray]:
    """Reference arrays of a run (relaxed geometry, normal modes), loaded once per worker process."""
    path = reference_path(parts_dir, name)
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _REFERENCES:
        with np.load(path, allow_pickle=False) as f:
            _REFERENCES[key] = {k: f[k] for k in f.files}
    return _REFERENCES[key]


def chunk_path(parts_dir: Path, chunk: int) -> Path:
    return parts_dir / f"chunk-{chunk:05d}.npz"


def save_chunk(parts_dir: Path, chunk: int, result: ChunkResult, per_atom: tuple[str, ...]) -> Path:
    path = chunk_path(parts_dir, chunk)
    arrays = {
        "z": np.concatenate(result.numbers) if result.numbers else np.zeros(0, np.int64),
        "pos": np.concatenate(result.positions) if result.positions else np.zeros((0, 3)),
        "n_atoms": np.array([len(z) for z in result.numbers], dtype=np.int64),
        "events": np.array(json.dumps(result.events)),
        "has_state": np.array(result.state is not None),
    }
    for name, values in result.properties.items():
        arrays["p:" + name] = np.concatenate(values) if name in per_atom else np.asarray(values)
    for name, value in (result.state or {}).items():
        arrays["s:" + name] = np.asarray(value)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def load_chunk(path: Path, per_atom: tuple[str, ...]) -> ChunkResult:
    with np.load(path, allow_pickle=False) as f:
        n_atoms = f["n_atoms"]
        bounds = np.concatenate([[0], np.cumsum(n_atoms)])
        split = lambda a: [a[bounds[i]:bounds[i + 1]] for i in range(len(n_atoms))]  # noqa: E731
        result = ChunkResult(numbers=split(f["z"]), positions=split(f["pos"]),
                             events=json.loads(str(f["events"])))
        for key in f.files:
            if key.startswith("p:"):
                name = key[2:]
                result.properties[name] = split(f[key]) if name in per_atom else list(f[key])
        if bool(f["has_state"]):
            result.state = {key[2:]: f[key] for key in f.files if key.startswith("s:")}
    return result
