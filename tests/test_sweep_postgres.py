"""The same exactly-once guarantees with PostgreSQL storage (many machines): a throwaway server on loopback.

Skipped, with the reason, only when no server can be started (no psycopg2, no PostgreSQL binaries).
"""

import pytest
from optuna.trial import TrialState

from eqbench.cli import main
from tests.sweep_fixtures import assert_exactly_once, claim_race, load, postgres_server, write_sweep


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url_or_reason:
        if not url_or_reason.startswith("postgresql"):
            pytest.skip(f"no PostgreSQL server: {url_or_reason}")
        yield url_or_reason


def test_concurrent_claims_on_postgres_are_exclusive(tmp_path, postgres_url):
    claim_race(tmp_path, postgres_url)


def test_two_workers_on_one_postgres_study_run_disjoint_cells(tmp_path, postgres_url):
    spec_path = write_sweep(tmp_path, {"model.representation.init_args.n_features": [6, 10]}, seeds=[0, 1],
                            name="tiny_pg")
    runs = tmp_path / "runs"
    assert main(["sweep", "run", str(spec_path), "--runs-dir", str(runs), "--workers", "2",
                 "--storage", postgres_url]) == 0
    spec, study = load(spec_path, postgres_url)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert_exactly_once(spec, study)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers should have run trials"
    assert not (runs / "tiny_pg" / "study.db").exists(), "no SQLite file when a storage URL is given"
