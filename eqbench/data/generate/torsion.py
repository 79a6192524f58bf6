"""Rotor geometry: signed angles about an axis and rigid rotation of an atom group.

Both rotor benchmarks label a structure by a torsion about an axis through the molecule:
θ (ferrocene ring rotation, PaiNN §5.3.2) and φ (cumulene CH2 twist, So3krates §4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from eqbench.errors import GenerationError


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def signed_angle_about_axis(u: np.ndarray, v: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Angle (degrees, in (-180, 180]) from u to v, both projected onto the plane ⟂ ``axis``.

    Positive when turning u towards v is a right-handed rotation about ``axis``. Works on
    single vectors [3] or stacks [..., 3].
    """
    a = unit(axis)
    u_perp = u - np.sum(u * a, axis=-1, keepdims=True) * a
    v_perp = v - np.sum(v * a, axis=-1, keepdims=True) * a
    sin = np.sum(a * np.cross(u_perp, v_perp), axis=-1)
    cos = np.sum(u_perp * v_perp, axis=-1)
    return np.degrees(np.arctan2(sin, cos))


def rotation_matrix(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Right-handed rotation by ``angle_deg`` about ``axis`` (Rodrigues' formula)."""
    a = unit(np.asarray(axis, dtype=float))
    t = np.radians(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def rotate_group(positions: np.ndarray, group: Sequence[int], origin: np.ndarray, axis: np.ndarray,
                 angle_deg: float) -> np.ndarray:
    """Copy of ``positions`` with atoms ``group`` rotated rigidly about the line (origin, axis)."""
    out = np.array(positions, dtype=float)
    rot = rotation_matrix(axis, angle_deg)
    out[group] = (out[group] - origin) @ rot.T + origin
    return out


def wrap_degrees(x: float) -> float:
    """Angle difference wrapped into (-180, 180]."""
    return 180.0 - (180.0 - x) % 360.0


def rotate_to_angle(positions: np.ndarray, rotate: Callable[[np.ndarray, float], np.ndarray],
                    measure: Callable[[np.ndarray], float], target: float, tol: float = 1e-9) -> np.ndarray:
    """Rigidly rotate a group until ``measure`` (signed, degrees) reads ``target``.

    ``rotate(positions, angle_deg=...)`` turns the group, e.g. a ``functools.partial`` of
    :func:`rotate_group`.

    The rotation axis of a rigid scan (chosen so bond lengths stay fixed) and the axis the angle
    is measured about need not coincide exactly, so one rotation by (target - current) is only
    nearly right; a few fixed-point steps (d measure / d rotation ≈ 1) close the gap.
    """
    total = 0.0
    current = positions
    for _ in range(20):
        error = wrap_degrees(target - measure(current))
        if abs(error) < tol:
            return current
        total += error
        current = rotate(positions, angle_deg=total)
    raise GenerationError(f"could not rotate the group to {target}° (stuck at {measure(current)}°); the rotation "
                          f"axis is far from the axis the angle is measured about")
