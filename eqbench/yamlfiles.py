"""Reading YAML files (run configs, sweep specs and their report sections) with errors that name the
file, line and column.

:func:`load_yaml` is the one way eqbench reads a YAML file it was given: ``yaml.safe_load`` with a
:class:`~eqbench.errors.ConfigError` for a missing or unreadable file and for a syntax error
(``FILE, line L, column C: ...``). :func:`locate` finds where a dotted key (``model.lr``) is written,
so a later error about the key's *value* (a wrong type, a value out of range) can point at it too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from eqbench.errors import ConfigError


def load_yaml(path: str | os.PathLike, what: str = "YAML file"):
    """The content of the YAML file ``path`` (``what`` names it in messages, e.g. "sweep spec")."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found; check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} {path} cannot be read ({err}); check the file and its permissions") from err
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = " ".join(str(part) for part in (err.context, err.problem) if part)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the {what} there") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())}); fix the {what}") from err


def locate(path: str | os.PathLike, key: str) -> tuple[int, int] | None:
    """(line, column), 1-based, where the dotted ``key`` of the YAML file ``path`` is written; ``None``
    when the file does not set it. Integer parts index lists (``trainer.callbacks.0``)."""
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    mark = None
    for part in key.split("."):
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if match is None:
                return None
            mark, node = match[0].start_mark, match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            mark = node.start_mark
        else:
            return None
    return (mark.line + 1, mark.column + 1) if mark is not None else None


def position(path: str | os.PathLike, key: str) -> str:
    """``"FILE, line L, column C"`` of ``key`` in ``path``, or ``"FILE"`` when the key is not written there."""
    found = locate(path, key)
    return f"{path}, line {found[0]}, column {found[1]}" if found else str(path)


def with_position(message: str, path: str | os.PathLike) -> str:
    """``"FILE: key.sub ..."`` → ``"FILE, line L, column C: key.sub ..."`` where ``key.sub`` (or the nearest
    key above it) is written in the YAML file ``path``; other messages unchanged."""
    prefix = f"{path}: "
    if not message.startswith(prefix):
        return message
    rest = message[len(prefix):]
    match = re.match(r"'?([A-Za-z_][\w-]*(?:\.[\w-]+|\[\d+\])*)", rest)
    if match is None:
        return message
    parts = re.sub(r"\[(\d+)\]", r".\1", match.group(1)).split(".")
    while parts:
        found = locate(path, ".".join(parts))
        if found:
            return f"{path}, line {found[0]}, column {found[1]}: {rest}"
        parts.pop()
    return message
