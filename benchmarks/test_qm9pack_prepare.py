"""How long whole-QM9 preparation from the qm9pack wheel takes (``--source qm9pack``): the three CSV
tables (130,831 molecules, 225 MB) parsed, the dataset built and checked, the cache written, plus the
sha256 of every file against the wheel's RECORD. Goal: under 60 s on 2 cores.

Wall time depends on what else runs on the machine, so the CPU time of the process is reported too.

    pytest benchmarks/test_qm9pack_prepare.py --benchmark-columns=mean,stddev,rounds -s
"""

from __future__ import annotations

import time

import pytest

from eqbench.data.qm9 import N_CHARACTERIZED, QM9PACK_PARTS, prepare, qm9pack_files, read_qm9pack_csv

pytestmark = pytest.mark.skipif(not qm9pack_files(required=False),
                                reason="qm9pack is not installed (pip install 'eqbench[qm9]')")


def _timed(benchmark, label: str, fn):
    cpu = []

    def run():
        start = time.process_time()
        result = fn()
        cpu.append(time.process_time() - start)
        return result

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    wall = benchmark.stats.stats.mean
    benchmark.extra_info.update({"molecules": N_CHARACTERIZED, "wall_s": round(wall, 1), "cpu_s": round(cpu[0], 1)})
    print(f"\n{label}: {wall:.1f} s wall, {cpu[0]:.1f} s CPU for {N_CHARACTERIZED:,} molecules")
    return result


def test_parse_qm9pack_csv(benchmark):
    files = qm9pack_files()
    parsed = _timed(benchmark, "parse the CSV tables",
                    lambda: read_qm9pack_csv([files[name].path for name in QM9PACK_PARTS], progress=False))
    assert len(parsed.index) == N_CHARACTERIZED


def test_prepare_whole_from_qm9pack(benchmark, tmp_path):
    out = _timed(benchmark, "prepare (checksums, parse, build, validate, write cache)",
                 lambda: prepare(tmp_path, source="qm9pack", progress=False))
    assert out.is_file()
