"""A synthetic QM9 tarball in the exact published format, for timing the parser.

The 12 real xyz files of ../shared/data/qm9 are replicated to N molecules: each copy keeps every
line of its original except the atom coordinates (perturbed by a few hundredths of an Å, so that
bz2 cannot compress copies away) and its index (renumbered 1..N in line 2 and the file name).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

SHARED_QM9 = Path(__file__).resolve().parents[2] / "shared" / "data" / "qm9"


def real_files(directory: Path = SHARED_QM9) -> list[str]:
    return [p.read_text() for p in sorted(directory.glob("dsgdb9nsd_*.xyz"))]


def renumbered(text: str, index: int, rng: np.random.Generator) -> str:
    lines = text.split("\n")
    n = int(lines[0])
    head = lines[1].split("\t")
    head[0] = f"gdb {index}"
    lines[1] = "\t".join(head)
    for k in range(2, 2 + n):
        fields = lines[k].split("\t")
        xyz = np.array([float(v) for v in fields[1:4]]) + rng.normal(scale=0.02, size=3)
        lines[k] = "\t".join([fields[0], *(f"{v: .10f}" for v in xyz), fields[4]])
    return "\n".join(lines)


def write_synthetic_tarball(path: Path, n: int, seed: int = 0, directory: Path = SHARED_QM9) -> int:
    """Write ``n`` molecules to ``path`` (tar.bz2); returns the uncompressed bytes of xyz text."""
    originals = real_files(directory)
    rng = np.random.default_rng(seed)
    total = 0
    with tarfile.open(path, mode="w:bz2") as tar:
        for k in range(n):
            data = renumbered(originals[k % len(originals)], k + 1, rng).encode()
            info = tarfile.TarInfo(f"dsgdb9nsd_{k + 1:06d}.xyz")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            total += len(data)
    return total
