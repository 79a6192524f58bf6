"""The papers' published values: transcription checked against the paper text; paper columns render.

The tables' text is kept in tests/fixtures/paper_tables (excerpts of the papers as printed), so the
checks run on a fresh clone; where the full papers are beside the repository (../shared/papers), the
excerpts are checked to be verbatim lines of them."""

import re
from pathlib import Path

import pytest

from eqbench.report.render import to_markdown
from eqbench.report.tables import ColumnSpec, Record, TableSpec, build_table, load_paper_values

TABLES = Path(__file__).resolve().parent / "fixtures" / "paper_tables"
PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers"
QM9_ORDER = ["mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv"]


def paper_rows(name: str, header_start: str, n_rows: int) -> list[list[str]]:
    lines = (TABLES / name).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    return [re.sub(r"</?b>", "", line).split("\t") for line in lines[start + 1:start + 1 + n_rows]]


@pytest.mark.parametrize("name", ["painn.md", "dimenet.md", "e3nn_l0_l1.md"])
def test_table_excerpts_are_verbatim_lines_of_the_papers(name):
    if not (PAPERS / name).is_file():
        pytest.skip(f"paper text not found at {PAPERS / name} (../shared); the excerpt is used as it is")
    paper = set((PAPERS / name).read_text().splitlines())
    excerpt = [line for line in (TABLES / name).read_text().splitlines() if line]
    assert len(excerpt) >= 10
    assert [line for line in excerpt if line not in paper] == []


def test_painn_table_2_transcription():
    rows = paper_rows("painn.md", "Target\tUnit\tSCHNET", len(QM9_ORDER))
    values = load_paper_values()["painn_tab2_qm9"]["rows"]
    for key, cols in zip(QM9_ORDER, rows):  # columns: target, unit, SchNet, PhysNet, DimeNet++, Cormorant, LiNet, PaiNN
        assert (values[key]["schnet"], values[key]["painn"]) == pytest.approx((float(cols[2]), float(cols[7]))), key


def test_dimenet_table_1_transcription():
    order = [*QM9_ORDER, "std_mae", "log_mae"]
    rows = paper_rows("dimenet.md", "Target\tUnit\tPPGN", len(order))
    values = load_paper_values()["dimenet_tab1"]["rows"]
    for key, cols in zip(order, rows):  # columns: target, unit, PPGN, SchNet, PhysNet, MEGNet-s, Cormorant, DimeNet
        assert values[key]["schnet"] == pytest.approx(float(cols[3])), key
        assert values[key]["physnet"] == pytest.approx(float(cols[4])), key
        assert values[key]["dimenet"] == pytest.approx(float(cols[7])), key


def test_painn_table_4_transcription():
    order = ["full", "no_scalar_product", "no_vector_propagation", "both_off", "no_vector_features"]
    rows = paper_rows("painn.md", "Ablation\t# params", len(order))
    values = load_paper_values()["painn_tab4"]["rows"]
    for key, cols in zip(order, rows):
        assert values[key]["n_parameters"] == pytest.approx(float(cols[1].rstrip("k")) * 1000), key
        assert (values[key]["F"], values[key]["energy_mae"], values[key]["forces_mae"]) == \
            (int(cols[2]), float(cols[3]), float(cols[4])), key


def test_painn_ethanol_dipole_transcription():
    text = (TABLES / "painn.md").read_text()
    match = re.search(r"reaching ([0-9.]+) D compared to ([0-9.]+) D using only scalars and positions "
                      r"\(Eq\. 12\)", text)
    rows = load_paper_values()["painn_s54_ethanol_dipole"]["rows"]
    assert (rows["eq13"]["dipole_mae"], rows["eq12"]["dipole_mae"]) == (float(match[1]), float(match[2]))


def test_miller_table_1_transcription():
    order = QM9_ORDER
    rows = paper_rows("e3nn_l0_l1.md", "Target\tSchNet\tSchNet Pack", len(order))
    values = load_paper_values()["miller_tab1"]["rows"]
    for key, cols in zip(order, rows):  # target, SchNet, SchNetPack, Cormorant, L1Net, L0Net, L0Net Deep, ...
        assert [values[key][m] for m in ("schnet", "l1net", "l0net", "l0net_deep")] == \
            pytest.approx([float(cols[i]) for i in (1, 4, 5, 6)]), key


def test_paper_column_renders_published_values_and_marks_missing_rows():
    records = [Record({"variant": v}, 0, "COMPLETE", {"test_energy_mae": e}, {"test_energy_mae": "kcal/mol"})
               for v, e in (("full", 0.30), ("no_vectors", 0.80), ("extra", 0.5))]
    spec = TableSpec("t", rows="variant", columns=[
        ColumnSpec("energy MAE", metric="test_energy_mae"),
        ColumnSpec("paper", kind="paper", source="painn_tab4", key="energy_mae",
                   row_map={"no_vectors": "no_vector_features"})])
    text = to_markdown(build_table(spec, records))
    assert re.search(r"\| full \| \*\*0\.300\*\* \| 0\.159 \|", text)
    assert "| no_vectors | 0.800 | 0.449 |" in text and "| extra | 0.500 | n/a |" in text
    assert "paper (kcal/mol)" in text
