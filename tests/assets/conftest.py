"""Every asset suite materializes through Dagster against simulators or a lake on disk: together they are
two thirds of the suite's time, so ``make test-fast`` leaves them to ``make test`` (CI runs them all)."""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/assets/" in str(item.path):
            item.add_marker(pytest.mark.slow)
