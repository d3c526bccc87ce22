"""Build once for a fleet (roles.webui.fleet): with cache_host, the first host of a tag builds
it and pushes it to the cache host's registry, the others pull it, a host that has it does
neither; without cache_host nothing of this is asked or run."""

import subprocess

import yaml

from roles.webui import fleet, upgrade
from roles.webui.state import ProjectState, docker_state
from roles.parsers import parts
from roles.webui.state import DOCKER_PARTS
from tests.unit.fakehost import plan
from tests.unit.test_webui import converged_cpu, docker_lines, stack_state

CACHE = "10.0.0.5"
REGISTRY = f"{CACHE}:5000"
BUILD = "Stable Diffusion web UI | Build {image} once for the fleet and push it to " + REGISTRY
START = "Stable Diffusion web UI | Start the cpu service"


def image_of(files) -> str:
    return yaml.safe_load(files["docker-compose.yml"][0])["services"]["cpu"]["image"]


def host(name, *, running=("cpu",), has_image=True, pushed=False, **settings):
    """A cpu host with the project's files; ``running``: its service runs; ``has_image``: it
    has the image its compose file names; ``pushed``: the registry has it (the fact's part)."""
    found, files = converged_cpu(name, running=running, **settings)
    image = image_of(files)
    lines = stack_state(files, running=running)
    lines += docker_lines({}, images=[image] if has_image else [])
    if pushed:
        lines += ["### registry", fleet.remote_name(REGISTRY, image)]
    return found.override("echo '### project-state'", lines), image


def webui(result, name) -> list[str]:
    """The web UI's operations that change ``name`` (the cache role has its own)."""
    return [op for op in result.changes(name) if op.startswith("Stable Diffusion web UI |")]


def fact_command(result, name) -> str:
    return next(c for c in result.commands[name] if "echo '### project-state'" in c)


def builder_and_other(result, image):
    """Which host got the build (pyinfra plans the hosts concurrently: the first to ask)."""
    built = [n for n in ("a", "b") if BUILD.format(image=image) in result.changes(n)]
    assert len(built) == 1, webui(result, "a") + webui(result, "b")
    return built[0], "b" if built[0] == "a" else "a"


def test_one_host_of_a_tag_builds_and_pushes_it_and_the_other_pulls_it():
    a, image = host("a", running=(), has_image=False, cache_host=CACHE)
    b, same = host("b", running=(), has_image=False, cache_host=CACHE)
    assert same == image  # the same settings: the same tag
    result = plan("deploy/cpu.py", [a, b])
    assert result.returncode == 0, result.output
    builder, other = builder_and_other(result, image)
    assert webui(result, builder) == [BUILD.format(image=image), START]
    assert webui(result, other) == [START]
    # The push before any start: pyinfra runs each operation on every host before the next.
    order = [op["name"] for op in result.ops]
    assert order.index(BUILD.format(image=image)) < order.index(START)
    remote = f"{REGISTRY}/{image}"
    # Only the builder asks the registry, in its one state read.
    assert f"docker manifest inspect --insecure {remote}" in fact_command(result, builder)
    assert "manifest" not in fact_command(result, other)


def test_a_fleet_that_has_the_image_everywhere_does_nothing_more_than_without_a_cache():
    # accelerator names the backend: the image's tag is known before the preflight, and the
    # state is read in the preflight's own command (roles.targets likely), for both fleets.
    a, _ = host("a", pushed=True, cache_host=CACHE, accelerator="cpu")
    b, _ = host("b", pushed=True, cache_host=CACHE, accelerator="cpu")
    result = plan("deploy/cpu.py", [a, b])
    assert result.returncode == 0, result.output
    assert webui(result, "a") == webui(result, "b") == []
    # The same commands as hosts whose web UI asks no registry (a prebuilt image): the builder's
    # question to the registry rides in its one state read.
    prebuilt = {"cache_host": CACHE, "webui_image": "registry.lan/sd:1", "accelerator": "cpu"}
    alone = plan("deploy/cpu.py", [host("a", **prebuilt)[0], host("b", **prebuilt)[0]])
    assert len(result.commands["a"]) == len(alone.commands["a"])
    assert len(result.commands["b"]) == len(alone.commands["b"])
    assert "manifest" not in fact_command(alone, "a") + fact_command(alone, "b")


def test_the_builder_pushes_again_what_the_registry_lost_and_restarts_nothing():
    a, image = host("a", cache_host=CACHE)
    b, _ = host("b", cache_host=CACHE)
    result = plan("deploy/cpu.py", [a, b])
    builder, other = builder_and_other(result, image)
    assert webui(result, builder) == [BUILD.format(image=image)]
    assert webui(result, other) == []


def test_a_prebuilt_image_or_no_cache_host_asks_no_registry():
    for settings in ({"webui_image": "registry.lan/sd:1", "cache_host": CACHE}, {}):
        a, _ = host("a", running=(), has_image=False, **settings)
        b, _ = host("b", running=(), has_image=False, **settings)
        result = plan("deploy/cpu.py", [a, b])
        assert result.returncode == 0, result.output
        assert not [n for n in webui(result, "a") + webui(result, "b") if "Build" in n]
        text = "".join(result.commands["a"] + result.commands["b"])
        assert "manifest" not in text and "docker push" not in text and REGISTRY not in text


def test_remote_name_and_the_registry_part_of_the_state():
    remote = fleet.remote_name(REGISTRY, "sdinfra/webui:cpu-v1.10.1-0123456789ab")
    assert remote == "10.0.0.5:5000/sdinfra/webui:cpu-v1.10.1-0123456789ab"
    found = docker_state(parts(["### image", "sdinfra/webui:cpu-v1", "### registry", remote],
                               DOCKER_PARTS))
    assert (found["images"], found["pushed"]) == (["sdinfra/webui:cpu-v1"], [remote])
    assert ProjectState().process([])["pushed"] == []


def run(script: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                          env={"PATH": path})


def fake_docker(tmp_path, fail: str = "") -> str:
    """A docker that logs its calls and fails the subcommand ``fail``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> {tmp_path}/calls\n"
        f"[ \"$1\" = {fail or 'none'} ] && {{ echo 'Get \"http://x/v2/\": connection refused' >&2; "
        "exit 1; }\nexit 0\n")
    (bin_dir / "docker").chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def test_the_switch_pulls_from_the_registry_instead_of_building():
    remote = fleet.remote_name(REGISTRY, "sdinfra/webui:cpu-x")
    pull = upgrade.pull_command("sdinfra/webui:cpu-x", remote, REGISTRY, "a")
    script = upgrade.switch_script("/opt/sd", "docker compose -p sdinfra", "cpu",
                                   "sdinfra/webui:cpu-x", 900, build=True, pull=pull)
    assert pull in script and "pulling sdinfra/webui:cpu-x" in script
    assert " build cpu" not in script and "could not be pulled" in script
    # Without a registry the switch is what it was: a build.
    built = upgrade.switch_script("/opt/sd", "docker compose -p sdinfra", "cpu",
                                  "sdinfra/webui:cpu-x", 900, build=True)
    assert "docker compose -p sdinfra build cpu" in built and "docker pull" not in built


def test_a_pull_tags_the_image_by_its_own_name_only(tmp_path):
    remote = fleet.remote_name(REGISTRY, "sdinfra/webui:cpu-x")
    proc = run(upgrade.pull_command("sdinfra/webui:cpu-x", remote, REGISTRY, "a"),
               fake_docker(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "calls").read_text().splitlines() == [
        f"pull {remote}", f"tag {remote} sdinfra/webui:cpu-x", f"rmi {remote}"]


def test_a_registry_down_fails_the_pull_and_the_push_with_the_reason(tmp_path):
    remote = fleet.remote_name(REGISTRY, "sdinfra/webui:cpu-x")
    proc = run(upgrade.pull_command("sdinfra/webui:cpu-x", remote, REGISTRY, "a"),
               fake_docker(tmp_path, fail="pull"))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        f"E: {remote} could not be pulled from the fleet's registry ({REGISTRY}, cache_host): "
        "the registry is down or does not have it (a builds and pushes it for this host's "
        "image)")
    script = upgrade.push_script(str(tmp_path / "sd"), "docker compose", "cpu",
                                 "sdinfra/webui:cpu-x", remote, REGISTRY)
    proc = run(script, fake_docker(tmp_path, fail="push"))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith(
        f"E: {remote} could not be pushed to the fleet's registry ({REGISTRY}, cache_host)")
    calls = (tmp_path / "calls").read_text().splitlines()
    # The image was there (docker image inspect succeeded): not built; its push name removed,
    # and its own name: the next run's builder may be another host, whose push this one pulls.
    assert not [c for c in calls if c.startswith("compose")]
    assert calls[-4:] == [f"tag sdinfra/webui:cpu-x {remote}", f"push {remote}",
                          f"rmi {remote}", "rmi sdinfra/webui:cpu-x"]
