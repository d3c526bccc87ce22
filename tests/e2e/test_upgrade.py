"""
Upgrades that cannot take a host down, end to end, on a fleet of its own (u-cpu1, u-cpu2, both
on the stand-in web UI v1.10.1, ``sdinfra/webui-standin:test``):

1. both asked for v1.10.2, whose stand-in on u-cpu1 exits at start (its control file): u-cpu1
   is rolled back (the summary says so, that host fails, the run's exit says so), answers on
   its port with v1.10.1 on its old compose and env files; u-cpu2 ends healthy on v1.10.2 and
   the v1.10.1 image is gone there, but for a tag of the user's on the same image;
2. the next run, v1.10.2 still asked, tries again (the image kept, not loaded again) and rolls
   back again; a run asking v1.10.1 again for u-cpu1 changes nothing there;
3. both asked for v1.10.3 (good): each ends healthy on it; on u-cpu1 v1.10.1 (the previous)
   and v1.10.2 (the failed one) are gone once v1.10.3 was healthy, on u-cpu2 v1.10.2 (the
   previous) is gone and v1.10.1 (two back) long gone; the run after changes nothing;
4. v1.10.4, which on u-cpu2 never answers (its control file: a start that takes an hour), with
   webui_start_timeout at 30 s: u-cpu2 is rolled back when the wait runs out, u-cpu1 ends
   healthy on v1.10.4.
"""

from __future__ import annotations

import json
import shlex

import pytest

from testbed import standins
from testbed.hosts import prepare, settings_for, ssh, write_settings
from tests.e2e.conftest import booted
from tests.e2e.test_faults import changed, report, site, summary

NAMES = ["u-cpu1", "u-cpu2"]
DIR = "/opt/stable-diffusion"
MINE = "mine/webui:kept"  # a tag of the user's on the v1.10.1 image, on u-cpu2


@pytest.fixture(scope="module")
def upgrade_fleet(tmp_path_factory, stand_ins):
    images = tmp_path_factory.mktemp("upgrade-images")
    releases = {"v1.10.1": stand_ins.image}
    for version in ("v1.10.2", "v1.10.3", "v1.10.4"):
        releases[version] = standins.build_webui_image(
            images / f"{version}.tar", tag=f"sdinfra/webui-standin:{version}", version=version)
    with booted(tmp_path_factory, "upgrade-fleet", NAMES) as fleet:
        addresses = [h.gateway for h in fleet.hosts] + ["127.0.0.1"]
        with standins.serve(stand_ins.root, addresses) as server:
            prepare(fleet, stand_ins, server, NAMES)
            data = {name: settings_for(fleet, stand_ins, server, name) for name in NAMES}
            write_settings(fleet, data)
            first = site(fleet)
            assert first.returncode == 0, first.stderr[-3000:]
            assert {n: row[2] for n, row in summary(first).items()} == \
                {n: "healthy" for n in NAMES}
            # The stand-in v1.10.2 exits at start on u-cpu1 only (the control file in its data
            # directory, read at each start: testbed/standins.py).
            ssh(fleet, "u-cpu1", f"printf '%s' {shlex.quote(json.dumps(BAD))} > "
                                 f"{DIR}/data/sdinfra-standin.json")
            ssh(fleet, "u-cpu2", f"docker tag {stand_ins.image.tag} {MINE}")
            yield fleet, data, releases


BAD = {"versions": {"v1.10.2": {"exit": {"code": 3, "log": "sdinfra stand-in: v1.10.2 "
                                                           "cannot start (control file)"}}}}


def ask(fleet, data, releases, **versions) -> None:
    """Settings asking each host (u_cpu1=VERSION) for a release of the stand-in."""
    for key, version in versions.items():
        image = releases[version]
        data[key.replace("_", "-")].update(webui_image=image.tag,
                                            webui_image_archive=str(image.path))
    write_settings(fleet, data)


def answers(fleet, name: str) -> str:
    """The release the web UI answering on the host's port says it is (asked on the host)."""
    page = ssh(fleet, name, "curl -sf http://127.0.0.1:7860/ 2>/dev/null || python3 -c "
                            "'import urllib.request; print(urllib.request.urlopen("
                            "\"http://127.0.0.1:7860/\", timeout=10).read().decode())'")
    return page.split('<code id="version">', 1)[1].split("<", 1)[0]


def images(fleet, name: str) -> set[str]:
    out = ssh(fleet, name, "docker image ls --format '{{.Repository}}:{{.Tag}}'")
    return {line for line in out.split() if line != "<none>:<none>"}


def project_sums(fleet, name: str) -> str:
    return ssh(fleet, name, f"cd {DIR} && sha256sum docker-compose.yml webui.env")


@pytest.fixture(scope="module")
def bad_upgrade(upgrade_fleet):
    fleet, data, releases = upgrade_fleet
    before = project_sums(fleet, "u-cpu1")
    ask(fleet, data, releases, u_cpu1="v1.10.2", u_cpu2="v1.10.2")
    return site(fleet), before


def test_a_new_version_that_does_not_turn_healthy_is_rolled_back(upgrade_fleet, bad_upgrade):
    fleet, _, _ = upgrade_fleet
    result, before = bad_upgrade
    table = summary(result)
    status = table["u-cpu1"][2]
    assert status.startswith("rolled back: sdinfra/webui-standin:v1.10.2 "), \
        result.stderr[-3000:]
    # Seen exited, restarting or running again after a restart (Docker then says exit code 0).
    assert ("exited with code 3" in status or "restarted" in status) and \
        status.endswith("sdinfra/webui-standin:test runs again"), status
    # That host failed, the run says so; the other went on.
    assert result.returncode != 0
    assert report(result)["failed_hosts"] == ["u-cpu1"]
    assert table["u-cpu2"][2] == "healthy", result.stderr[-3000:]
    # The new container's own words under the table.
    details = result.stderr.split("--> sdinfra summary:", 1)[1]
    assert "u-cpu1: the container's last log lines:" in details
    assert "v1.10.2 cannot start (control file)" in details
    # u-cpu1 serves the old release on its old files.
    assert answers(fleet, "u-cpu1") == "v1.10.1"
    assert project_sums(fleet, "u-cpu1") == before
    assert ssh(fleet, "u-cpu1", "docker inspect -f '{{.State.Health.Status}}' sdinfra_cpu_1"
               ).strip() == "healthy"
    # Both images kept there: the old one runs, the new one is for the next try.
    assert {"sdinfra/webui-standin:test", "sdinfra/webui-standin:v1.10.2"} <= \
        images(fleet, "u-cpu1")
    assert not ssh(fleet, "u-cpu1", f"ls -A {DIR} | grep sdinfra-new || true").strip()


def test_a_good_upgrade_removes_the_previous_image_but_no_image_of_the_users(upgrade_fleet,
                                                                           bad_upgrade):
    fleet, _, _ = upgrade_fleet
    assert answers(fleet, "u-cpu2") == "v1.10.2"
    found = images(fleet, "u-cpu2")
    assert "sdinfra/webui-standin:v1.10.2" in found
    assert "sdinfra/webui-standin:test" not in found  # healthy once: the previous is gone
    assert MINE in found  # the user's tag of the same image stays


def test_the_next_run_tries_again_and_asking_the_old_version_changes_nothing(upgrade_fleet,
                                                                            bad_upgrade):
    fleet, data, releases = upgrade_fleet
    again = site(fleet)
    assert summary(again)["u-cpu1"][2].startswith("rolled back: "), again.stderr[-3000:]
    assert summary(again)["u-cpu2"][2] == "healthy"
    # The new image was kept: nothing uploaded or loaded again.
    assert not [op for op in changed(again, "u-cpu1") if "load image" in op]
    assert changed(again, "u-cpu2") == []
    ask(fleet, data, releases, u_cpu1="v1.10.1")
    back = site(fleet)
    assert back.returncode == 0, back.stderr[-3000:]
    assert changed(back, "u-cpu1") == [] and changed(back, "u-cpu2") == []
    assert {n: row[2] for n, row in summary(back).items()} == {n: "healthy" for n in NAMES}
    assert answers(fleet, "u-cpu1") == "v1.10.1"


def test_a_good_upgrade_ends_healthy_and_prunes_what_it_replaced(upgrade_fleet, bad_upgrade):
    fleet, data, releases = upgrade_fleet
    ask(fleet, data, releases, u_cpu1="v1.10.3", u_cpu2="v1.10.3")
    result = site(fleet)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {n: row[2] for n, row in summary(result).items()} == {n: "healthy" for n in NAMES}
    for name in NAMES:
        assert answers(fleet, name) == "v1.10.3"
        ours = {i for i in images(fleet, name) if i.startswith("sdinfra/")}
        assert ours == {"sdinfra/webui-standin:v1.10.3"}, (name, ours)
        assert ssh(fleet, name, f"cat {DIR}/.sdinfra/images").split() == \
            ["sdinfra/webui-standin:v1.10.3"]
        assert ssh(fleet, name, f"test -e {DIR}/.sdinfra/previous || echo gone").strip() == "gone"
    assert MINE in images(fleet, "u-cpu2")
    after = site(fleet)
    assert after.returncode == 0
    assert changed(after, "u-cpu1") == [] and changed(after, "u-cpu2") == []


def test_a_new_version_still_starting_when_the_wait_runs_out_is_rolled_back(upgrade_fleet,
                                                                            bad_upgrade):
    fleet, data, releases = upgrade_fleet
    slow = {"versions": {"v1.10.4": {"start_delay": 3600}}}
    ssh(fleet, "u-cpu2", f"printf '%s' {shlex.quote(json.dumps(slow))} > "
                         f"{DIR}/data/sdinfra-standin.json")
    before = project_sums(fleet, "u-cpu2")
    data["u-cpu2"]["webui_start_timeout"] = 30
    ask(fleet, data, releases, u_cpu1="v1.10.4", u_cpu2="v1.10.4")
    result = site(fleet)
    table = summary(result)
    assert table["u-cpu2"][2] == ("rolled back: sdinfra/webui-standin:v1.10.4 still starting "
                                  "after 30 s; sdinfra/webui-standin:v1.10.3 runs again"), \
        result.stderr[-3000:]
    assert table["u-cpu1"][2] == "healthy"
    assert report(result)["failed_hosts"] == ["u-cpu2"]
    assert answers(fleet, "u-cpu2") == "v1.10.3" and answers(fleet, "u-cpu1") == "v1.10.4"
    assert project_sums(fleet, "u-cpu2") == before  # start_period back to 900 s, too
