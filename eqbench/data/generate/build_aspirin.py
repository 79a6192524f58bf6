"""Build the shipped aspirin geometry: a Z-matrix relaxed with GFN2-xTB.

``python -m eqbench.data.generate.build_aspirin`` rewrites ``molecules/aspirin.xyz``. The
Z-matrix is an ordinary aspirin (2-acetoxybenzoic acid) conformer: planar ring and carboxylic
acid, acetyl ester turned out of the ring plane as in the crystal structure; BFGS takes it to
the nearest GFN2-xTB minimum. MD (:mod:`eqbench.data.generate.md`) starts from this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from eqbench.errors import GenerationError

ASPIRIN_XYZ = Path(__file__).with_name("molecules") / "aspirin.xyz"

# symbol, bonded-to, distance (Å), angle-to, angle (deg), dihedral-to, dihedral (deg); 1-based rows
ZMATRIX = """\
C
C 1 1.39
C 2 1.39 1 120
C 3 1.39 2 120 1 0
C 4 1.39 3 120 2 0
C 5 1.39 4 120 3 0
C 1 1.48 2 120 3 180
O 7 1.21 1 123 2 180
O 7 1.34 1 113 2 0
H 9 0.97 7 107 1 180
O 2 1.40 1 120 7 0
C 11 1.36 2 118 1 -90
O 12 1.20 11 123 2 0
C 12 1.50 11 111 2 180
H 14 1.09 12 109.5 11 180
H 14 1.09 12 109.5 11 60
H 14 1.09 12 109.5 11 -60
H 3 1.08 2 120 1 180
H 4 1.08 3 120 2 180
H 5 1.08 4 120 3 180
H 6 1.08 5 120 4 180"""


def _bonds(atoms) -> set[tuple[int, int]]:
    from ase.neighborlist import NeighborList, natural_cutoffs

    nl = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=False)
    nl.update(atoms)
    return {(i, int(j)) for i in range(len(atoms)) for j in nl.get_neighbors(i)[0]}


def build_aspirin(settings=None):
    """Aspirin from the Z-matrix, relaxed with GFN2-xTB; checks that no bond broke or formed."""
    from ase.io.zmatrix import parse_zmatrix

    from eqbench.data.generate.engine import XTBSettings, relax, tblite_context

    atoms = parse_zmatrix(ZMATRIX)
    bonds = _bonds(atoms)
    with tblite_context():
        relax(atoms, settings or XTBSettings(), fmax=1e-3)
    if _bonds(atoms) != bonds:
        raise GenerationError("aspirin changed its bonding during relaxation; fix the Z-matrix")
    atoms.positions -= atoms.get_center_of_mass()
    return atoms


def main() -> None:
    from ase.io import write

    from eqbench.data.generate.engine import XTBSettings, tblite_version, to_kcal_mol

    settings = XTBSettings()
    atoms = build_aspirin(settings)
    energy = float(to_kcal_mol(atoms.get_potential_energy()))
    atoms.info = {"comment": f"aspirin C9H8O4, GFN2-xTB minimum (tblite {tblite_version()}, fmax 1e-3 eV/A), "
                             f"E = {energy:.6f} kcal/mol; made by python -m eqbench.data.generate.build_aspirin"}
    atoms.calc = None
    write(ASPIRIN_XYZ, atoms, format="xyz", comment=atoms.info["comment"])
    np.set_printoptions(suppress=True)
    print(f"wrote {ASPIRIN_XYZ} ({len(atoms)} atoms, E = {energy:.3f} kcal/mol)", file=sys.stderr)


if __name__ == "__main__":
    main()
