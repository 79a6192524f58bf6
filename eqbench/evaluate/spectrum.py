"""Infrared spectra from the dipole time series of an MD run (PaiNN §5.4): ``eqbench spectrum ir TRAJ``.

The classical IR line shape is the Fourier transform of the autocorrelation of the dipole derivative,

    I(ν̃) ∝ ∫ w(τ) ⟨μ̇(0) · μ̇(τ)⟩ cos(2π c ν̃ τ) dτ,

computed here as: μ̇ by central differences of μ(t); the autocorrelation C(τ) averaged over all time
origins (FFT, zero-padded, normalised by the number of overlapping pairs) up to a maximum lag; a window
w(τ) (Hann by default) that takes C smoothly to zero at that lag; the cosine transform by a zero-padded
real FFT; wavenumbers ν̃ = f / c. With ``quantum_correction="harmonic"`` the classical intensity is
multiplied by the harmonic factor βħω / (1 − e^(−βħω)) at the given temperature. Intensities are
normalised to a maximum of 1 in the written range.

Input: an extended XYZ or ASE trajectory whose frames carry a dipole (``eqbench md`` writes one when the
run has a dipole head), equally spaced in time (``info["time_fs"]``, or ``--timestep``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from eqbench.errors import ConfigError, DataError

SPEED_OF_LIGHT_CM_PER_FS = 2.99792458e-5
HBAR_EV_FS = 0.6582119569  # ħ in eV·fs
KB_EV_PER_K = 8.617333262e-5


def autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """C(τ) = ⟨x(t) · x(t+τ)⟩_t for τ = 0…max_lag−1, averaged over the N − τ time origins ([T] or [T, d])."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = len(x)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(x, n=size, axis=0)
    acf = np.fft.irfft(spectrum * spectrum.conj(), n=size, axis=0)[:max_lag].sum(axis=1)
    return acf / (n - np.arange(max_lag))


def window(name: str, n: int) -> np.ndarray:
    """One-sided window of length n, 1 at τ = 0 and → 0 at τ = n."""
    t = np.arange(n) / n
    if name == "hann":
        return np.cos(0.5 * np.pi * t) ** 2
    if name == "blackman":
        return 0.42 + 0.5 * np.cos(np.pi * t) + 0.08 * np.cos(2 * np.pi * t)
    if name == "none":
        return np.ones(n)
    raise ConfigError(f"window must be 'hann', 'blackman' or 'none', not {name!r}")


def ir_spectrum(dipoles: np.ndarray, timestep_fs: float, max_lag_fs: float | None = None, window_name: str = "hann",
                quantum_correction: str | None = None, temperature_K: float = 300.0, max_wavenumber: float = 4000.0,
                padding: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(wavenumbers in cm⁻¹, normalised intensities) from dipoles [T, 3] sampled every ``timestep_fs``."""
    mu = np.asarray(dipoles, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[1] != 3 or len(mu) < 8:
        raise DataError(f"need a dipole time series of shape [T ≥ 8, 3], got {mu.shape}")
    if not np.all(np.isfinite(mu)):
        raise DataError("the dipole time series has non-finite values")
    if timestep_fs <= 0:
        raise ConfigError(f"timestep must be positive, got {timestep_fs} fs")
    mu_dot = np.gradient(mu, timestep_fs, axis=0)
    max_lag = len(mu) // 2 if max_lag_fs is None else int(round(max_lag_fs / timestep_fs))
    if not 2 <= max_lag <= len(mu) - 1:
        raise ConfigError(f"max lag {max_lag_fs} fs is not between 2 steps and the trajectory's length "
                          f"({len(mu) * timestep_fs:g} fs)")
    c = autocorrelation(mu_dot, max_lag) * window(window_name, max_lag)
    size = padding * (1 << int(np.ceil(np.log2(2 * max_lag))))
    # Cosine transform of the even extension: C(0) + 2 Σ_{τ>0} C(τ) cos(ωτ) = 2 Re FFT(C) − C(0).
    intensity = 2.0 * np.fft.rfft(c, n=size).real - c[0]
    wavenumber = np.fft.rfftfreq(size, d=timestep_fs) / SPEED_OF_LIGHT_CM_PER_FS
    if quantum_correction == "harmonic":
        omega = 2 * np.pi * wavenumber * SPEED_OF_LIGHT_CM_PER_FS  # rad/fs
        x = HBAR_EV_FS * omega / (KB_EV_PER_K * temperature_K)
        factor = np.ones_like(x)
        factor[1:] = x[1:] / -np.expm1(-x[1:])
        intensity = intensity * factor
    elif quantum_correction not in (None, "none"):
        raise ConfigError(f"quantum correction must be 'harmonic' or none, not {quantum_correction!r}")
    keep = wavenumber <= max_wavenumber
    wavenumber, intensity = wavenumber[keep], intensity[keep]
    peak = np.max(np.abs(intensity))
    return wavenumber, intensity / peak if peak > 0 else intensity


def find_peaks(wavenumber: np.ndarray, intensity: np.ndarray, threshold: float = 0.05, n: int = 20) -> list[float]:
    """Wavenumbers of local maxima above ``threshold`` (relative to the maximum), strongest first."""
    i = np.flatnonzero((intensity[1:-1] > intensity[:-2]) & (intensity[1:-1] >= intensity[2:])) + 1
    i = i[intensity[i] >= threshold * intensity.max()]
    i = i[np.argsort(-intensity[i])][:n]
    return [float(wavenumber[k]) for k in i]


def read_dipoles(path: str | Path, timestep_fs: float | None = None) -> tuple[np.ndarray, float]:
    """(dipoles [T, 3], timestep in fs) of a trajectory file."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise DataError(f"trajectory {path} not found")
    try:
        frames = read(str(path), index=":")
    except (ValueError, KeyError, OSError) as err:
        raise DataError(f"{path}: cannot read a trajectory ({err})") from err
    dipoles, times = [], []
    for i, atoms in enumerate(frames):
        mu = atoms.calc.results.get("dipole") if atoms.calc is not None else None
        if mu is None:
            mu = atoms.info.get("dipole")
        if mu is None:
            raise DataError(f"{path}: frame {i} has no dipole; run `eqbench md` with a run that has a dipole head")
        dipoles.append(np.asarray(mu, dtype=np.float64).reshape(3))
        times.append(atoms.info.get("time_fs"))
    if timestep_fs is None:
        if any(t is None for t in times):
            raise ConfigError(f"{path}: frames carry no time_fs; pass --timestep (fs between frames)")
        steps = np.diff(np.asarray(times, dtype=np.float64))
        if len(steps) == 0 or not np.allclose(steps, steps[0], rtol=1e-6):
            raise DataError(f"{path}: frames are not equally spaced in time_fs; write every N-th step of one run")
        timestep_fs = float(steps[0])
    return np.array(dipoles), timestep_fs


def write_spectrum(wavenumber: np.ndarray, intensity: np.ndarray, path: str | Path, title: str = "",
                   peaks: list[float] | None = None) -> tuple[Path, Path]:
    """``path`` (.csv: wavenumber_cm-1, intensity) and a plot beside it (.png)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    np.savetxt(tmp, np.column_stack([wavenumber, intensity]), delimiter=",", fmt="%.6g",
               header="wavenumber_cm-1,intensity", comments="")
    os.replace(tmp, path)
    fig = Figure(figsize=(7, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(wavenumber, intensity, lw=1)
    for p in peaks or []:
        ax.axvline(p, color="0.8", lw=0.6, zorder=0)
    ax.set_xlabel("wavenumber (cm$^{-1}$)")
    ax.set_ylabel("IR intensity (normalised)")
    ax.set_xlim(float(wavenumber[0]), float(wavenumber[-1]))
    ax.set_title(title, fontsize=9)
    png = path.with_suffix(".png")
    tmp_png = png.with_name(f".{png.stem}.tmp.png")
    fig.savefig(tmp_png, dpi=120)
    os.replace(tmp_png, png)
    return path, png


MAX_PEAK_SHIFT = 100.0  # cm⁻¹: a reference peak with no peak this close in the other spectrum is unmatched


def compare_spectra(reference: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray],
                    threshold: float = 0.05, max_shift: float = MAX_PEAK_SHIFT) -> dict:
    """How closely ``other`` reproduces ``reference`` (each ``(wavenumber, intensity)``).

    ``overlap``: cosine similarity of the two intensity curves on the reference's grid (1 = the same shape).
    ``matches``: for each reference peak (low to high) the nearest peak of ``other`` within ``max_shift``
    cm⁻¹, or None; ``mean_abs_shift``: the mean |shift| of the matched peaks (cm⁻¹).
    """
    wavenumber, intensity = reference
    resampled = np.interp(wavenumber, *other)
    norm = float(np.linalg.norm(intensity) * np.linalg.norm(resampled))
    overlap = float(intensity @ resampled) / norm if norm > 0 else 0.0
    theirs = np.array(find_peaks(*other, threshold=threshold))
    matches = []
    for p in sorted(find_peaks(wavenumber, intensity, threshold)):
        nearest = float(theirs[np.argmin(np.abs(theirs - p))]) if len(theirs) else None
        matches.append((p, nearest if nearest is not None and abs(nearest - p) <= max_shift else None))
    shifts = [q - p for p, q in matches if q is not None]
    return {"overlap": overlap, "matches": matches,
            "mean_abs_shift": float(np.mean(np.abs(shifts))) if shifts else None}


def write_comparison(spectra: dict[str, tuple[np.ndarray, np.ndarray]], directory: str | Path,
                     threshold: float = 0.05) -> tuple[Path, Path]:
    """Several spectra on one plot (``ir.png``) and their peak positions in a table (``peaks.md``), with the
    agreement of each spectrum with the first (the reference) by :func:`compare_spectra`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    lines = ["| spectrum | peaks (cm⁻¹, low to high; relative intensity) |", "| --- | --- |"]
    for label, (wavenumber, intensity) in spectra.items():
        ax.plot(wavenumber, intensity, lw=1, label=label)
        peaks = sorted(find_peaks(wavenumber, intensity, threshold))
        cells = [f"{p:.0f} ({float(np.interp(p, wavenumber, intensity)):.2f})" for p in peaks]
        lines.append(f"| {label} | {', '.join(cells)} |")
    (reference_label, reference), *others = spectra.items()
    if others:
        lines += ["", f"Agreement with {reference_label}: overlap = cosine similarity of the spectra (1 = the same "
                  f"shape); each {reference_label} peak with the nearest peak within {MAX_PEAK_SHIFT:g} cm⁻¹ "
                  f"(— when none).",
                  "",
                  "| spectrum | overlap | matched peaks | mean \\|shift\\| (cm⁻¹) | peaks (reference → this) |",
                  "| --- | --- | --- | --- | --- |"]
    for label, spectrum in others:
        c = compare_spectra(reference, spectrum, threshold)
        pairs = ", ".join(f"{p:.0f} → {q:.0f}" if q is not None else f"{p:.0f} → —" for p, q in c["matches"])
        n_matched = sum(q is not None for _, q in c["matches"])
        shift = "—" if c["mean_abs_shift"] is None else f"{c['mean_abs_shift']:.0f}"
        lines.append(f"| {label} | {c['overlap']:.3f} | {n_matched} of {len(c['matches'])} | {shift} | {pairs} |")
    ax.set_xlabel("wavenumber (cm$^{-1}$)")
    ax.set_ylabel("IR intensity (normalised)")
    ax.legend(fontsize=8)
    png, table = directory / "ir.png", directory / "peaks.md"
    tmp_png = directory / ".ir.tmp.png"
    fig.savefig(tmp_png, dpi=120)
    os.replace(tmp_png, png)
    tmp = directory / ".peaks.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, table)
    return png, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True)
    ir = kinds.add_parser("ir", help="IR spectrum from the dipoles of an MD trajectory (PaiNN §5.4)")
    ir.add_argument("traj", nargs="+", help="trajectory with dipoles (extxyz or .traj, e.g. from `eqbench md`); "
                                            "several: their spectra on one plot with a table of peaks")
    ir.add_argument("--out", default=None, help="one trajectory: spectrum file (.csv; a .png plot beside it), default "
                                                "<traj stem>_ir.csv next to it; several: a directory (default ir/ "
                                                "next to the first) for <label>.csv, ir.png and peaks.md")
    ir.add_argument("--labels", nargs="*", default=None, help="names of the trajectories' spectra (default: "
                                                              "file stems)")
    ir.add_argument("--timestep", type=float, default=None, help="fs between frames (default: from time_fs)")
    ir.add_argument("--skip", type=float, default=0.0, help="fs of equilibration to drop at the start")
    ir.add_argument("--max-lag", type=float, default=None, help="longest correlation time in fs (default: half "
                                                                "the trajectory)")
    ir.add_argument("--window", choices=["hann", "blackman", "none"], default="hann")
    ir.add_argument("--quantum-correction", choices=["none", "harmonic"], default="none")
    ir.add_argument("--temperature", type=float, default=300.0, help="K, for the quantum correction")
    ir.add_argument("--max-wavenumber", type=float, default=4000.0, help="cm⁻¹ (default 4000)")


def run(args: argparse.Namespace) -> int:
    labels = args.labels or [Path(t).stem for t in args.traj]
    if len(labels) != len(args.traj) or len(set(labels)) != len(labels):
        raise ConfigError(f"--labels needs one distinct name per trajectory ({len(args.traj)}), got {labels}")
    spectra = {}
    for label, traj in zip(labels, args.traj):
        dipoles, dt = read_dipoles(traj, args.timestep)
        skip = int(round(args.skip / dt))
        if skip >= len(dipoles) - 8:
            raise ConfigError(f"{traj}: --skip {args.skip} fs leaves fewer than 8 frames of {len(dipoles)}")
        spectra[label] = ir_spectrum(dipoles[skip:], dt, args.max_lag, args.window, args.quantum_correction,
                                     args.temperature, args.max_wavenumber)
        print(f"{label}: {len(dipoles) - skip} frames, {dt:g} fs apart; peaks (cm⁻¹, strongest first): "
              + ", ".join(f"{p:.0f}" for p in find_peaks(*spectra[label])[:10]))
    first = Path(args.traj[0])
    if len(spectra) == 1:
        out = Path(args.out) if args.out else first.with_name(f"{first.stem}_ir.csv")
        wavenumber, intensity = spectra[labels[0]]
        csv_path, png = write_spectrum(wavenumber, intensity, out, title=f"IR spectrum of {first.name}",
                                       peaks=find_peaks(wavenumber, intensity))
        print(f"wrote {csv_path} and {png}")
        return 0
    directory = Path(args.out) if args.out else first.parent / "ir"
    for label, (wavenumber, intensity) in spectra.items():
        write_spectrum(wavenumber, intensity, directory / f"{label}.csv", title=label,
                       peaks=find_peaks(wavenumber, intensity))
    png, table = write_comparison(spectra, directory)
    print(f"wrote {png}, {table} and one .csv/.png per spectrum in {directory}")
    return 0
