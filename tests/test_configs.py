"""Shipped configs and sweep specs name classes that exist: every ``class_path`` imports.

A moved class (``eqbench.data.profile`` → ``eqbench.evaluate.profile``) would otherwise only show when a
sweep's first trial starts."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*ROOT.glob("configs/*.yaml"), *ROOT.glob("sweeps/*.yaml")])


def class_paths(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.rpartition(".")[2] == "class_path" and isinstance(value, str):
                yield value
            else:
                yield from class_paths(value)
    elif isinstance(node, list):
        for item in node:
            yield from class_paths(item)


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parent.name}/{p.name}" for p in SHIPPED])
def test_every_class_path_imports(path):
    paths = set(class_paths(yaml.safe_load(path.read_text())))
    for dotted in paths:
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), f"{path.name}: {dotted} does not exist"


def test_the_walk_finds_class_paths_in_configs_and_spec_grids():
    assert "eqbench.evaluate.profile.ProfileEvaluation" in set(
        class_paths(yaml.safe_load((ROOT / "configs/painn_ferrocene.yaml").read_text())))
    assert "eqbench.models.SchNet" in set(class_paths(yaml.safe_load((ROOT / "sweeps/painn_qm9.yaml").read_text())))
