"""
The end-to-end fleet: three real Debian 12 hosts (cpu1, rocm1, cuda1) booted with
systemd-nspawn, reached over SSH with host key checking on, provisioned by deploy/site.py.
The fleet, the stand-ins and the hosts' preparation are the test bed's (testbed/); these are
the pytest fixtures over them.
"""

from __future__ import annotations

import os

import pytest

from testbed import standins
from testbed.fleet import Fleet
from testbed.hosts import NAMES, prepare


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stand_ins(tmp_path_factory):
    return standins.build_all(tmp_path_factory.mktemp("standins"))


def booted(tmp_path_factory, label: str, names: list[str]) -> Fleet:
    """A fleet to use in a ``with`` block: up on entry, down on exit (also on failure)."""
    if os.geteuid() != 0:
        pytest.skip("the end-to-end fleet needs root")
    return Fleet(tmp_path_factory.mktemp(label), names)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    with booted(tmp_path_factory, "fleet", NAMES) as fleet:
        yield fleet


@pytest.fixture(scope="session")
def server(fleet, stand_ins):
    with standins.serve(stand_ins.root, [h.gateway for h in fleet.hosts] + ["127.0.0.1"]) as srv:
        yield srv


@pytest.fixture(scope="session")
def prepared(fleet, stand_ins, server):
    """The fleet before sdinfra (see prepare): cpu1, rocm1 with stand-in GPU device nodes, cuda1
    with the stand-in NVIDIA driver."""
    prepare(fleet, stand_ins, server, NAMES)
    return fleet
