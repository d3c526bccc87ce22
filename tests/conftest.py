"""The stand-ins built once for every test_standins* module."""

from __future__ import annotations

import pytest

from testbed import standins as S


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> S.StandIns:
    return S.build_all(tmp_path_factory.mktemp("standins"))
