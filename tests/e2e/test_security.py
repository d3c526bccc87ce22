"""
Exposure on the LAN, end to end: with webui_listen and a login, the web UI answers on the host's
network address and refuses requests without the login; without webui_listen nothing answers
there; the login never appears in what the run prints, in the files it writes beside the
secret, or in the host's process list.

A fleet of its own (one cpu host), so that the shared fleet's tests keep their defaults.
"""

from __future__ import annotations

import base64
import os
import shlex
import urllib.error
import urllib.parse
import urllib.request

import pytest

from testbed.hosts import remote, run_pyinfra, settings_for, ssh, write_settings
from tests.e2e.conftest import booted

LOGIN = "ada:correct-horse-battery-9"
ENV = "SDINFRA_E2E_LOGIN"


@pytest.fixture(scope="module")
def lan_fleet(tmp_path_factory, stand_ins):
    from testbed import standins

    with booted(tmp_path_factory, "lan", ["cpu1"]) as fleet:
        with standins.serve(stand_ins.root, [fleet.host("cpu1").gateway]) as server:
            ssh(fleet, "cpu1", "useradd -m alice")
            settings = settings_for(fleet, stand_ins, server, "cpu1")
            yield fleet, settings


def get(url: str, auth: str = "") -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        return urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as error:
        return error.code


def login(base: str, auth: str) -> int:
    """gradio's login form, then the app's info path with the cookie it set: the status of
    the login when it failed, else that of the app's page."""
    user, _, password = auth.partition(":")
    form = urllib.parse.urlencode({"username": user, "password": password}).encode()
    try:
        answer = urllib.request.urlopen(urllib.request.Request(f"{base}/login", data=form),
                                        timeout=5)
    except urllib.error.HTTPError as error:
        return error.code
    request = urllib.request.Request(f"{base}/standin.json")
    request.add_header("Cookie", answer.headers["set-cookie"].split(";")[0])
    return urllib.request.urlopen(request, timeout=5).status


def deploy(fleet, settings, **more):
    write_settings(fleet, {"cpu1": {**settings, **more}})
    os.environ[ENV] = LOGIN
    try:
        return run_pyinfra(fleet, "deploy/site.py", "-y", "--diff")
    finally:
        del os.environ[ENV]


def test_listen_without_login_is_refused_before_any_change(lan_fleet):
    fleet, settings = lan_fleet
    write_settings(fleet, {"cpu1": {**settings, "webui_listen": True}})
    result = run_pyinfra(fleet, "deploy/site.py", "-y")
    assert result.returncode != 0
    assert "host cpu1: webui_listen = True needs a login" in result.stderr
    assert ssh(fleet, "cpu1", "test -e /opt/stable-diffusion && echo yes || echo no").strip() \
        == "no"


def test_lan_exposure_needs_the_login_and_never_shows_it(lan_fleet):
    fleet, settings = lan_fleet
    address = fleet.host("cpu1").address
    result = deploy(fleet, settings, webui_listen=True, webui_auth_env=ENV, webui_api=True)
    assert result.returncode == 0, result.stderr[-3000:]

    base = f"http://{address}:7860"
    statuses = []
    for _ in range(20):  # the container may still be starting
        try:
            # gradio's login: the app's paths want the cookie of POST /login (HTTP Basic is
            # not gradio's); the API wants its own login (--api-auth), HTTP Basic.
            statuses = [get(f"{base}/standin.json"), login(base, "ada:wrong"),
                        login(base, LOGIN), get(f"{base}/sdapi/v1/options"),
                        get(f"{base}/sdapi/v1/options", "ada:wrong"),
                        get(f"{base}/sdapi/v1/options", LOGIN)]
            break
        except OSError:
            import time
            time.sleep(1)
    assert statuses == [401, 400, 200, 401, 401, 200]

    host = remote(fleet, "cpu1")
    secret = host.file("/opt/stable-diffusion/secrets/webui-auth")
    assert (secret.user, secret.group, secret.mode) == ("root", "root", 0o600)
    assert secret.content_string.strip() == LOGIN
    password = LOGIN.split(":")[1]
    assert password not in result.stdout + result.stderr
    for name in ("docker-compose.yml", "webui.env"):
        assert password not in host.file(f"/opt/stable-diffusion/{name}").content_string
    processes = host.check_output("ps -eo args")
    assert password not in processes
    # The web UI's launcher prints every argument it was given; the login was none of them,
    # nor in the container's environment or anything else Docker keeps about it.
    logs = ssh(fleet, "cpu1", "docker logs sdinfra_cpu_1 2>&1")
    assert "Launching Web UI with arguments: --listen" in logs
    assert password not in logs and "--api-auth" not in logs
    assert password not in ssh(fleet, "cpu1", "docker inspect sdinfra_cpu_1")
    assert password not in ssh(fleet, "cpu1", "docker exec sdinfra_cpu_1 cat /proc/1/environ")
    mounts = host.check_output("docker inspect -f '{{json .Mounts}}' sdinfra_cpu_1")
    assert '"Destination":"/run/secrets/webui-auth"' in mounts and '"RW":false' in mounts

    again = deploy(fleet, settings, webui_listen=True, webui_auth_env=ENV, webui_api=True)
    assert again.returncode == 0 and password not in again.stdout + again.stderr
    dry = run_pyinfra(fleet, "deploy/site.py", "--dry", "--diff")
    assert password not in dry.stdout + dry.stderr


def test_without_listen_nothing_answers_on_the_network_address(lan_fleet):
    fleet, settings = lan_fleet
    result = deploy(fleet, settings)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ssh(fleet, "cpu1", "test -e /opt/stable-diffusion/secrets/webui-auth && echo yes "
                              "|| echo no").strip() == "no"
    with pytest.raises(OSError):
        get(f"http://{fleet.host('cpu1').address}:7860/")
    local = ssh(fleet, "cpu1", "python3 -c " + shlex.quote(
        "import urllib.request, time\n"
        "for i in range(20):\n"
        "    try: print(urllib.request.urlopen('http://127.0.0.1:7860/').status); break\n"
        "    except Exception: time.sleep(1)\n"))
    assert local.strip() == "200"


def options(base: str, change: dict | None = None) -> dict:
    """The web UI's settings through its API (/sdapi/v1/options, the login of --api-auth),
    changed first when ``change`` is given; retried while the container starts."""
    import json
    import time

    for attempt in range(30):
        try:
            if change is not None:
                request = urllib.request.Request(f"{base}/sdapi/v1/options", method="POST",
                                                 data=json.dumps(change).encode())
                request.add_header("Content-Type", "application/json")
                request.add_header("Authorization", "Basic " + base64.b64encode(
                    LOGIN.encode()).decode())
                urllib.request.urlopen(request, timeout=5)
            request = urllib.request.Request(f"{base}/sdapi/v1/options")
            request.add_header("Authorization", "Basic " + base64.b64encode(
                LOGIN.encode()).decode())
            return json.loads(urllib.request.urlopen(request, timeout=5).read())
        except OSError:
            if attempt == 29:
                raise
            time.sleep(1)


def test_settings_survive_compose_down_and_a_new_image(lan_fleet, tmp_path):
    from testbed import standins

    fleet, settings = lan_fleet
    login = {"webui_listen": True, "webui_auth_env": ENV, "webui_api": True}
    assert deploy(fleet, settings, **login).returncode == 0
    base = f"http://{fleet.host('cpu1').address}:7860"
    assert options(base, {"jpeg_quality": 61})["jpeg_quality"] == 61
    project = "/opt/stable-diffusion"
    ssh(fleet, "cpu1", f"cd {project} && docker-compose -p sdinfra down")
    # Another release of the web UI: a new image, a new container.
    newer = standins.build_webui_image(tmp_path / "newer.tar", tag="sdinfra/webui-standin:newer",
                                       version="v1.10.2")
    result = deploy(fleet, settings, **login, webui_image=newer.tag,
                    webui_image_archive=str(newer.path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert options(base)["jpeg_quality"] == 61
    assert "Version: v1.10.2" in ssh(fleet, "cpu1", "docker logs sdinfra_cpu_1 2>&1")
    saved = ssh(fleet, "cpu1", f"cat {project}/data/config.json")
    assert '"jpeg_quality": 61' in saved
    # What the image carries under models/ is there too: no mount hides it.
    ssh(fleet, "cpu1", f"test -s {project}/models/VAE-approx/model.pt")
