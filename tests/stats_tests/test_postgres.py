"""compare() on PostgreSQL: the same real studies as the SQLite tests, on a server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import optuna
import pytest
import scipy.stats
from stats_tests.conftest import DEMO_SEEDS
from stats_tests.conftest import build_demo

from bilevel_optuna.stats import compare

pytestmark = pytest.mark.postgres

# SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; name the installed driver.
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_demo() -> Iterator[tuple[str, str]]:
    """Build the demo studies under a unique prefix; delete them afterwards."""
    prefix = f"stats-{uuid.uuid4().hex[:8]}-"
    storage = optuna.storages.RDBStorage(POSTGRES_URL)
    try:
        build_demo(storage, prefix=prefix)
        yield POSTGRES_URL, prefix
    finally:
        for name in optuna.get_all_study_names(storage=storage):
            if name.startswith(prefix):
                optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()


def test_compare_on_postgres(postgres_demo: tuple[str, str]) -> None:
    url, prefix = postgres_demo
    result = compare(url, run=f"{prefix}demo")
    assert list(result.arms) == ["far", "mid", "near"]
    assert all(arm.n == len(DEMO_SEEDS) for arm in result.arms.values())
    far = [
        optuna.load_study(study_name=f"{prefix}demo-far-{s}", storage=url).best_value
        for s in DEMO_SEEDS
    ]
    near = [
        optuna.load_study(study_name=f"{prefix}demo-near-{s}", storage=url).best_value
        for s in DEMO_SEEDS
    ]
    c = result.comparison("far", "near")
    assert c.pvalue == pytest.approx(scipy.stats.wilcoxon(far, near).pvalue)
    by_pattern = compare(url, arms={"near": f"{prefix}demo-near-*", "far": f"{prefix}demo-far-*"})
    assert by_pattern.comparison("far", "near").pvalue == pytest.approx(c.pvalue)
    assert "## Claims" in result.to_markdown()
