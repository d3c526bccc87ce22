"""Tests of the web UI image stand-in of testbed/standins/: it must start, refuse and answer the
way the e2e tests rely on. See test_standins.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Sequence

import pytest

from testbed import standins as S
from tests.standins_helpers import IS_ROOT, needs_root, run


# ------------------------------------------------------------------------------------------
# web UI image


def read_image(path: Path):
    with tarfile.open(path) as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    return files


def test_image_archive_is_consistent(built):
    img = built.image
    assert img.path == built.root / built.image_path
    # Loaded on every test host: busybox, Debian's python3 and a zip of the modules it needs.
    assert img.path.stat().st_size < 16 * 1024 * 1024
    assert S.sha256_file(img.path) == img.sha256
    files = read_image(img.path)
    manifest = json.loads(files["manifest.json"])
    assert len(manifest) == 1
    m = manifest[0]
    assert m["RepoTags"] == ["sdinfra/webui-standin:test"]
    config_bytes = files[m["Config"]]
    assert m["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
    assert img.image_id == "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    config = json.loads(config_bytes)
    layers = [files[name] for name in m["Layers"]]
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]}
    assert config["rootfs"]["diff_ids"] == [img.layer_diff_id]
    assert config["os"] == "linux" and config["architecture"] == "amd64"
    c = config["config"]
    # As the real image's Dockerfile: WORKDIR /webui, ENTRYPOINT ["/bin/sh", "/sdinfra/start.sh"].
    assert c["Entrypoint"] == ["/bin/sh", "/sdinfra/start.sh"] and c["WorkingDir"] == "/webui"
    assert c["ExposedPorts"] == {"7860/tcp": {}}
    assert json.loads(files["repositories"]) == {
        "sdinfra/webui-standin": {"test": m["Layers"][0].split("/")[0]}}


def test_image_rootfs_contents(built, tmp_path):
    files = read_image(built.image.path)
    m = json.loads(files["manifest.json"])[0]
    (tmp_path / "layer.tar").write_bytes(files[m["Layers"][0]])
    with tarfile.open(tmp_path / "layer.tar") as layer:
        members = {mm.name: mm for mm in layer.getmembers()}
        busybox = layer.extractfile(members["bin/busybox"]).read()
        group = layer.extractfile(members["etc/group"]).read().decode()
        start = layer.extractfile(members["sdinfra/start.sh"]).read()
        launch = layer.extractfile(members["sdinfra/launch.py"]).read()
    assert members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    for applet in ("wget", "grep", "paste", "cp"):  # the healthcheck's and start.sh's
        assert members[f"bin/{applet}"].linkname == "busybox", applet
    assert members["tmp"].mode == 0o1777
    assert members["usr/bin/python"].issym() and members["usr/bin/python3"].issym()
    assert "webui/launch.py" in members and "webui/modules/cmd_args.py" in members
    assert "usr/lib/python3/dist-packages/torch/__init__.py" in members
    # The deploy's own start.sh and launch.py, where the compose file mounts them.
    assert start == S.START_SH.read_bytes() and launch == S.LAUNCH_PY.read_bytes()
    assert "video:x:44:" in group and "render" not in group
    (tmp_path / "busybox").write_bytes(busybox)
    assert not S._elf_has_interp(tmp_path / "busybox")  # static: runs in an empty rootfs
    assert S._elf_has_interp(Path(shutil.which("dpkg-deb")).resolve())  # the check works


@pytest.fixture(scope="module")
def image_root(built, tmp_path_factory) -> Path:
    """The image's root filesystem, unpacked (with the /dev/null docker would provide)."""
    root = tmp_path_factory.mktemp("imgroot")
    files = read_image(built.image.path)
    m = json.loads(files["manifest.json"])[0]
    layer_tar = root.parent / (root.name + ".layer.tar")
    layer_tar.write_bytes(files[m["Layers"][0]])
    run(["tar", "-x", "-f", layer_tar, "-C", root], check=True)
    if IS_ROOT:
        os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(root / "dev/null", 0o666)
    return root


# Run inside the image by its own python: the requests of a test, one after the other, with
# the cookie of a gradio login kept. Each step: [name, method, path, basic-login, body,
# form-login]; results {name: [status, body]}.
CLIENT = r"""
import base64, json, sys, urllib.error, urllib.parse, urllib.request
steps, port, cookie, out = json.load(open("/tmp/t/steps.json")), int(sys.argv[1]), "", {}
for name, method, path, basic, body, form in steps:
    data = None
    if form is not None:
        user, _, password = form.partition(":")
        data = urllib.parse.urlencode({"username": user, "password": password}).encode()
    elif body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if basic:
        request.add_header("Authorization", "Basic " + base64.b64encode(basic.encode()).decode())
    if cookie and name.startswith("in-"):
        request.add_header("Cookie", cookie)
    try:
        response = urllib.request.urlopen(request, timeout=5)
        code, text = response.status, response.read().decode()
        cookie = response.headers.get("set-cookie", cookie).split(";")[0]
    except urllib.error.HTTPError as error:
        code, text = error.code, error.read().decode()
    out[name] = [code, text]
json.dump(out, open("/tmp/t/out.json", "w"))
"""


def run_image(root: Path, env: dict, steps=(), *, auth_file: str | None = None,
              port: int = 7860, knobs: dict | None = None, data: str = "/data",
              devices: Sequence[str] = (), keep_data: bool = False, wait: float = 15,
              linger: float = 0):
    """Start the image's /sdinfra/start.sh in a chroot of the image (own network namespace, cwd
    /webui), wait for gradio's "Running on local URL" line, run ``steps`` from inside, stop it. Returns (exit status
    or None while it still ran ``linger`` seconds after the steps, log, {step: (status,
    body)})."""
    work = root / "tmp/t"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    if not keep_data and (root / data.lstrip("/")).exists():
        shutil.rmtree(root / data.lstrip("/"))
    (root / data.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for node in ("dev/kfd", "dev/dri", "dev/nvidiactl", "dev/nvidia0"):
        path = root / node
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for node in devices:
        (root / node).parent.mkdir(parents=True, exist_ok=True)
        (root / node).write_text("")
    if knobs is not None:
        (root / data.lstrip("/") / "sdinfra-standin.json").write_text(json.dumps(knobs))
    (work / "steps.json").write_text(json.dumps([list(s) + [None] * (6 - len(s)) for s in steps]))
    (work / "client.py").write_text(CLIENT)
    if auth_file is not None:
        (work / "auth").write_text(auth_file)
    tries = int(wait / 0.1)
    (work / "run.sh").write_text(f"""
ip link set lo up
cd /webui
/bin/sh /sdinfra/start.sh > /tmp/t/log 2>&1 &
ep=$!
i=0
until grep -q "^Running on local URL" /tmp/t/log 2>/dev/null; do
    i=$((i+1))
    [ $i -gt {tries} ] && kill $ep
    if ! kill -0 $ep 2>/dev/null; then
        wait $ep; echo $? > /tmp/t/exit; exit 0
    fi
    sleep 0.1
done
echo $i > /tmp/t/tries
python3 /tmp/t/client.py {port}
sleep {linger}
if kill -0 $ep 2>/dev/null; then kill $ep; wait $ep; else wait $ep; echo $? > /tmp/t/exit; fi
exit 0
""")
    full_env = {"PATH": "/usr/bin:/bin", "PYTHONHOME": "/usr", **env}
    r = run([shutil.which("unshare"), "-n", shutil.which("chroot"), root, "/bin/sh",
             "/tmp/t/run.sh"], env=full_env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    exit_file = work / "exit"
    status = int(exit_file.read_text()) if exit_file.exists() else None
    out = work / "out.json"
    responses = {k: tuple(v) for k, v in json.loads(out.read_text()).items()} if out.exists() else {}
    return status, (work / "log").read_text(), responses


image_test = pytest.mark.skipif(
    not IS_ROOT or shutil.which("unshare") is None or shutil.which("chroot") is None,
    reason="needs root, unshare and chroot")

CPU = {"SDINFRA_BACKEND": "cpu"}


@image_test
@pytest.mark.parametrize("form", ["space", "equals"])
def test_image_gradio_login_ping_and_launch_line(image_root, form):
    opt = ("--gradio-auth-path /tmp/t/auth" if form == "space"
           else "--gradio-auth-path=/tmp/t/auth")
    status, log, resp = run_image(
        image_root,
        {"COMMANDLINE_ARGS": f"--listen {opt} --lowvram --skip-torch-cuda-test",
         "SDINFRA_BACKEND": "rocm", "HSA_OVERRIDE_GFX_VERSION": "10.3.0"},
        [("ping", "GET", "/internal/ping"), ("anon", "GET", "/"),
         ("anon-json", "GET", "/standin.json"),
         ("basic", "GET", "/standin.json", "alice:s3cret-1"),
         ("wrong", "POST", "/login", None, None, "alice:nope"),
         ("bob", "POST", "/login", None, None, "bob:pw"),
         ("login", "POST", "/login", None, None, "alice:s3cret-1"),
         ("in-page", "GET", "/"), ("in-json", "GET", "/standin.json"),
         ("in-api", "GET", "/sdapi/v1/options")],
        auth_file="alice:s3cret-1\n  bob:pw , \n\n",
    )
    assert status is None, log
    assert resp["ping"] == (200, "{}")
    # gradio 3.41: the login page, not the app; its API answers 401 without the cookie; HTTP
    # Basic is not gradio's login.
    assert resp["anon"][0] == 200 and "log in" in resp["anon"][1]
    assert resp["anon-json"][0] == 401 and resp["basic"][0] == 401
    assert resp["wrong"][0] == 400 and resp["bob"][0] == 200  # "bob:pw" from "bob:pw , "
    assert resp["login"][0] == 200
    assert resp["in-page"][0] == 200 and '<code id="backend">rocm</code>' in resp["in-page"][1]
    info = json.loads(resp["in-json"][1])
    assert info["backend"] == "rocm" and info["auth"] == "on" and info["listen"] == "yes"
    assert resp["in-api"][0] == 404  # no --api
    assert "HSA_OVERRIDE_GFX_VERSION=10.3.0" in resp["in-page"][1]
    assert f"Launching Web UI with arguments: --listen {opt} --lowvram --skip-torch-cuda-test\n" \
        in log
    assert "Running on local URL:  http://0.0.0.0:7860" in log
    assert "s3cret-1" not in log + "".join(b for _, b in resp.values())


@image_test
def test_image_prints_every_argument_as_the_launcher_does(image_root):
    """The upstream launcher's line shows --api-auth's value: why the deploy keeps it out."""
    status, log, resp = run_image(
        image_root, {"COMMANDLINE_ARGS": "--api --api-auth 'api:apis ecret' --skip-torch-cuda-test",
                     **CPU},
        [("anon", "GET", "/sdapi/v1/options"), ("ok", "GET", "/sdapi/v1/options", "api:apis ecret"),
         ("bad", "GET", "/sdapi/v1/options", "api:nope")])
    assert status is None, log
    # shlex.split of COMMANDLINE_ARGS: the quoted word stays one argument.
    assert "with arguments: --api --api-auth api:apis ecret --skip-torch-cuda-test" in log
    assert resp["anon"][0] == 401 and resp["bad"][0] == 401 and resp["ok"][0] == 200
    # Without --listen gradio binds 127.0.0.1.
    assert "Running on local URL:  http://127.0.0.1:7860" in log


@image_test
@pytest.mark.parametrize("args,message", [
    ("--listen --bogus", "launch.py: error: unrecognized arguments: --bogus"),
    ("--listen --port", "launch.py: error: argument --port: expected one argument"),
    ("--port seven", "launch.py: error: argument --port: invalid int value: 'seven'"),
])
def test_image_refuses_what_cmd_args_refuses(image_root, args, message):
    status, log, resp = run_image(image_root, {"COMMANDLINE_ARGS": f"{args} --skip-torch-cuda-test",
                                               **CPU})
    assert status == 2 and message in log and "usage: launch.py [-h]" in log, log
    assert resp == {}


@image_test
def test_image_abbreviated_flag_is_the_flag(image_root):
    status, log, _ = run_image(image_root, {"COMMANDLINE_ARGS": "--liste --skip-torch-cuda-test",
                                            **CPU})
    assert status is None and "http://0.0.0.0:7860" in log, log


@image_test
@pytest.mark.parametrize("login,error", [
    ("api:pass:word", "ValueError: too many values to unpack (expected 2)"),
    ("api", "ValueError: not enough values to unpack (expected 2, got 1)"),
])
def test_image_api_login_split_as_api_py_does(image_root, login, error):
    status, log, _ = run_image(
        image_root, {"COMMANDLINE_ARGS": f"--api --api-auth {login} --skip-torch-cuda-test", **CPU},
        linger=1.5)
    assert status == 1 and error in log, log


@image_test
def test_image_api_login_comma_makes_two(image_root):
    status, log, resp = run_image(
        image_root, {"COMMANDLINE_ARGS": "--api --api-auth a:x,y:z --skip-torch-cuda-test", **CPU},
        [("a", "GET", "/sdapi/v1/options", "a:x"), ("y", "GET", "/sdapi/v1/options", "y:z"),
         ("whole", "GET", "/sdapi/v1/options", "a:x,y:z")])
    assert status is None, log
    assert resp["a"][0] == 200 and resp["y"][0] == 200 and resp["whole"][0] == 401


@image_test
def test_image_gradio_login_without_colon_stops_the_start(image_root):
    status, log, _ = run_image(
        image_root, {"COMMANDLINE_ARGS": "--gradio-auth-path /tmp/t/auth --skip-torch-cuda-test",
                     **CPU}, auth_file="no-colon-here\n")
    assert status == 1 and "IndexError" in log, log
    assert "no-colon-here" not in log


@image_test
@pytest.mark.parametrize("backend,devices,ok", [
    ("rocm", [], False), ("rocm", ["dev/kfd"], False), ("rocm", ["dev/kfd", "dev/dri/renderD128"], True),
    ("cuda", [], False), ("cuda", ["dev/nvidiactl", "dev/nvidia0"], True), ("cpu", [], False),
])
def test_image_gpu_test_as_the_launcher_runs_it(image_root, backend, devices, ok):
    """launch_utils.py: torch.cuda.is_available() false stops the start unless
    --skip-torch-cuda-test; the stand-in torch answers from the devices there."""
    status, log, resp = run_image(image_root, {"COMMANDLINE_ARGS": "--listen",
                                               "SDINFRA_BACKEND": backend},
                                  [("page", "GET", "/")], devices=devices)
    if ok:
        assert status is None and '<code id="gpu">True</code>' in resp["page"][1], log
    else:
        assert status == 1, log
        assert "RuntimeError: Torch is not able to use GPU; add --skip-torch-cuda-test" in log
        assert "Launching Web UI" not in log
    status, log, _ = run_image(image_root, {"COMMANDLINE_ARGS": "--skip-torch-cuda-test",
                                            "SDINFRA_BACKEND": backend}, devices=devices)
    assert status is None, log


@needs_root
def test_image_torch_answers_as_status_tooling_asks(image_root):
    ask = ("import torch; print(torch.cuda.is_available(), torch.version.hip is not None, "
           "torch.version.cuda)")
    (image_root / "dev/kfd").write_text("")
    (image_root / "dev/dri").mkdir(exist_ok=True)
    (image_root / "dev/dri/renderD128").write_text("")
    try:
        r = run([shutil.which("chroot"), image_root, "python3", "-c", ask],
                env={"PATH": "/usr/bin:/bin", "PYTHONHOME": "/usr", "SDINFRA_BACKEND": "rocm"})
        assert r.returncode == 0 and r.stdout == "True True None\n", r.stderr
        (image_root / "dev/kfd").unlink()
        r = run([shutil.which("chroot"), image_root, "python3", "-c", ask],
                env={"PATH": "/usr/bin:/bin", "PYTHONHOME": "/usr", "SDINFRA_BACKEND": "rocm"})
        assert r.stdout == "False True None\n" and r.stderr == ""
    finally:
        shutil.rmtree(image_root / "dev/dri")
        if (image_root / "dev/kfd").exists():
            (image_root / "dev/kfd").unlink()


@image_test
def test_image_settings_in_the_data_dir_through_the_options_api(image_root):
    args = {"COMMANDLINE_ARGS": "--api --data-dir /srv/data --skip-torch-cuda-test", **CPU}
    status, log, resp = run_image(
        image_root, args, [("set", "POST", "/sdapi/v1/options", None, {"jpeg_quality": 61}),
                           ("get", "GET", "/sdapi/v1/options")], data="/srv/data")
    assert status is None, log
    assert resp["set"] == (200, "null") and json.loads(resp["get"][1])["jpeg_quality"] == 61
    saved = json.loads((image_root / "srv/data/config.json").read_text())
    assert saved == {"jpeg_quality": 61}
    assert (image_root / "srv/data/ui-config.json").exists()
    # A new start reads it back (modules/shared_init.py: opts.load).
    status, log, resp = run_image(image_root, args, [("get", "GET", "/sdapi/v1/options")],
                                  data="/srv/data", keep_data=True)
    assert json.loads(resp["get"][1]) == {"jpeg_quality": 61}


@image_test
def test_image_knobs_exit_at_start_per_version(image_root):
    knobs = {"versions": {"v1.10.1": {"exit": {"code": 3, "log": "stand-in: bad release"}},
                          "v9.9.9": {"start_delay": 0}}}
    args = "--data-dir /data --skip-torch-cuda-test"
    status, log, _ = run_image(image_root, {"COMMANDLINE_ARGS": args, **CPU}, knobs=knobs)
    assert status == 3 and "stand-in: bad release" in log
    assert f"Launching Web UI with arguments: {args}" in log
    status, log, _ = run_image(image_root, {"COMMANDLINE_ARGS": args,
                                            "SDINFRA_STANDIN_VERSION": "v9.9.9", **CPU}, knobs=knobs)
    assert status is None and "Version: v9.9.9" in log, log


@image_test
def test_image_knobs_start_delay_and_unhealthy_after(image_root):
    status, log, resp = run_image(
        image_root, {"COMMANDLINE_ARGS": "--data-dir /data --skip-torch-cuda-test", **CPU},
        [("ping", "GET", "/internal/ping")], knobs={"start_delay": 3, "unhealthy_after": 0})
    assert status is None, log
    assert int((image_root / "tmp/t/tries").read_text()) > 10  # polled, refused, for a while
    assert float(re.search(r"Startup time: ([0-9.]+)s", log).group(1)) >= 3
    assert resp["ping"][0] == 503 and "turned unhealthy" in log


@image_test
def test_the_deploys_start_files_keep_the_api_login_out_of_sight(image_root, tmp_path):
    """roles/webui's start.sh and launch.py, mounted as the compose file mounts them, with the
    stand-in: the API wants the login, and neither the launch line, the process arguments
    nor its environment hold it."""
    from roles.webui import render
    from tests.unit.test_webui import values

    rendered = render(values(webui_api=True), "cpu", auth=True,
                      extra_args=["--skip-torch-cuda-test"])
    (image_root / "sdinfra").mkdir(exist_ok=True)
    for name in ("start.sh", "launch.py"):
        (image_root / "sdinfra" / name).write_text(rendered[name])
    (image_root / "run/secrets").mkdir(parents=True, exist_ok=True)
    (image_root / "run/secrets/webui-auth").write_text("ada:pass word-7\nbob:x\n")
    env = dict(line.split("=", 1) for line in rendered["webui.env"].splitlines()
               if line and not line.startswith("#"))
    env = {key: value.strip("'") for key, value in env.items()}
    shutil.rmtree(image_root / "data", ignore_errors=True)
    (image_root / "data/models").mkdir(parents=True)  # the compose file's mount
    status, log, resp = run_image(image_root, {**env, "SDINFRA_BACKEND": "cpu"}, [
        ("anon", "GET", "/sdapi/v1/options"), ("ada", "GET", "/sdapi/v1/options",
                                               "ada:pass word-7"),
        ("bob", "GET", "/sdapi/v1/options", "bob:x")], keep_data=True)
    assert status is None, log
    assert resp["anon"][0] == 401 and resp["ada"][0] == 200 and resp["bob"][0] == 200
    launch = next(line for line in log.splitlines() if line.startswith("Launching Web UI"))
    assert launch == "Launching Web UI with arguments: " + env["COMMANDLINE_ARGS"]
    assert "--api-auth" not in log and "pass word" not in log
    # What the image carries under models/ is in the data directory's models/.
    assert (image_root / "data/models/VAE-approx/model.pt").exists()


# ------------------------------------------------------------------------------------------
# what a stand-in build reads (image_build.py)


def test_build_sources_are_a_pullable_base_a_fetchable_tree_and_a_checked_wheel(tmp_path):
    from roles.webui.formats import torch_command_problem
    from testbed.standins import image_build

    sources = image_build.build_sources(tmp_path, wheel_bytes=3 << 20)
    repo = tmp_path / "v2/library/python"
    manifest_bytes = (repo / "manifests/3.10-slim-bookworm").read_bytes()
    assert sources.base_manifest_digest == "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    assert (repo / "manifests" / sources.base_manifest_digest).read_bytes() == manifest_bytes
    manifest = json.loads(manifest_bytes)
    for blob in [manifest["config"], *manifest["layers"]]:  # what dockerd verifies on a pull
        data = (repo / "blobs" / blob["digest"]).read_bytes()
        assert (len(data), "sha256:" + hashlib.sha256(data).hexdigest()) == (blob["size"],
                                                                              blob["digest"])
    config = json.loads((repo / "blobs" / manifest["config"]["digest"]).read_bytes())
    layer = gzip.decompress((repo / "blobs" / manifest["layers"][0]["digest"]).read_bytes())
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        names = set(tf.getnames())
    # The programs the Dockerfile's RUN lines call; not the web UI, which the build fetches.
    assert {"usr/bin/git", "usr/bin/apt-get", "usr/lib/python3/dist-packages/pip/__main__.py",
            "usr/lib/python3/dist-packages/transformers/__init__.py", "bin/wget",
            "bin/sha256sum"} <= names
    assert not [n for n in names if n.startswith("webui/")]
    with tarfile.open(tmp_path / sources.webui_repo_path / "standin-archive/v1.10.1.tar") as tf:
        assert {"launch.py", "webui.py", "modules/launch_utils.py"} <= set(tf.getnames())
    # Every torch index serves the same checked wheel, and the torch command is a valid setting.
    for path in sources.wheel_paths():
        wheel = tmp_path / path.lstrip("/")
        assert wheel.stat().st_size == 3 << 20
        assert S.sha256_file(wheel) == sources.wheel_sha256
        assert Path(f"{wheel}.sha256").read_text().split() == [sources.wheel_sha256]
    command = sources.torch_command("http://192.0.2.1:40000", "cu121")
    assert torch_command_problem(command) is None
    assert command.endswith("--extra-index-url http://192.0.2.1:40000/whl/cu121")
    # Deterministic: the same bytes on every machine, so a wheel's sha256 is a constant.
    again = image_build.build_sources(tmp_path / "again", wheel_bytes=3 << 20)
    assert (again.wheel_sha256, again.base_manifest_digest) == (sources.wheel_sha256,
                                                                sources.base_manifest_digest)
