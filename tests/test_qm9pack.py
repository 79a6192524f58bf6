"""QM9 from the qm9pack wheel's CSV files (``--source qm9pack``) against the figshare tarball route.

Two levels:
- fixtures in the repository (tests/fixtures/qm9 and tests/fixtures/qm9pack: molecules 1–3 written in
  both published layouts), so the CSV route, the choice of source and the bad-input errors are tested
  on a fresh clone;
- the whole real set when qm9pack is installed (``pip install 'eqbench[qm9]'``): prepared once per
  test session, compared with the tarball route on the real molecules of ../shared/data/qm9.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

from eqbench.data import make_split, read_cache
from eqbench.data import qm9 as qm9_module
from eqbench.data.download import OfflineError, SourceChecksumWarning
from eqbench.data.qm9 import (
    DEFAULT_PROPERTIES,
    OPTIONAL_PROPERTIES,
    PackageFile,
    parse_atomref,
    prepare,
    qm9pack_files,
    read_qm9pack_csv,
    read_qm9pack_polarizability,
)
from eqbench.errors import DataError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_QM9 = Path(__file__).resolve().parents[2] / "shared" / "data" / "qm9"
ALL_PROPERTIES = list(DEFAULT_PROPERTIES) + list(OPTIONAL_PROPERTIES)
PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
HEADER = (FIXTURES / "qm9pack" / "qm9_part1.csv").read_text().splitlines()[0]
# 1 Hartree = 27.211386 eV (DATA_FORMATS: the papers' conversion; ase's CODATA value agrees to 1e-7)
MEV = 27211.386


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("tests never use the network")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def fake_qm9pack(monkeypatch, directory: Path) -> None:
    """Make qm9pack_files() return the CSV files of ``directory`` as if they were the installed wheel's."""
    files = {p.name: PackageFile(p, None) for p in directory.glob("*.csv")}
    monkeypatch.setattr(qm9_module, "qm9pack_files", lambda required=True: files)
    monkeypatch.setattr("importlib.metadata.version", lambda name: "0.0-test")


def not_installed(monkeypatch) -> None:
    def files(required=True):
        if required:
            raise DataError("qm9pack is not installed")
        return {}

    monkeypatch.setattr(qm9_module, "qm9pack_files", files)


def tarball_dir(tmp_path: Path, xyz: dict[str, str], fixtures: Path = FIXTURES / "qm9") -> Path:
    from tests.test_qm9 import write_tarball

    directory = tmp_path / "tarball"
    directory.mkdir()
    write_tarball(directory / "dsgdb9nsd.xyz.tar.bz2", xyz)
    for name in ("atomref.txt", "uncharacterized.txt"):
        (directory / name).write_bytes((fixtures / name).read_bytes())
    return directory


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SourceChecksumWarning)  # the test's tarball is not the published one
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------- fixtures in the repository
def test_hand_written_molecules_give_the_atomization_energies_computed_by_hand(tmp_path, monkeypatch):
    """U0 and G of methane, ammonia, water: total energy minus the atoms' references, typed in from
    the published atomref.txt, in meV; the same through both routes."""
    u0_ref = {"H": -0.500273, "C": -37.846772, "N": -54.583861, "O": -75.064579}
    g_ref = {"H": -0.510927, "C": -37.861317, "N": -54.598897, "O": -75.079532}
    totals = {1: ("CHHHH", -40.47893, -40.498597), 2: ("NHHH", -56.525887, -56.544961),
              3: ("OHH", -76.404702, -76.422349)}
    expected_u0 = [(u0 - sum(u0_ref[a] for a in atoms)) * MEV for atoms, u0, _ in totals.values()]
    expected_g = [(g - sum(g_ref[a] for a in atoms)) * MEV for atoms, _, g in totals.values()]
    assert expected_u0[0] == pytest.approx(-0.631066 * MEV)  # methane: −40.47893 − (−37.846772 − 4 × 0.500273) Ha

    xyz = {p.name: p.read_text() for p in sorted((FIXTURES / "qm9").glob("dsgdb9nsd_*.xyz"))}
    by_tarball = read_cache(quiet(prepare, tarball_dir(tmp_path, xyz), source="tarball", download=False))
    fake_qm9pack(monkeypatch, FIXTURES / "qm9pack")
    by_csv = read_cache(prepare(tmp_path / "pack", source="qm9pack"))
    for ds in (by_tarball, by_csv):
        assert ds.properties["index"].values.tolist() == [1, 2, 3]
        assert ds.properties["U0"].values == pytest.approx(expected_u0, rel=1e-7)
        assert ds.properties["G"].values == pytest.approx(expected_g, rel=1e-7)
        assert ds.properties["homo"].values == pytest.approx([-0.3877 * MEV, -0.257 * MEV, -0.2928 * MEV], rel=1e-7)
        assert ds.properties["mu"].values.tolist() == [0.0, 1.6256, 1.8511]  # D, as printed
        assert ds.properties["alpha"].values.tolist() == [13.21, 9.46, 6.31]  # a0^3, as printed
        assert ds.z.tolist() == [6, 1, 1, 1, 1, 7, 1, 1, 1, 8, 1, 1]
        assert ds.pos[5].tolist() == [-0.0404260543, 1.0241077531, 0.0625637998]  # Å, ammonia's N
    assert by_csv.fingerprint == by_tarball.fingerprint
    assert by_csv.metadata["source"] == "qm9pack" and by_tarball.metadata["source"] == "tarball"
    assert by_csv.metadata["qm9pack_version"] == "0.0-test"
    assert set(by_csv.metadata["sources"]) == {*PARTS, "atomref.txt"}
    assert by_csv.metadata["sources"]["atomref.txt"]["origin"].startswith("eqbench's copy")


def test_builtin_atom_references_equal_the_published_file():
    path = SHARED_QM9 / "atomref.txt"
    for source in (FIXTURES / "qm9" / "atomref.txt", path):
        if not source.is_file():
            continue
        parsed = parse_atomref(source.read_text(), str(source))
        builtin = qm9_module.builtin_atomrefs()
        for name in parsed:
            assert np.array_equal(parsed[name], builtin[name]), (source, name)


def test_alpha_tensor_from_the_polarizability_table(tmp_path, monkeypatch):
    fake_qm9pack(monkeypatch, FIXTURES / "qm9pack")
    ds = read_cache(prepare(tmp_path, source="qm9pack", properties=["alpha", "alpha_tensor"]))
    tensor = ds.properties["alpha_tensor"]
    assert tensor.unit == "a0^3" and tensor.values.shape == (3, 3, 3) and not tensor.per_atom
    assert tensor.values[1].tolist() == [[10.439, 0.0, 0.0], [0.0, 10.438, 0.0], [0.0, 0.0, 7.504]]  # ammonia
    assert np.array_equal(tensor.values, tensor.values.transpose(0, 2, 1))
    # QM9's α (two decimals) is the trace / 3 of the tensor (three decimals)
    assert np.abs(np.trace(tensor.values, axis1=1, axis2=2) / 3 - ds.properties["alpha"].values).max() <= 0.0051


def test_alpha_tensor_is_not_in_the_tarball(tmp_path):
    xyz = {p.name: p.read_text() for p in sorted((FIXTURES / "qm9").glob("dsgdb9nsd_*.xyz"))}
    with pytest.raises(DataError, match="--source qm9pack"):
        prepare(tarball_dir(tmp_path, xyz), source="tarball", properties=["alpha_tensor"], download=False)


# ---------------------------------------------------------------------- which source
def test_auto_prefers_a_tarball_in_the_data_root(tmp_path, monkeypatch):
    xyz = {p.name: p.read_text() for p in sorted((FIXTURES / "qm9").glob("dsgdb9nsd_*.xyz"))}
    fake_qm9pack(monkeypatch, FIXTURES / "qm9pack")
    out = quiet(prepare, tarball_dir(tmp_path, xyz))
    assert read_cache(out).metadata["source"] == "tarball"


def test_auto_takes_qm9pack_without_a_tarball(tmp_path, monkeypatch):
    fake_qm9pack(monkeypatch, FIXTURES / "qm9pack")
    out = prepare(tmp_path / "empty")
    assert out == tmp_path / "empty" / "qm9.h5"
    assert read_cache(out).metadata["source"] == "qm9pack"


def test_auto_downloads_without_a_tarball_or_qm9pack(tmp_path, monkeypatch):
    not_installed(monkeypatch)
    with pytest.raises(OfflineError, match=r"could not be downloaded(.|\n)*pip install 'eqbench\[qm9\]'"):
        prepare(tmp_path)


def test_offline_error_names_the_qm9pack_command_when_it_is_installed(tmp_path, monkeypatch):
    fake_qm9pack(monkeypatch, FIXTURES / "qm9pack")
    with pytest.raises(OfflineError, match=r"qm9pack is installed(.|\n)*eqbench data prepare qm9 --source qm9pack"):
        prepare(tmp_path, source="tarball")
    assert not (tmp_path / "qm9.h5").exists()


def test_qm9pack_cannot_keep_the_uncharacterized_molecules(tmp_path, monkeypatch):
    fake_qm9pack(monkeypatch, FIXTURES / "qm9pack")
    with pytest.raises(DataError, match="--source tarball"):
        prepare(tmp_path, source="qm9pack", keep_uncharacterized=True)


def test_cli_source_option(tmp_path, monkeypatch, capsys):
    from eqbench.cli import main

    fake_qm9pack(monkeypatch, FIXTURES / "qm9pack")
    assert main(["data", "prepare", "qm9", "--source", "qm9pack", "--root", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "qm9.h5").is_file()
    assert main(["data", "prepare", "md17-ethanol", "--source", "qm9pack", "--root", str(tmp_path)]) == 2
    assert "--source applies to qm9 only" in capsys.readouterr().err


# ---------------------------------------------------------------------- bad input
def write_parts(directory: Path, rows: list[str]) -> list[Path]:
    directory.mkdir(exist_ok=True)
    paths = [directory / name for name in PARTS]
    paths[0].write_text("\n".join([HEADER, *rows]) + "\n")
    for path in paths[1:]:
        path.write_text(HEADER + "\n")
    return paths


def fixture_rows() -> list[str]:
    return (FIXTURES / "qm9pack" / "qm9_part1.csv").read_text().splitlines()[1:]


def test_truncated_csv_names_file_and_row(tmp_path):
    rows = fixture_rows()
    paths = write_parts(tmp_path, [rows[0], rows[1][: len(rows[1]) // 2]])
    with pytest.raises(DataError, match=r"qm9_part1\.csv, row 3: \d+ fields, expected 25"):
        read_qm9pack_csv(paths)


def test_damaged_number_names_file_and_row(tmp_path):
    rows = fixture_rows()
    paths = write_parts(tmp_path, [rows[0], rows[1].replace("-56.525887", "-56.52x887")])
    with pytest.raises(DataError, match=r"qm9_part1\.csv, row 3: bad number"):
        read_qm9pack_csv(paths)


def test_wrong_atom_count_names_file_and_row(tmp_path):
    rows = fixture_rows()
    paths = write_parts(tmp_path, [rows[0].replace('",5,"[4', '",6,"[4'), rows[1]])
    with pytest.raises(DataError, match=r"qm9_part1\.csv, row 2: N_atoms is 6 but the row has 5 elements"):
        read_qm9pack_csv(paths)


def test_wrong_header_and_missing_tensor(tmp_path):
    paths = write_parts(tmp_path, fixture_rows())
    paths[1].write_text("a,b,c\n")
    with pytest.raises(DataError, match=r"qm9_part2\.csv, row 1: not a qm9pack QM9 table"):
        read_qm9pack_csv(paths)
    pol = tmp_path / "qm9_polarizability.csv"
    pol.write_text((FIXTURES / "qm9pack" / "qm9_polarizability.csv").read_text().replace("4.492,0.000", "4.492"))
    with pytest.raises(DataError, match=r"qm9_polarizability\.csv, row 4: 6 fields, expected 7"):
        read_qm9pack_polarizability(pol)


# ---------------------------------------------------------------------- the real set (qm9pack installed)
needs_qm9pack = pytest.mark.skipif(not qm9pack_files(required=False),
                                   reason="qm9pack is not installed (pip install 'eqbench[qm9]')")


@pytest.fixture(scope="session")
def real_qm9(tmp_path_factory):
    """The whole real set with every property, prepared once per test session (~40 s)."""
    out = prepare(tmp_path_factory.mktemp("qm9pack"), source="qm9pack", properties=ALL_PROPERTIES,
                  progress=False)
    return read_cache(out)


@needs_qm9pack
def test_real_set_count_order_and_checksums(real_qm9):
    ds = real_qm9
    assert len(ds) == 130_831 and qm9_module.N_CHARACTERIZED == 130_831
    index = ds.properties["index"].values
    assert index[0] == 1 and index[-1] == 133_885 and np.all(np.diff(index) > 0)
    if (SHARED_QM9 / "uncharacterized.txt").is_file():
        listed = qm9_module.parse_uncharacterized((SHARED_QM9 / "uncharacterized.txt").read_text())
        assert len(listed) == 3_054 and not np.isin(listed, index).any()
        assert len(np.union1d(listed, index)) == 133_885
    assert all(record["verified"] is True for name, record in ds.metadata["sources"].items() if name != "atomref.txt")
    assert ds.metadata["qm9pack_version"] == "1.0.3"
    assert ds.n_atoms.min() == 3 and ds.n_atoms.max() == 29


@needs_qm9pack
@pytest.mark.skipif(not SHARED_QM9.is_dir(), reason=f"real QM9 xyz samples not found at {SHARED_QM9}")
def test_real_molecules_equal_the_tarball_route(real_qm9, tmp_path):
    """Positions, every property and the atomization energies of the real figshare xyz files, through
    a tarball built from them, equal the qm9pack cache's rows of the same molecules."""
    xyz = {p.name: p.read_text() for p in sorted(SHARED_QM9.glob("dsgdb9nsd_*.xyz"))}
    by_tarball = read_cache(quiet(prepare, tarball_dir(tmp_path, xyz, SHARED_QM9), source="tarball",
                                  properties=[p for p in ALL_PROPERTIES if p != "alpha_tensor"], download=False))
    indices = by_tarball.properties["index"].values
    assert len(indices) == len(xyz) >= 10
    rows = np.searchsorted(real_qm9.properties["index"].values, indices)
    subset = real_qm9.subset(rows)
    assert np.array_equal(subset.z, by_tarball.z) and np.array_equal(subset.offsets, by_tarball.offsets)
    assert np.array_equal(subset.pos, by_tarball.pos)
    for name, prop in by_tarball.properties.items():
        assert np.array_equal(subset.properties[name].values, prop.values), name
        assert subset.properties[name].unit == prop.unit, name


@needs_qm9pack
def test_real_alpha_tensor_trace_is_alpha(real_qm9):
    tensor = real_qm9.properties["alpha_tensor"].values
    assert tensor.shape == (130_831, 3, 3) and np.array_equal(tensor, tensor.transpose(0, 2, 1))
    iso = np.trace(tensor, axis1=1, axis2=2) / 3
    # α is printed with 2 decimals, the tensor with 3: |tr/3 − α| ≤ 0.005 + 0.0005 (round-off of both)
    assert np.abs(iso - real_qm9.properties["alpha"].values).max() <= 0.0055


@needs_qm9pack
@pytest.mark.parametrize("protocol, sizes", [("qm9-110k", (110_000, 10_000, 10_831)),
                                             ("qm9-dimenet", (110_000, 10_000, 10_831)),
                                             ("qm9-109k", (109_000, 1_000, 20_831))])
def test_paper_protocols_on_the_real_set(real_qm9, tmp_path, protocol, sizes):
    split = make_split(np.arange(len(real_qm9)), protocol, 0, tmp_path, real_qm9.fingerprint, dataset=real_qm9)
    parts = (split.train, split.val, split.test)
    assert tuple(len(p) for p in parts) == sizes
    assert len(np.unique(np.concatenate(parts))) == sum(sizes) <= 130_831


# ---------------------------------------------------------------------- the tensor as a training target
def test_polarizability_head_trains_on_alpha_tensor(tmp_path, monkeypatch):
    """PaiNN's Eq. 14 head fitted to the tensors of the three fixture molecules: the standardisation
    shifts α₀ by the mean of tr(α)/(3n); the isotropic output is the trace / 3 of the tensor output;
    a few optimizer steps lower the tensor's squared error."""
    import torch

    from eqbench.models import create
    from eqbench.task import AtomisticTask

    torch.manual_seed(0)
    fake_qm9pack(monkeypatch, FIXTURES / "qm9pack")
    ds = read_cache(prepare(tmp_path, source="qm9pack", properties=["alpha", "alpha_tensor"]))
    batch = ds.__getitems__([0, 1, 2])
    target = batch.targets["alpha_tensor"].double()
    task = AtomisticTask(create("painn", n_features=8, n_interactions=1, n_rbf=4, cutoff=5.0),
                         targets=[{"name": "alpha_tensor", "head": "polarizability"}]).double()
    head = task.model.heads[0]
    head.standardize(ds)
    iso = np.trace(ds.properties["alpha_tensor"].values, axis1=1, axis2=2) / 3 / ds.n_atoms
    assert float(head.shift) == pytest.approx(iso.mean()) and float(head.scale) == pytest.approx(iso.std())
    tensor = task.model(batch)["alpha_tensor"]
    assert tensor.shape == (3, 3, 3)
    torch.testing.assert_close(tensor, tensor.transpose(1, 2))
    head.isotropic = True
    torch.testing.assert_close(task.model(batch)["alpha_tensor"], torch.diagonal(tensor, dim1=1, dim2=2).mean(-1))
    head.isotropic = False
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = ((task.model(batch)["alpha_tensor"] - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.75 * losses[0]


def test_polarizability_head_on_an_invariant_model_is_isotropic_only():
    from eqbench.errors import ConfigError
    from eqbench.models import create
    from eqbench.task import build_heads

    schnet = create("schnet", n_features=8, n_interactions=1, n_rbf=4, cutoff=5.0)
    (head,) = build_heads(schnet, [_target("alpha", {"isotropic": True, "vectors": None})])
    assert not head.net.vectors
    with pytest.raises(ConfigError, match="isotropic: true"):
        build_heads(schnet, [_target("alpha_tensor", {"vectors": None})])
    with pytest.raises(ConfigError, match="needs vector features"):
        build_heads(schnet, [_target("alpha", {"isotropic": True})])
    (dipole,) = build_heads(schnet, [_target("mu", {"atomic_dipoles": None}, head="dipole_magnitude")])
    assert not dipole.atomic_dipoles  # Eq. 12 for an invariant model
    painn = create("painn", n_features=8, n_interactions=1, n_rbf=4, cutoff=5.0)
    (dipole,) = build_heads(painn, [_target("mu", {"atomic_dipoles": None}, head="dipole_magnitude")])
    assert dipole.atomic_dipoles  # Eq. 13


def _target(name, kwargs, head="polarizability"):
    from eqbench.task import Target

    return Target(name, head=head, head_kwargs=kwargs)
