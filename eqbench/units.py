"""Unit strings: checked once, where units enter eqbench (``--units``, readers, cache metadata).

A unit is a product or quotient of known symbols, each with an optional integer power, e.g.
``eV``, ``kcal/mol/Å``, ``eV/Ang``, ``a0^3``, ``a0 a0 a0`` (schnetpack's spelling),
``cal/(mol K)`` or ``e*Å``. The empty string means dimensionless (counts, indices). eqbench
stores units as given and never converts between them silently, so an unknown symbol (a typo
such as ``ev/A`` or a unit eqbench does not know) is refused rather than carried into metrics
and reports.
"""

from __future__ import annotations

import re

from eqbench.errors import DataError

SYMBOLS: dict[str, tuple[str, ...]] = {
    "energy": ("eV", "meV", "Hartree", "Ha", "mHa", "kcal", "cal", "kJ", "J", "Ry", "K", "cm^-1"),
    "amount": ("mol",),
    "length": ("Å", "Ang", "Angstrom", "Bohr", "a0", "nm", "pm"),
    "charge and dipole": ("e", "D", "Debye"),
    "frequency and time": ("GHz", "MHz", "THz", "Hz", "fs", "ps", "s"),
    "angle": ("deg", "degree", "rad"),
    "mass": ("amu", "u"),
}
KNOWN_SYMBOLS = frozenset(s.split("^")[0] for group in SYMBOLS.values() for s in group)
EXAMPLES = ("eV", "kcal/mol", "eV/Å", "kcal/mol/Å", "Hartree/Bohr", "D", "a0^3", "cal/(mol K)", "deg")

_TOKEN = re.compile(r"\s*(?:(?P<open>\()|(?P<close>\))|(?P<op>[/*·])|(?P<symbol>[A-Za-zÅ0-9]+?)"
                    r"(?:\^(?P<power>[+-]?\d+))?(?=[\s/*·()]|$))")


def known_units_text() -> str:
    """The known symbols by kind, for error messages."""
    groups = "; ".join(f"{kind}: {' '.join(symbols)}" for kind, symbols in SYMBOLS.items())
    return f"{groups} (combine with '/', '*', spaces, '^n' and parentheses, e.g. {', '.join(EXAMPLES)})"


def unknown_symbols(unit: str) -> list[str] | None:
    """Symbols of ``unit`` that eqbench does not know; ``None`` when ``unit`` is not a unit expression."""
    text, position, depth, unknown = unit.strip(), 0, 0, []
    need_operand = True  # at the start, after an operator and after "("
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            return None
        if match["open"]:
            depth += 1
        elif match["close"]:
            depth -= 1
            if depth < 0 or need_operand:
                return None
        elif match["op"]:
            if need_operand:
                return None
        elif match["symbol"] not in KNOWN_SYMBOLS and match["symbol"] != "1":
            unknown.append(match["symbol"])
        need_operand = bool(match["open"] or match["op"])
        position = match.end()
    return unknown if depth == 0 and not need_operand else None


def check_unit(unit, where: str) -> str:
    """``unit`` when it is a known unit (or ``""``, dimensionless); else a :class:`DataError` naming
    ``where`` (e.g. ``"--units energy"``, ``"data.h5: property 'energy'"``) and the known units."""
    if not isinstance(unit, str):
        raise DataError(f"{where}: unit {unit!r} is not a string; use one of the known units: {known_units_text()}")
    if unit.strip() in ("", "1"):
        return unit
    unknown = unknown_symbols(unit)
    if unknown is None:
        raise DataError(f"{where}: {unit!r} is not a unit expression; use one of the known units: "
                        f"{known_units_text()}")
    if unknown:
        detail = "" if unknown == [unit.strip()] else f" ({', '.join(repr(s) for s in unknown)} unknown)"
        raise DataError(f"{where}: unknown unit {unit!r}{detail}; use one of the known units: {known_units_text()}")
    return unit


def check_units(units, where: str) -> dict[str, str]:
    """Every value of a ``{property: unit}`` mapping checked with :func:`check_unit`."""
    return {name: check_unit(unit, f"{where} {name}") for name, unit in dict(units or {}).items()}
