"""GFN2-xTB through tblite: the settings that change results, single points with retries, relaxation.

Every label of a generated set comes from :func:`single_point`, a *fresh* tblite calculation
(SAD initial guess, no wavefunction carried over from the previous geometry). A label then
depends only on the geometry and :class:`XTBSettings`, not on which process computed it, in
what order, or whether the run was resumed — which is what makes generation deterministic
for a seed whatever the number of workers. A fresh start costs no more than a restart here
(≈10 ms for ferrocene either way, measured).

A non-converged SCF is retried with more iterations and stronger mixer damping
(:data:`SCF_RETRIES`). Those change only the path the SCF takes, not the solution it
converges to (to the tolerance set by ``accuracy``), so a retried label is the same label.

Units: tblite's ASE calculator returns eV and eV/Å; datasets store kcal/mol and kcal/mol/Å
(as MD17), converted once where a dataset is built (:func:`to_kcal_mol`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import asdict, dataclass, replace
from importlib import metadata

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import CalculationFailed, Calculator, InputError, all_changes

from eqbench.errors import GenerationError

ENERGY_UNIT = "kcal/mol"
FORCE_UNIT = "kcal/mol/Å"

# Retry ladder: factors applied to the run's own max_iterations and mixer_damping.
SCF_RETRIES: tuple[dict[str, float], ...] = (
    {"max_iterations": 4, "mixer_damping": 0.5},
    {"max_iterations": 8, "mixer_damping": 0.25},
)


@dataclass(frozen=True)
class XTBSettings:
    """Every tblite setting that changes a result; all recorded in each file's metadata.

    ``electronic_temperature`` matters more than one might think: the C9H4 rigid-scan barrier
    is 19.5 kcal/mol at 300 K and 7.2 kcal/mol at 3000 K (Fermi smearing of the frontier
    orbitals, measured with ``generate_cumulene_profile``). The defaults are tblite's.
    """

    method: str = "GFN2-xTB"
    accuracy: float = 1.0
    electronic_temperature: float = 300.0  # K
    max_iterations: int = 250
    charge: int = 0
    multiplicity: int = 1  # 2S+1; 1 = closed shell (ferrocene is low-spin Fe(II), cumulenes are singlets)
    mixer_damping: float = 0.4

    def retry(self, attempt: int) -> XTBSettings:
        """Settings of retry ``attempt`` (1, 2, ...), from :data:`SCF_RETRIES`."""
        factors = SCF_RETRIES[attempt - 1]
        return replace(self, max_iterations=int(self.max_iterations * factors["max_iterations"]),
                       mixer_damping=self.mixer_damping * factors["mixer_damping"])

    def calculator(self):
        """A new tblite ASE calculator with these settings (quiet, no state kept between geometries)."""
        TBLite = require_tblite()
        return TBLite(method=self.method, accuracy=self.accuracy, electronic_temperature=self.electronic_temperature,
                      max_iterations=self.max_iterations, charge=self.charge, multiplicity=self.multiplicity,
                      mixer_damping=self.mixer_damping, verbosity=0, cache_api=False)

    def metadata(self) -> dict:
        return {
            **asdict(self),
            "electronic_temperature_unit": "K",
            "initial_guess": "sad, fresh for every geometry",
            "mixer": "broyden",
            "engine": "tblite",
            "tblite_version": tblite_version(),
            "ase_version": _version("ase"),
            "ev_per_kcal_mol": ev_per_kcal_mol(),
            "scf_retries": [asdict(self.retry(k)) for k in range(1, len(SCF_RETRIES) + 1)],
        }


DEFAULT_SETTINGS = XTBSettings()  # frozen, so safe as a default argument


def require_tblite():
    """tblite's ASE calculator class, or a GenerationError saying how to install it."""
    try:
        from tblite.ase import TBLite
    except ImportError as err:
        raise GenerationError(f"GFN2-xTB data generation needs tblite ({err}); install it with "
                              f"`pip install 'eqbench[xtb]'`") from err
    return TBLite


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def tblite_version() -> str:
    return _version("tblite")


class SCFNotConverged(GenerationError):
    """The SCF failed with the given settings and every retry."""

    def __init__(self, message: str, errors: list[str] | None = None):
        super().__init__(message)
        self.errors = errors or [message]


@dataclass
class Label:
    energy: float  # eV
    forces: np.ndarray  # [N, 3] eV/Å
    retries: int  # 0 when the first attempt converged
    dipole: np.ndarray | None = None  # [3] e·Å, from the same SCF (tblite's Mulliken charges and atomic dipoles)


def single_point(numbers: np.ndarray, positions: np.ndarray, settings: XTBSettings) -> Label:
    """Energy and forces of one geometry from a fresh calculation, retried on SCF failure."""
    errors = []
    for attempt in range(len(SCF_RETRIES) + 1):
        current = settings if attempt == 0 else settings.retry(attempt)
        atoms = Atoms(numbers=numbers, positions=positions)
        atoms.calc = current.calculator()
        try:
            energy = atoms.get_potential_energy()
            forces = atoms.get_forces()
            dipole = atoms.get_dipole_moment()  # computed with the energy: no second SCF
        except InputError as err:  # bad input (e.g. an element GFN2-xTB lacks): retrying cannot help
            raise GenerationError(f"tblite rejected the structure ({err}); check elements, charge and "
                                  f"multiplicity") from err
        except CalculationFailed as err:  # tblite's TBLiteRuntimeError, wrapped by its ASE calculator
            errors.append(f"max_iterations={current.max_iterations}, mixer_damping={current.mixer_damping:g}: "
                          f"{err}")
            continue
        return Label(float(energy), np.array(forces), attempt, np.array(dipole, dtype=np.float64))
    raise SCFNotConverged("SCF did not converge: " + "; ".join(errors), errors)


def ev_per_kcal_mol() -> float:
    """ASE's conversion factor (CODATA 2014); recorded in each file's metadata."""
    return units.kcal / units.mol


def to_debye(values_e_angstrom):
    """e·Å → D (ASE's Debye)."""
    return np.asarray(values_e_angstrom, dtype=np.float64) / units.Debye


def to_kcal_mol(values_ev):
    """eV → kcal/mol (and eV/Å → kcal/mol/Å)."""
    return np.asarray(values_ev) / ev_per_kcal_mol()


class RetryingXTB(Calculator):
    """ASE calculator for relaxations and MD whose every call is :func:`single_point`.

    ``retries`` counts the SCF retries it needed, for the metadata.
    """

    implemented_properties = ["energy", "free_energy", "forces", "dipole"]

    def __init__(self, settings: XTBSettings):
        super().__init__()
        self.settings = settings
        self.retries = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        label = single_point(self.atoms.numbers, self.atoms.positions, self.settings)
        self.retries += label.retries
        self.results = {"energy": label.energy, "free_energy": label.energy, "forces": label.forces,
                        "dipole": label.dipole}


def make_ase_calculator(settings: XTBSettings) -> RetryingXTB:
    return RetryingXTB(settings)


def relax(atoms, settings: XTBSettings, fmax: float = 1e-3, steps: int = 2000):
    """Relax ``atoms`` in place with ASE's BFGS on GFN2-xTB; returns it. ``fmax`` in eV/Å."""
    from ase.optimize import BFGS

    atoms.calc = make_ase_calculator(settings)
    optimizer = BFGS(atoms, logfile=None)
    if not optimizer.run(fmax=fmax, steps=steps):
        raise GenerationError(f"relaxation of {atoms.get_chemical_formula()} did not reach fmax={fmax} eV/Å in "
                              f"{steps} steps; check the starting geometry")
    return atoms


def _loaded_openmp_runtimes() -> list:
    """ctypes handles of every OpenMP runtime loaded in this process (Linux: from /proc/self/maps)."""
    import ctypes

    try:
        maps = open("/proc/self/maps").read()
    except OSError:  # not Linux: rely on OMP_NUM_THREADS, set before tblite is loaded
        return []
    paths = {line.split()[-1] for line in maps.splitlines() if line.split()[-1:] and
             any(name in line.split()[-1] for name in ("libgomp", "libomp", "libiomp"))}
    handles = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "omp_set_num_threads") and hasattr(lib, "omp_get_max_threads"):
            handles.append(lib)
    return handles


@contextlib.contextmanager
def single_threaded_openmp():
    """Run tblite on one OpenMP thread.

    tblite sums parts of the gradient over OpenMP threads in no fixed order, so forces differ
    in the last bits between two identical calls (measured: 1e-16 eV/Å, grown to 1e-14 Å after
    40 MD steps). With one thread every label is bit-reproducible — the property resuming and
    worker-count independence rely on — and worker processes do not oversubscribe the cores.
    """
    saved_env = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # for a runtime that loads with tblite below
    require_tblite()
    runtimes = _loaded_openmp_runtimes()
    previous = [lib.omp_get_max_threads() for lib in runtimes]
    for lib in runtimes:
        lib.omp_set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(runtimes, previous):  # the caller's torch threads are its own business
            lib.omp_set_num_threads(n)
        if saved_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved_env


@contextlib.contextmanager
def tblite_context():
    """Where every tblite calculation runs: one OpenMP thread, its stdout out of the terminal."""
    with quiet_stdout(), single_threaded_openmp():
        yield


@contextlib.contextmanager
def quiet_stdout():
    """Send file descriptor 1 to /dev/null: tblite's Fortran output bypasses Python's sys.stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
