"""How long whole-QM9 preparation takes, measured on a synthetic tarball in the published format.

The real archive cannot be downloaded where the tests run, so this builds N molecules from the 12
real files (qm9_synthetic.py), times the parser and the whole preparation (parse, build and check
the dataset, write the cache), and extrapolates linearly to the 133,885 published molecules. It
also times bz2 decompression alone: the synthetic archive compresses better than the real one (360
against 643 compressed bytes per molecule), so decompression is also extrapolated by compressed
size, as an upper estimate.

    pytest benchmarks/test_qm9_prepare.py --benchmark-columns=mean,stddev,rounds
    EQBENCH_BENCH_QM9_N=50000 pytest benchmarks/ ...      # more molecules (default 20,000)
"""

from __future__ import annotations

import bz2
import os
import shutil
import warnings

import pytest
from qm9_synthetic import SHARED_QM9, write_synthetic_tarball

from eqbench.data.download import SourceChecksumWarning
from eqbench.data.qm9 import N_PUBLISHED, TARBALL, prepare, read_tarball

N = int(os.environ.get("EQBENCH_BENCH_QM9_N", 20_000))
REAL_COMPRESSED = TARBALL.checksums[0].size  # 86,144,227 bytes

pytestmark = pytest.mark.skipif(not SHARED_QM9.is_dir(), reason=f"real QM9 samples not found at {SHARED_QM9}")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qm9")
    text_bytes = write_synthetic_tarball(directory / "dsgdb9nsd.xyz.tar.bz2", N)
    for name in ("atomref.txt", "uncharacterized.txt"):
        shutil.copyfile(SHARED_QM9 / name, directory / name)
    return directory, text_bytes


def _report(benchmark, label: str, per_molecule_s: float, extra: dict | None = None) -> None:
    benchmark.extra_info.update({"molecules": N, "per_molecule_us": round(per_molecule_s * 1e6, 1),
                                 "extrapolated_133885_s": round(per_molecule_s * N_PUBLISHED, 1), **(extra or {})})
    print(f"\n{label}: {per_molecule_s * 1e6:.0f} µs per molecule -> {per_molecule_s * N_PUBLISHED:.0f} s for "
          f"{N_PUBLISHED:,} molecules ({extra or ''})")


def test_bz2_decompression(benchmark, synthetic):
    directory, _ = synthetic
    path = directory / "dsgdb9nsd.xyz.tar.bz2"
    compressed = path.stat().st_size

    def decompress():
        with bz2.open(path) as f:
            while f.read(1 << 20):
                pass

    benchmark.pedantic(decompress, rounds=3, iterations=1)
    per_byte = benchmark.stats.stats.mean / compressed
    _report(benchmark, "bz2 decompression", benchmark.stats.stats.mean / N,
            {"compressed_bytes_per_molecule": round(compressed / N),
             "extrapolated_by_compressed_size_s": round(per_byte * REAL_COMPRESSED, 1)})


def test_parse_tarball(benchmark, synthetic):
    directory, _ = synthetic
    parsed = benchmark.pedantic(read_tarball, args=(directory / "dsgdb9nsd.xyz.tar.bz2",), rounds=3, iterations=1)
    assert len(parsed.index) == N
    _report(benchmark, "parse tarball", benchmark.stats.stats.mean / N)


def test_prepare_whole(benchmark, synthetic, tmp_path):
    directory, _ = synthetic

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SourceChecksumWarning)  # synthetic, not the published files
            return prepare(directory, out=tmp_path / "qm9.h5", download=False)

    out = benchmark.pedantic(run, rounds=2, iterations=1)
    assert out.is_file()
    _report(benchmark, "prepare (parse, build, validate, write cache)", benchmark.stats.stats.mean / N)
