"""
Upgrades that cannot take a host down (roles.webui: image_of, keep_files, switch_script): the
tags that put a new image beside the running one, when a run plans an upgrade, and the
switch's shell run here against a stand-in docker and compose that keep their containers and
images in a JSON file (each container goes through the states its image is told to).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from roles.webui import (ProjectState, dockerfile, image_of, keep_files, render, render_plan,
                         switch_script)
from tests.unit.fakehost import plan
from tests.unit.test_webui import (DIR, converged_cpu, stack_state, unknown_host_plan,
                                   values)

OLD, NEW = "sdinfra/webui:cpu-v1.10.1-aaaaaaaaaaaa", "sdinfra/webui:cpu-v1.10.2-bbbbbbbbbbbb"


# --- tags: a rebuild gets a tag of its own ---------------------------------------------------


def test_whatever_rebuilds_the_image_gives_it_another_tag_and_the_compose_file_names_it():
    base = values()
    tag = image_of(base, "cpu", dockerfile(base, "cpu"))
    assert tag.startswith("sdinfra/webui:cpu-v1.10.1-") and len(tag.rsplit("-", 1)[1]) == 12
    others = [values(webui_version="v1.10.0"),
              values(webui_torch_command="pip install torch==2.1.0 torchvision==0.16.0"),
              values(webui_k_diffusion_commit="0" * 40)]
    tags = {image_of(v, "cpu", dockerfile(v, "cpu")) for v in others}
    assert len(tags) == 3 and tag not in tags
    # Another torch build (the preflight's, for a cuda host with an older driver) too.
    assert image_of(base, "cuda", dockerfile(base, "cuda", "cu118")) != \
        image_of(base, "cuda", dockerfile(base, "cuda"))
    # Same settings, same tag: a converged host builds nothing.
    assert image_of(values(), "cpu", dockerfile(values(), "cpu")) == tag
    compose = render(base, "cpu")["docker-compose.yml"]
    assert f'image: "{tag}"' in compose
    # A prebuilt image is used as it is named.
    assert 'image: "registry.lan/sd:2"' in render(values(webui_image="registry.lan/sd:2"),
                                                  "cpu")["docker-compose.yml"]


# --- the fact: which image each running service was started from -----------------------------


def test_the_state_fact_says_which_image_a_running_service_was_started_from(tmp_path):
    from tests.unit.test_webui import CONTAINER_ID, config_v2

    root, proc, bin_dir = tmp_path / "docker", tmp_path / "proc", tmp_path / "bin"
    (root / "image" / "overlay2").mkdir(parents=True)
    (root / "containers" / CONTAINER_ID).mkdir(parents=True)
    (proc / "4242").mkdir(parents=True)
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"#!/bin/sh\ncase \"$1\" in ps) cat {tmp_path}/ps ;; "
                                    "image) exit 0 ;; esac\n")
    (bin_dir / "docker").chmod(0o755)
    (root / "containers" / CONTAINER_ID / "config.v2.json").write_text(config_v2(image=OLD))
    (proc / "4242" / "cgroup").write_text(f"0::/docker/{CONTAINER_ID}\n")
    (root / "image" / "overlay2" / "repositories.json").write_text("{}")
    fact = ProjectState()
    command = fact.command("/nowhere", ["/nowhere"], [NEW]).replace(
        "/var/lib/docker", str(root)).replace('/proc/"$p"/', f'{proc}/"$p"/')

    def state():
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                              env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
        return fact.process(done.stdout.splitlines())

    found = state()
    assert found["running"] == ["cpu"] and found["current"] == {"cpu": OLD}
    assert found["images"] == [NEW]  # there too (docker image inspect answered)
    # From docker ps, when Docker's files show no running container.
    (proc / "4242" / "cgroup").write_text("0::/system.slice/ssh.service\n")
    (tmp_path / "ps").write_text(f"cpu|{OLD}\n")
    found = state()
    assert found["running"] == ["cpu"] and found["current"] == {"cpu": OLD}


# --- what a run plans ------------------------------------------------------------------------


def _host(current: str, **settings):
    host, files = converged_cpu(**settings)
    return host.override("echo '### project-state'", stack_state(files, running=("cpu",),
                                                    current={"cpu": current})), files


def test_a_new_image_keeps_the_running_files_then_switches():
    tag = image_of(values(), "cpu", dockerfile(values(), "cpu"))
    host, _ = _host(OLD)
    result = plan("deploy/cpu.py", [host])
    assert result.returncode == 0, result.output
    assert result.changes("h") == [
        f"Stable Diffusion web UI | Keep the cpu service's files for a rollback ({OLD})",
        "Stable Diffusion web UI | Start the cpu service"]
    # The files are kept before they are replaced: here they are already the new ones (an
    # earlier run stopped before its switch), and the switch still happens.
    host, _ = _host(tag)
    assert plan("deploy/cpu.py", [host]).changes("h") == []


def test_a_prebuilt_image_is_loaded_before_any_file_changes():
    archive = Path(__file__)  # any file: the plan only names it
    host, _ = _host("sdinfra/webui-standin:test", webui_image="sdinfra/webui-standin:v2",
                    webui_image_archive=str(archive))
    host.set(webui_image="sdinfra/webui-standin:v3")
    result = plan("deploy/cpu.py", [host])
    assert result.returncode == 0, result.output
    assert result.changes("h") == [
        "Stable Diffusion web UI | Upload and load image sdinfra/webui-standin:v3",
        "Stable Diffusion web UI | Keep the cpu service's files for a rollback "
        "(sdinfra/webui-standin:test)",
        "Stable Diffusion web UI | Project directory and files",
        "Stable Diffusion web UI | Start the cpu service"]


# --- the switch, run here ----------------------------------------------------------------------

FAKE = r'''
import json, os, sys
state_path = os.environ["FAKE_DOCKER"]
st = json.load(open(state_path))
args = sys.argv[1:]
st["calls"].append(" ".join(args))

def save():
    json.dump(st, open(state_path, "w"))

def image_in_compose():
    for line in open("docker-compose.yml"):
        if line.strip().startswith("image:"):
            return json.loads(line.split(":", 1)[1])

def new_container(image):
    st["n"] += 1
    st["container"] = {"id": f"c{st['n']}", "image": image, "seen": 0}

out, code = "", 0
if os.path.basename(sys.argv[0]) == "compose":
    verb = args[0]
    image = image_in_compose()
    if verb in ("build", "pull"):
        if st["prepare_fails"]:
            code = 1
            sys.stderr.write("error: could not prepare\n")
        else:
            st["images"].append(image)
    elif verb == "up":
        if image not in st["images"]:
            code, out = 1, "no such image\n"
        elif (st.get("container") or {}).get("image") != image:
            new_container(image)
elif args[0] == "ps":
    out = st["container"]["id"] + "\n" if st.get("container") else ""
elif args[0] == "inspect":
    c = st["container"]
    if ".Config.Image" in args[2]:
        out = f"{c['image']} {st['health_before']}\n"
    else:
        states = st["behaviour"][c["image"]]
        out = states[min(c["seen"], len(states) - 1)] + "\n"
        c["seen"] += 1
elif args[0] == "logs":
    out = st["logs"].get(st["container"]["image"], "")
elif args[:2] == ["image", "inspect"]:
    code = 0 if args[2] in st["images"] else 1
elif args[0] == "rmi":
    if args[1] in st["images"] and (st.get("container") or {}).get("image") != args[1]:
        st["images"].remove(args[1])
    else:
        code = 1
save()
sys.stdout.write(out)
sys.exit(code)
'''

HEALTHY = ["running starting 0 0", "running healthy 0 0"]
CRASHING = ["running starting 0 0", "restarting starting 2 3"]


@pytest.fixture
def switch(tmp_path):
    """run(**state) runs switch_script in a project directory holding the OLD service's files
    (kept) and the NEW one's (written), against the stand-in docker: (process, state)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "compose"):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{FAKE}")
        (bin_dir / name).chmod(0o755)
    (bin_dir / "sleep").symlink_to("/bin/true")  # no real waiting here
    project = tmp_path / "sd"
    (project / "secrets").mkdir(parents=True)
    state_path = tmp_path / "docker.json"

    def run(build=False, previous=OLD, keep=True, timeout=30, **state):
        shutil.rmtree(project / ".sdinfra", ignore_errors=True)
        old_files = {"docker-compose.yml": f'services:\n  cpu:\n    image: "{OLD}"\n',
                     "webui.env": "TZ='Etc/UTC'\n"}
        for name, text in old_files.items():
            (project / name).write_text(text)
        (project / "secrets" / "webui-auth").write_text("alice:s3cret-pass\n")
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_DOCKER": str(state_path)}
        if keep:
            kept = subprocess.run(["sh", "-c", keep_files(str(project), OLD)], env=env,
                                  capture_output=True, text=True)
            assert kept.returncode == 0, kept.stderr
        # The run's new files.
        (project / "docker-compose.yml").write_text(f'services:\n  cpu:\n    image: "{NEW}"\n')
        (project / "webui.env").write_text("TZ='Europe/Berlin'\n")
        (project / "secrets" / "webui-auth").unlink()  # the login removed in the same run
        base = {"images": [OLD], "n": 1, "calls": [], "health_before": "healthy",
                "prepare_fails": False, "logs": {},
                "container": {"id": "c1", "image": OLD, "seen": 0},
                "behaviour": {OLD: HEALTHY, NEW: HEALTHY}}
        state_path.write_text(json.dumps({**base, **state}))
        script = switch_script(str(project), f"cd {project} && compose", "cpu", NEW, timeout,
                               build=build, previous=previous)
        done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
        return done, json.loads(state_path.read_text())

    return run, project


def said(done) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines()
            if line.startswith("sdinfra-health: ")]


def test_a_new_image_that_turns_healthy_replaces_the_old_one_which_is_removed(switch):
    run, project = switch
    done, docker = run(images=[OLD, NEW])
    assert done.returncode == 0, done.stderr
    assert said(done) == ["sdinfra-health: healthy"]
    assert docker["container"]["image"] == NEW
    assert docker["images"] == [NEW] and f"rmi {OLD}" in docker["calls"]
    assert (project / ".sdinfra" / "images").read_text() == f"{NEW}\n"
    assert not (project / ".sdinfra" / "previous").exists()
    assert "TZ='Europe/Berlin'" in (project / "webui.env").read_text()


def test_a_new_image_that_crashes_is_rolled_back_to_the_old_image_and_files(switch):
    run, project = switch
    logs = "Launching Web UI with arguments: --gradio-auth alice:s3cret-pass\nRuntimeError: x\n"
    done, docker = run(build=True, behaviour={OLD: HEALTHY, NEW: CRASHING}, logs={NEW: logs})
    assert done.returncode == 1
    # Built beside the running one, then started, then the old one back.
    assert [c for c in docker["calls"] if c.split()[0] in ("build", "up", "rmi")] == \
        ["build cpu", "up -d cpu", "up -d cpu"]
    assert said(done)[-1] == (f"sdinfra-health: rolled back: {NEW} restarting: exited with "
                              f"code 3, restarted 2 times; {OLD} runs again")
    assert docker["container"]["image"] == OLD
    # The old files, the login back; the new image kept for the next run to try again.
    assert f'image: "{OLD}"' in (project / "docker-compose.yml").read_text()
    assert (project / "webui.env").read_text() == "TZ='Etc/UTC'\n"
    assert (project / "secrets" / "webui-auth").read_text() == "alice:s3cret-pass\n"
    assert sorted(docker["images"]) == sorted([OLD, NEW])
    assert (project / ".sdinfra" / "images").read_text() == f"{OLD}\n{NEW}\n"
    # The new container's last lines, the login masked.
    assert "sdinfra-log: Launching Web UI with arguments: --gradio-auth ***" in done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    assert not list(project.glob("*.sdinfra-new"))


def test_a_new_image_still_starting_at_the_bound_is_rolled_back(switch):
    run, project = switch
    done, docker = run(images=[OLD, NEW], timeout=12,
                       behaviour={OLD: HEALTHY, NEW: ["running starting 0 0"]})
    assert done.returncode == 1
    assert said(done)[-1] == (f"sdinfra-health: rolled back: {NEW} still starting after 12 s; "
                              f"{OLD} runs again")
    assert docker["container"]["image"] == OLD


def test_no_rollback_from_a_container_that_was_not_healthy_or_without_its_files(switch):
    run, project = switch
    for kwargs in ({"health_before": "unhealthy"}, {"keep": False}):
        done, docker = run(images=[OLD, NEW], behaviour={OLD: HEALTHY, NEW: CRASHING}, **kwargs)
        assert done.returncode == 1
        assert said(done) == ["sdinfra-health: unhealthy: restarting: exited with code 3, "
                              "restarted 2 times"], kwargs
        assert docker["container"]["image"] == NEW  # nothing to go back to
        assert f'image: "{NEW}"' in (project / "docker-compose.yml").read_text()
        # The old image is kept until the new one was healthy once.
        assert sorted(docker["images"]) == sorted([OLD, NEW])


def test_a_failed_build_puts_the_old_files_back_and_leaves_the_running_container(switch):
    run, project = switch
    done, docker = run(build=True, prepare_fails=True)
    assert done.returncode == 1
    assert said(done) == [f"sdinfra-health: rolled back: {NEW} could not be built (exit code "
                          f"1); {OLD} still runs"]
    assert docker["container"] == {"id": "c1", "image": OLD, "seen": 0}
    assert not [c for c in docker["calls"] if c.startswith("up")]
    assert (project / "webui.env").read_text() == "TZ='Etc/UTC'\n"


def test_a_restart_loop_seen_running_again_does_not_say_exit_code_0(switch):
    run, _ = switch
    done, _ = run(images=[OLD, NEW], behaviour={OLD: HEALTHY, NEW: ["running starting 1 0"]})
    assert said(done)[-1] == (f"sdinfra-health: rolled back: {NEW} restart loop: restarted 1 "
                              f"times; {OLD} runs again")


def test_a_first_start_prunes_nothing_and_a_slow_one_is_not_a_failure(switch):
    run, project = switch
    done, docker = run(previous=None, container=None, images=[NEW],
                       behaviour={NEW: ["running starting 0 0"]})
    assert done.returncode == 0
    assert said(done) == ["sdinfra-health: starting (waited 30 s)"]
    assert not [c for c in docker["calls"] if c.startswith("rmi")]


def test_the_kept_files_are_those_of_the_running_image_only(tmp_path):
    project = tmp_path / "sd"
    project.mkdir()
    (project / "docker-compose.yml").write_text(f'    image: "{NEW}"\n')
    done = subprocess.run(["sh", "-c", keep_files(str(project), OLD)], capture_output=True,
                          text=True)
    assert done.returncode == 0
    assert "this switch cannot roll back" in done.stdout
    assert not (project / ".sdinfra" / "previous").exists()
    assert oct((project / ".sdinfra").stat().st_mode & 0o777) == "0o700"  # a login is kept there


def test_files_kept_by_an_unfinished_switch_are_kept_while_the_old_image_runs(tmp_path):
    # An earlier run replaced the files, then stopped before its switch (a failed model
    # download, Ctrl-C): the files there are the new ones, the kept ones still the running
    # image's.
    project = tmp_path / "sd"
    (project / ".sdinfra" / "previous").mkdir(parents=True)
    (project / ".sdinfra" / "previous" / "docker-compose.yml").write_text(f'image: "{OLD}"\n')
    (project / "docker-compose.yml").write_text(f'    image: "{NEW}"\n')
    done = subprocess.run(["sh", "-c", keep_files(str(project), OLD)], capture_output=True,
                          text=True)
    assert done.returncode == 0
    assert "the files kept by an earlier run are those of the running image" in done.stdout
    assert (project / ".sdinfra" / "previous" / "docker-compose.yml").read_text() == \
        f'image: "{OLD}"\n'
    # Files that are the running image's are kept afresh.
    (project / "docker-compose.yml").write_text(f'    image: "{OLD}"\n')
    (project / "webui.env").write_text("A='1'\n")
    assert subprocess.run(["sh", "-c", keep_files(str(project), OLD)]).returncode == 0
    assert (project / ".sdinfra" / "previous" / "webui.env").read_text() == "A='1'\n"


def test_the_wait_counts_seconds_on_the_clock_not_loops(tmp_path):
    """Each docker inspect takes 0.4 s here (a loaded host): a 3 s bound ends after 3 s, not
    after 3 loops of 1.4 s, and the seconds it says are the ones it waited."""
    import time

    from roles.webui import wait_function

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\ncase \"$1\" in ps) echo c0ffee ;; "
                                    "inspect) sleep 0.4; echo 'running starting 0 0' ;; esac\n")
    (bin_dir / "docker").chmod(0o755)
    script = wait_function("/nowhere") + "\nsdinfra_wait cpu 3; echo \"r=$? s=$s\""
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    waited = time.monotonic() - started
    last = done.stdout.splitlines()[-1]
    assert last.startswith("r=2 s="), done.stdout + done.stderr
    said = int(last.split("s=")[1])
    assert 3 <= said <= 4 and said - 1 <= waited < said + 1.5, (said, waited)
    assert "waiting for cpu to turn healthy: running, starting, 0 s" in done.stdout
