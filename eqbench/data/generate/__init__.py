"""Reference-data generation with GFN2-xTB (tblite): the rotor benchmarks and MD sets.

The ferrocene (PaiNN §5.3.2) and cumulene (So3krates §4) sets were never published; these
generators regenerate them, plus MD17-style Langevin trajectories. Needs ``eqbench[xtb]``.

- :func:`generate_ferrocene`, :func:`generate_ferrocene_profile` (:mod:`.ferrocene`)
- :func:`generate_cumulene`, :func:`generate_cumulene_profile` (:mod:`.cumulene`)
- :func:`generate_md` (:mod:`.md`)

All write an eqbench HDF5 cache with energies in kcal/mol and forces in kcal/mol/Å, work in
resumable chunks under ``<out>.parts/`` (:mod:`.runner`), and are deterministic for a seed.
"""

from __future__ import annotations

_EXPORTS = {
    "generate_ferrocene": "ferrocene",
    "generate_ferrocene_profile": "ferrocene",
    "generate_cumulene": "cumulene",
    "generate_cumulene_profile": "cumulene",
    "generate_md": "md",
    "XTBSettings": "engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy: `import eqbench.data.generate` (e.g. for the CLI's --help) loads neither ASE nor tblite.
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
