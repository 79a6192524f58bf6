"""Imports run one way (DESIGN.md): data imports nothing above batch/geometry/nn, and evaluation
imports nothing from sweeps, reports or the CLI. Checked on the source text, so lazy imports count."""

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "eqbench"
IMPORT = re.compile(r"^\s*(?:from|import)\s+(eqbench(?:\.\w+)*)", re.MULTILINE)


def _imports(folder: str) -> dict[str, set[str]]:
    found = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        found[str(path.relative_to(PACKAGE))] = set(IMPORT.findall(path.read_text()))
    return found


@pytest.mark.parametrize("folder, forbidden", [
    ("data", ("models", "heads", "task", "tracking", "training_cli", "evaluate", "ase", "bench", "sweep",
              "report", "cli")),
    ("evaluate", ("bench", "sweep", "report", "cli")),
])
def test_lower_layers_do_not_import_higher_ones(folder, forbidden):
    bad = {f"{file}: {module}" for file, modules in _imports(folder).items() for module in modules
           if module.split(".")[1:2] and module.split(".")[1] in forbidden}
    assert not bad, f"upward imports: {sorted(bad)}"


def test_the_check_sees_imports():
    assert "eqbench.data.dataset" in _imports("evaluate")["evaluate/profile.py"]
