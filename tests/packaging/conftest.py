"""The sdist and wheel, built once per test run for every packaging test."""

from __future__ import annotations

import pytest

from tests.packaging.installed import Dist, build


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    return build(tmp_path_factory.mktemp("dist"))
