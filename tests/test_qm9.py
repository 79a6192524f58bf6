"""QM9 from the published files: the 12 real xyz files, atomref.txt and uncharacterized.txt of
../shared/data/qm9, a tar.bz2 built from them (the same path as the real archive), and the split
protocols. Expected values are typed in from the files, with their units."""

from __future__ import annotations

import io
import tarfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

from eqbench.data import make_split, read, read_cache
from eqbench.data.download import OfflineError, SourceChecksumWarning
from eqbench.data.qm9 import (
    ParsedMolecules,
    parse_atomref,
    parse_uncharacterized,
    parse_xyz,
    prepare,
    qm9_109k,
    qm9_110k,
    qm9_dimenet,
)
from eqbench.errors import DataError

QM9 = Path(__file__).resolve().parents[2] / "shared" / "data" / "qm9"
needs_shared = pytest.mark.skipif(not QM9.is_dir(), reason=f"real QM9 samples not found at {QM9} (the shared "
                                                           f"data directory beside the repository)")
MEV_PER_HARTREE = 27211.386  # 1 Hartree = 27.211386 eV
INDICES = [4222, 9233, 23658, 57646, 68215, 78511, 84676, 88957, 91701, 103109, 105082, 111232]

# atomref.txt, U (0 K) and G (298.15 K) in Hartree, read from the file
U0_REF = {"H": -0.500273, "C": -37.846772, "N": -54.583861, "O": -75.064579, "F": -99.718730}
G_REF = {"H": -0.510927, "C": -37.861317, "N": -54.598897, "O": -75.079532, "F": -99.733544}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("tests never use the network")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def xyz_text(index: int) -> str:
    return (QM9 / f"dsgdb9nsd_{index:06d}.xyz").read_text()


def write_tarball(path: Path, members: dict[str, str]) -> None:
    with tarfile.open(path, mode="w:bz2") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def renumber(text: str, index: int) -> str:
    lines = text.split("\n")
    lines[1] = lines[1].replace(lines[1].split("\t")[0], f"gdb {index}", 1)
    return "\n".join(lines)


@pytest.fixture
def qm9_dir(tmp_path) -> Path:
    """The published files as a user would place them: a tarball of the 12 real molecules plus a copy of
    molecule 4222 renumbered 58, which uncharacterized.txt lists; the shared atomref/uncharacterized copies."""
    directory = tmp_path / "qm9"
    directory.mkdir()
    members = {f"dsgdb9nsd_{i:06d}.xyz": xyz_text(i) for i in INDICES}
    members["dsgdb9nsd_000058.xyz"] = renumber(xyz_text(4222), 58)
    write_tarball(directory / "dsgdb9nsd.xyz.tar.bz2", members)
    for name in ("atomref.txt", "uncharacterized.txt"):
        (directory / name).write_bytes((QM9 / name).read_bytes())
    return directory


def quiet_prepare(*args, **kwargs) -> Path:
    """prepare() on copies that differ from the published checksums (they warn, and are used)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SourceChecksumWarning)
        return prepare(*args, **kwargs)


# ---------------------------------------------------------------------- the text files
@needs_shared
def test_real_xyz_files_parse_to_the_values_in_them():
    parsed = ParsedMolecules()
    for index in INDICES:
        parse_xyz(xyz_text(index), f"dsgdb9nsd_{index:06d}.xyz", parsed)
    assert parsed.index == INDICES
    assert parsed.n_atoms == [8, 15, 13, 21, 21, 21, 21, 21, 19, 19, 23, 19]
    assert len(parsed.symbols) == sum(parsed.n_atoms) and len(parsed.coordinates) == 3 * sum(parsed.n_atoms)
    # dsgdb9nsd_004222.xyz: C2HFN4, line 2 and the first and last atom lines
    assert parsed.symbols[:8] == ["F", "C", "N", "C", "N", "N", "N", "H"]
    assert list(parsed.values[:15]) == [6.53696, 2.91337, 2.01523, 2.2694, 41.93, -0.278, -0.1108, 0.1672, 538.6213,
                                  0.043872, -395.551843, -395.547064, -395.546119, -395.580601, 16.536]
    assert list(parsed.coordinates[:3]) == [-0.0022409078, 0.082819031, 0.0040035791]  # Å
    assert list(parsed.coordinates[21:24]) == [-2.0726207708, 3.8468485768, 0.0507368793]
    assert parsed.charges[0] == -0.024476 and parsed.charges[7] == 0.165981  # e
    # dsgdb9nsd_084676.xyz: C9H12
    start = sum(parsed.n_atoms[:6])
    assert parsed.symbols[start:start + 21] == ["C"] * 9 + ["H"] * 12
    assert parsed.values[6 * 15 + 3] == 0.1766 and parsed.values[6 * 15 + 10] == -349.984464


@needs_shared
def test_mathematica_exponents_and_any_number_of_frequencies():
    lines = xyz_text(9233).split("\n")
    lines[1] = lines[1].replace("\t-0.263\t0.0023\t", "\t-2.63*^-1\t2.3*^-3\t")
    lines[2] = lines[2].replace("-0.2656293171", "-2.656293171*^-1").replace("-0.546607", "-5.46607*^-1")
    n = int(lines[0])
    lines[2 + n] = lines[2 + n] + "\t" + lines[2 + n]  # twice 3n - 6 frequencies, as in some published files
    parsed = ParsedMolecules()
    parse_xyz("\n".join(lines), "edited", parsed)
    assert list(parsed.values[5:7]) == [-0.263, 0.0023]  # homo, lumo in Hartree
    assert parsed.coordinates[0] == pytest.approx(-0.2656293171, abs=1e-15)
    assert parsed.charges[0] == pytest.approx(-0.546607, abs=1e-15)


@needs_shared
@pytest.mark.parametrize("cut", ["atoms", "inchi", "header"])
def test_truncated_xyz_file_is_an_error_naming_it(cut):
    lines = xyz_text(4222).split("\n")
    text = {"atoms": "\n".join(lines[:6]), "inchi": "\n".join(lines[:12]), "header": "8\ngdb 4222\t6.5\n"}[cut]
    with pytest.raises(DataError, match="dsgdb9nsd_004222.xyz.*delete it"):
        parse_xyz(text, "dsgdb9nsd_004222.xyz", ParsedMolecules())


@needs_shared
def test_atomref_rows_found_by_element_symbol(tmp_path):
    refs = parse_atomref((QM9 / "atomref.txt").read_text(), "atomref.txt")
    for symbol, z in (("H", 1), ("C", 6), ("N", 7), ("O", 8), ("F", 9)):
        assert refs["U0"][z] == U0_REF[symbol] and refs["G"][z] == G_REF[symbol]
        assert refs["Cv"][z] == 2.981 and refs["zpve"][z] == 0.0
    assert refs["U"][6] == -37.845355 and refs["H"][8] == -75.062219
    assert refs["U0"][[0, 2, 3, 5, 10]].tolist() == [0.0] * 5
    # another copy: more header lines, rows reordered, a footer
    rows = [line for line in (QM9 / "atomref.txt").read_text().splitlines() if line.split()[:1] in
            (["H"], ["C"], ["N"], ["O"], ["F"])]
    other = "Atomic reference data\n\n" + "\n".join(reversed(rows)) + "\n====\nend of file\n"
    again = parse_atomref(other, "copy")
    assert all(np.array_equal(again[k], refs[k]) for k in refs)
    with pytest.raises(DataError, match=r"atomref.txt.*\['F'\]"):
        parse_atomref("\n".join(rows[:4]), "atomref.txt")


@needs_shared
def test_uncharacterized_list_of_the_shared_copy_with_its_extra_blank_lines():
    text = (QM9 / "uncharacterized.txt").read_text()
    assert text.startswith("\n")  # this copy has extra blank lines at the top
    indices = parse_uncharacterized(text)
    assert len(indices) == 3054
    assert indices[:5].tolist() == [58, 61, 80, 185, 186] and indices[-1] == 133866
    assert not np.isin(INDICES, indices).any()
    assert parse_uncharacterized("   58   NC(=N)C#N  x  y  6.0\n#  Index\n61 a b c 5.6\n").tolist() == [58, 61]


# ---------------------------------------------------------------------- the tarball → cache
@needs_shared
def test_tarball_fixture_goes_through_the_archive_path(qm9_dir):
    out = quiet_prepare(qm9_dir, download=False)
    assert out == qm9_dir / "qm9.h5"
    ds = read_cache(out, validate=True)
    props = {k: p.values for k, p in ds.properties.items()}
    assert props["index"].tolist() == INDICES  # sorted, uncharacterized 58 dropped
    assert ds.units == {"mu": "D", "alpha": "a0^3", "homo": "meV", "lumo": "meV", "gap": "meV", "r2": "a0^2",
                        "zpve": "meV", "U0": "meV", "U": "meV", "H": "meV", "G": "meV", "Cv": "cal/(mol K)",
                        "index": ""}
    a = 0  # molecule 4222: C2 H F N4
    u0 = -395.551843 - (2 * U0_REF["C"] + U0_REF["H"] + U0_REF["F"] + 4 * U0_REF["N"])
    g = -395.580601 - (2 * G_REF["C"] + G_REF["H"] + G_REF["F"] + 4 * G_REF["N"])
    assert props["U0"][a] == pytest.approx(u0 * MEV_PER_HARTREE, rel=1e-8)  # atomization energy, meV
    assert props["U0"][a] == pytest.approx(-1.303852 * 27211.386, abs=0.01)  # -35479.62 meV
    assert props["G"][a] == pytest.approx(g * MEV_PER_HARTREE, rel=1e-8)
    assert props["homo"][a] == pytest.approx(-0.278 * MEV_PER_HARTREE, rel=1e-8)
    assert props["lumo"][a] == pytest.approx(-0.1108 * MEV_PER_HARTREE, rel=1e-8)
    assert props["gap"][a] == pytest.approx(props["lumo"][a] - props["homo"][a], abs=1e-6)
    assert props["zpve"][a] == pytest.approx(0.043872 * MEV_PER_HARTREE, rel=1e-8)
    assert (props["mu"][a], props["alpha"][a], props["r2"][a], props["Cv"][a]) == (2.2694, 41.93, 538.6213, 16.536)
    c = INDICES.index(23658)  # homo -0.2158, lumo -0.0129, gap 0.203 Hartree in the file
    assert props["gap"][c] == pytest.approx(0.203 * MEV_PER_HARTREE, rel=1e-8)  # the published column, kept:
    assert props["lumo"][c] - props["homo"][c] == pytest.approx(0.2029 * MEV_PER_HARTREE, rel=1e-8)  # rounding
    b = INDICES.index(84676)  # C9H12
    u0_b = -349.984464 - (9 * U0_REF["C"] + 12 * U0_REF["H"])
    assert props["U0"][b] == pytest.approx(u0_b * MEV_PER_HARTREE, rel=1e-8)
    assert props["mu"][b] == 0.1766
    # atoms of molecule 4222 in file order, Å
    assert ds.z[:8].tolist() == [9, 6, 7, 6, 7, 7, 7, 1]
    assert ds.pos[0].tolist() == [-0.0022409078, 0.082819031, 0.0040035791]
    assert ds.n_atoms.tolist() == [8, 15, 13, 21, 21, 21, 21, 21, 19, 19, 23, 19]
    # U0..G are atomization energies, so no atom references for them; Cv's are there for the task
    assert set(ds.atomrefs) == {"Cv"} and ds.atomrefs["Cv"][[1, 6, 7, 8, 9]].tolist() == [2.981] * 5
    assert ds.metadata["atomrefs_hartree"]["F"]["U0"] == -99.718730
    assert ds.metadata["uncharacterized_dropped"] == 1 and ds.metadata["molecules_in_archive"] == 13
    assert ds.metadata["sources"]["dsgdb9nsd.xyz.tar.bz2"]["verified"] is False  # not the published archive


@needs_shared
def test_keep_uncharacterized_and_optional_properties(qm9_dir):
    out = quiet_prepare(qm9_dir, keep_uncharacterized=True, properties=["U0", "A", "B", "C", "mulliken_charges",
                                                                         "index"], download=False)
    assert out.name == "qm9-with-uncharacterized-A-B-C-U0-index-mullikencharges.h5"
    ds = read_cache(out)
    assert ds.properties["index"].values.tolist() == [58] + INDICES
    assert ds.properties["U0"].values[0] == ds.properties["U0"].values[1]  # 58 is a copy of 4222
    assert ds.units["A"] == "GHz" and ds.properties["A"].values[1] == 6.53696
    charges = ds.properties["mulliken_charges"]
    assert charges.per_atom and charges.unit == "e" and charges.values[8] == -0.024476
    with pytest.raises(DataError, match="no properties"):
        quiet_prepare(qm9_dir, properties=["U0", "enthalpy"], download=False)


@needs_shared
def test_read_by_name_prepares_once_in_the_data_root(qm9_dir, monkeypatch):
    monkeypatch.setenv("EQBENCH_DATA", str(qm9_dir.parent))
    with pytest.warns(SourceChecksumWarning):
        ds = read("qm9")
    assert len(ds) == 12 and ds.source == str(qm9_dir / "qm9.h5")
    stamp = (qm9_dir / "qm9.h5").stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache is read, the raw files not touched again
        assert read("qm9").fingerprint == ds.fingerprint
    assert (qm9_dir / "qm9.h5").stat().st_mtime_ns == stamp


@needs_shared
def test_datamodule_with_a_qm9_protocol(qm9_dir, monkeypatch):
    from eqbench.data.datamodule import AtomisticDataModule

    monkeypatch.setenv("EQBENCH_DATA", str(qm9_dir.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SourceChecksumWarning)
        dm = AtomisticDataModule("qm9", split="qm9-110k", train_size=8, val_size=2, batch_size=4)
        dm.setup("fit")
    assert dm.split.sizes() == (8, 2, 2) and dm.split.path.parent == qm9_dir / "qm9.splits"
    batch = next(iter(dm.val_dataloader()))
    assert batch.targets["U0"].dtype.is_floating_point and batch.targets["U0"].shape == (2,)


# ---------------------------------------------------------------------- damaged or missing files
@needs_shared
def test_truncated_archive_is_an_error_and_writes_no_cache(qm9_dir):
    tarball = qm9_dir / "dsgdb9nsd.xyz.tar.bz2"
    tarball.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(DataError, match="dsgdb9nsd.xyz.tar.bz2 is not a complete bz2 tarball.*download it again"):
        quiet_prepare(qm9_dir, download=False)
    assert not list(qm9_dir.glob("*.h5*"))


@needs_shared
def test_corrupt_archive_is_an_error_and_writes_no_cache(qm9_dir):
    (qm9_dir / "dsgdb9nsd.xyz.tar.bz2").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(DataError, match="not a complete bz2 tarball"):
        quiet_prepare(qm9_dir, download=False)
    assert not list(qm9_dir.glob("*.h5*"))


@needs_shared
def test_damaged_member_is_named(qm9_dir):
    members = {f"dsgdb9nsd_{i:06d}.xyz": xyz_text(i) for i in INDICES}
    members["dsgdb9nsd_023658.xyz"] = "\n".join(xyz_text(23658).split("\n")[:9])
    write_tarball(qm9_dir / "dsgdb9nsd.xyz.tar.bz2", members)
    with pytest.raises(DataError, match="dsgdb9nsd_023658.xyz"):
        quiet_prepare(qm9_dir, download=False)
    assert not list(qm9_dir.glob("*.h5*"))


@needs_shared
def test_missing_files_without_network_name_what_to_place_where(qm9_dir):
    (qm9_dir / "atomref.txt").unlink()
    with pytest.raises(OfflineError) as err:
        quiet_prepare(qm9_dir)
    message = str(err.value)
    assert "atomref.txt" in message and str(qm9_dir) in message and "3195395" in message
    assert "dsgdb9nsd.xyz.tar.bz2 (" not in message  # present files are not asked for
    assert not list(qm9_dir.glob("*.h5*"))


# ---------------------------------------------------------------------- split protocols
def _check_split(split, n, sizes):
    train, val, test = split
    assert (len(train), len(val), len(test)) == sizes
    union = np.concatenate([train, val, test])
    assert len(np.unique(union)) == len(union) and union.min() >= 0 and union.max() < n


@pytest.mark.parametrize("protocol,n,sizes", [
    (qm9_110k, 130_831, (110_000, 10_000, 10_831)),
    (qm9_dimenet, 130_831, (110_000, 10_000, 10_831)),
    (qm9_109k, 130_831, (109_000, 1_000, 20_831)),
    (qm9_110k, 133_885, (110_000, 10_000, 13_885)),  # uncharacterized kept
    (qm9_dimenet, 133_885, (110_000, 10_000, 10_831)),
])
def test_qm9_protocols_at_real_size(protocol, n, sizes):
    candidates = np.arange(n)
    first = protocol(candidates, seed=3)
    _check_split(first, n, sizes)
    again = protocol(candidates, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(protocol(candidates, seed=4)[0], first[0])


@pytest.mark.parametrize("name", ["qm9-110k", "qm9-dimenet", "qm9-109k"])
def test_qm9_protocols_scaled_through_make_split(tmp_path, name):
    candidates = np.arange(10, 60)
    split = make_split(candidates, name, 0, tmp_path, "fp", train=30, val=5, test=10)
    _check_split((split.train, split.val, split.test), 60, (30, 5, 10))
    assert set(split.train) <= set(candidates)
