"""Shared by the unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def nothing_kept(monkeypatch):
    """Commands keep no answer (roles.shell.KEEP_DIR), here and in the pyinfra runs the tests
    start: their stand-in tools answer differently from one run to the next, and a test run
    as root must not write /run/sdinfra. test_kept turns it on, in a folder of its own."""
    monkeypatch.setattr("roles.shell.KEEP_DIR", None)
    monkeypatch.setenv("SDINFRA_KEEP_DIR", "")
