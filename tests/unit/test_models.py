"""
Models are hashed once, when they arrive, and trusted afterwards while their size and mtime are
the ones recorded in their sidecar (``.NAME.sha256``): the shell of roles/download.py run here for
real against a local HTTP server, and the web UI's plan on a fake host whose ProjectState answer
is what the fact's own command printed on a directory laid out here.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from functools import partial
from pathlib import Path

import pytest

from roles import download
from roles.hostfacts import AHEAD
from roles.parsers import sections
from roles.webui import ProjectState, render_plan
from tests.unit.fakehost import plan
from tests.unit.test_docker import converged as docker_converged
from tests.unit.test_webui import docker_lines, unknown_host_plan, values

NAME = "sd15.safetensors"
CONTENT = b"stand-in checkpoint " * 4096
SHA = hashlib.sha256(CONTENT).hexdigest()
OTHER = hashlib.sha256(b"another checkpoint").hexdigest()
IMAGE = "sdinfra/webui-standin:test"


@pytest.fixture
def server(tmp_path):
    """127.0.0.1 serving ``NAME`` (and ``bad.safetensors``, other content)."""
    served = tmp_path / "srv"
    served.mkdir()
    (served / NAME).write_bytes(CONTENT)
    (served / "bad.safetensors").write_bytes(b"not the pinned file")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def sh(command: str, path: str | None = None, cwd: Path | None = None):
    env = {**os.environ, **({"PATH": path} if path else {})}
    return subprocess.run(["sh", "-c", command], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def sidecar_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def recorded(path: Path) -> str:
    stat = path.stat()
    return f"{hashlib.sha256(path.read_bytes()).hexdigest()} {stat.st_size} {int(stat.st_mtime)}\n"


# --- the commands, run here ------------------------------------------------------------------


def test_fetch_records_the_checksum_only_after_it_matched(server, tmp_path):
    dest = tmp_path / "models" / NAME
    done = sh(download.fetch_command(f"{server}/{NAME}", str(dest), SHA, record=True),
              cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert dest.read_bytes() == CONTENT
    assert sidecar_of(dest).read_text() == recorded(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == [f".{NAME}.sha256", NAME]

    # A download with another checksum: no file, and the sidecar of the file there is kept as
    # it was (it still vouches for that file, which is unchanged).
    before = sidecar_of(dest).read_text()
    done = sh(download.fetch_command(f"{server}/bad.safetensors", str(dest), SHA, record=True),
              cwd=tmp_path)
    assert done.returncode == 1 and f"expected sha256 {SHA}" in done.stderr
    assert dest.read_bytes() == CONTENT and sidecar_of(dest).read_text() == before
    assert sorted(p.name for p in dest.parent.iterdir()) == [f".{NAME}.sha256", NAME]

    fresh = tmp_path / "other" / NAME
    done = sh(download.fetch_command(f"{server}/bad.safetensors", str(fresh), SHA, record=True))
    assert done.returncode == 1
    assert list(fresh.parent.iterdir()) == []  # neither the file nor a sidecar


def test_fetch_replaces_a_file_and_its_sidecar_together(server, tmp_path):
    dest = tmp_path / NAME
    dest.write_bytes(b"old")
    sidecar_of(dest).write_text(f"{OTHER} 3 1\n")
    done = sh(download.fetch_command(f"{server}/{NAME}", str(dest), SHA, record=True))
    assert done.returncode == 0, done.stderr
    assert sidecar_of(dest).read_text() == recorded(dest)
    # The amdgpu-install download (record=False) leaves no sidecar.
    plain = tmp_path / "plain" / NAME
    assert sh(download.fetch_command(f"{server}/{NAME}", str(plain), SHA)).returncode == 0
    assert list(plain.parent.iterdir()) == [plain]


def test_an_upload_is_kept_and_recorded_only_with_the_pinned_checksum(tmp_path):
    dest = tmp_path / NAME
    Path(download.upload_temp(str(dest))).write_bytes(b"truncated upload")
    done = sh(download.put_command(str(dest), SHA))
    assert done.returncode == 1 and "checksum mismatch for the upload to" in done.stderr
    assert list(tmp_path.iterdir()) == []
    Path(download.upload_temp(str(dest))).write_bytes(CONTENT)
    done = sh(download.put_command(str(dest), SHA))
    assert done.returncode == 0, done.stderr
    assert oct(dest.stat().st_mode & 0o777) == "0o644"
    assert sidecar_of(dest).read_text() == recorded(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{NAME}.sha256", NAME]


def test_recording_a_hashed_file_refuses_one_that_changed_since(tmp_path):
    dest = tmp_path / NAME
    dest.write_bytes(CONTENT)
    stat = f"{len(CONTENT)} {int(dest.stat().st_mtime)}"
    done = sh(download.record_command(str(dest), SHA, f"{len(CONTENT) + 1} 0"))
    assert done.returncode == 1 and "changed while it was being verified" in done.stderr
    assert not sidecar_of(dest).exists()
    assert sh(download.record_command(str(dest), SHA, stat)).returncode == 0
    assert sidecar_of(dest).read_text() == recorded(dest)


# --- the state fact, run here with sha256sum watched -------------------------------------------


@pytest.fixture
def watched(tmp_path):
    """A PATH whose sha256sum logs what it hashes (arguments, or the file on its stdin)."""
    tools = tmp_path / "tools"
    tools.mkdir()
    log = tmp_path / "sha256sum.log"
    real = shutil.which("sha256sum")
    (tools / "sha256sum").write_text(
        "#!/bin/sh\n"
        f'echo "args=$* stdin=$(readlink /proc/$$/fd/0)" >> {log}\n'
        f'exec {real} "$@"\n')
    (tools / "sha256sum").chmod(0o755)
    return f"{tools}:/usr/bin:/bin", log  # no /usr/local/bin: no docker


def hashed_files(log: Path) -> str:
    return log.read_text() if log.exists() else ""


def test_state_fact_trusts_a_sidecar_and_hashes_a_changed_model(server, tmp_path, watched):
    path, log = watched
    models = tmp_path / "sd" / "models" / "Stable-diffusion"
    dest = models / NAME
    assert sh(download.fetch_command(f"{server}/{NAME}", str(dest), SHA, record=True)
              ).returncode == 0
    fact = ProjectState()
    command = fact.command(str(tmp_path / "sd"), [str(tmp_path / "sd")], [], models=[
        str(dest), str(models / "missing.safetensors")])

    state = fact.process(sh(command, path).stdout.splitlines())
    assert state["trusted"] == {str(dest): SHA} and state["hashed"] == {}
    assert NAME not in hashed_files(log)  # the model was not read
    assert state["models"] == [NAME]  # as `ls` lists them: not the sidecar (a dot file)
    video = subprocess.run(["getent", "group", "video"], capture_output=True, text=True).stdout
    if video:
        assert state["gids"]["video"] == video.split(":")[2]

    # Truncated by hand: the size differs from the record, so it is hashed again.
    with open(dest, "r+b") as handle:
        handle.truncate(100)
    state = fact.process(sh(command, path).stdout.splitlines())
    assert state["trusted"] == {}
    digest = hashlib.sha256(CONTENT[:100]).hexdigest()
    assert state["hashed"] == {str(dest): (digest, f"100 {int(dest.stat().st_mtime)}")}
    assert f"stdin={dest}" in hashed_files(log)

    # Same size, other mtime (written over in place): hashed again too; no sidecar: hashed.
    dest.write_bytes(CONTENT)
    os.utime(dest, (1, 1))
    assert fact.process(sh(command, path).stdout.splitlines())["hashed"][str(dest)] == \
        (SHA, f"{len(CONTENT)} 1")
    sidecar_of(dest).unlink()
    assert str(dest) in fact.process(sh(command, path).stdout.splitlines())["hashed"]


# --- the plan: deploy/cpu.py on a fake host answered with the fact's real output ---------------


def laid_out(tmp_path: Path, server: str, watched) -> tuple:
    """
    A converged project directory under tmp_path (its files as deploy/cpu.py renders them, the
    model fetched and recorded) and a fake host whose ProjectState answer is what the fact's
    command prints there. Returns (host maker, model path, sha256sum log).
    """
    path, log = watched
    directory = tmp_path / "sd"
    for sub in ["", "data", "models", "models/Stable-diffusion", "outputs", "secrets"]:
        (directory / sub).mkdir(exist_ok=True)
        (directory / sub).chmod(0o755)
    model = {"name": NAME, "url": f"{server}/{NAME}", "sha256": SHA}
    settings = {"webui_dir": str(directory), "webui_models": [model], "webui_image": IMAGE}
    dest = directory / "models" / "Stable-diffusion" / NAME
    assert sh(download.fetch_command(model["url"], str(dest), SHA, record=True)).returncode == 0

    def host():
        base = docker_converged("h", "debian12", "distro").set(docker_source="distro",
                                                               **settings)
        # The command deploy/cpu.py sends (the roles' facts read ahead: roles.hostfacts), from a
        # first plan; then its real output here, the ProjectState fact's part of it.
        first = plan("deploy/cpu.py", [base.respond("echo '### project-state'", [])])
        command = next(c for c in first.commands["h"] if c.startswith("o=$( echo '### ahead';"))
        assert "echo '### project-state'" in command

        def project_part(command):
            # cut at the end marker too, as Ahead cuts at every part's line
            printed = sections(sh(command, path).stdout,
                               [f"{AHEAD}{ProjectState.ahead}", f"{AHEAD}end"])
            return printed[f"{AHEAD}{ProjectState.ahead}"]

        output = project_part(command)
        state = ProjectState().process(output)
        rendered = render_plan(values(**settings), unknown_host_plan("cpu"), gids=state["gids"])
        for name, text in rendered.items():
            if not (directory / name).exists() or (directory / name).read_text() != text:
                (directory / name).write_text(text)
                (directory / name).chmod(0o644)
        output = project_part(command) + docker_lines({"cpu": IMAGE}, images=[IMAGE])
        base = docker_converged("h", "debian12", "distro").set(docker_source="distro",
                                                               **settings)
        return base.respond("echo '### project-state'", output)

    return host, dest, log


def model_commands(result, dest: Path) -> list[str]:
    return [c for c in result.commands["h"] if str(dest) in c and "echo '### project-state'" not in c]


def test_converged_host_with_a_sidecar_changes_nothing_and_hashes_no_model(server, tmp_path,
                                                                          watched):
    host, dest, log = laid_out(tmp_path, server, watched)
    log.unlink(missing_ok=True)
    result = plan("deploy/cpu.py", [host()])
    assert result.returncode == 0, result.output
    assert result.changes("h") == []
    assert NAME not in hashed_files(log)  # the fact's command did not read the model
    assert model_commands(result, dest) == []  # nor did anything else (no Sha256File fact)


def test_model_of_another_size_is_fetched_again_without_hashing_it_twice(server, tmp_path,
                                                                         watched):
    host, dest, log = laid_out(tmp_path, server, watched)
    with open(dest, "ab") as handle:
        handle.write(b"appended by hand")
    result = plan("deploy/cpu.py", [host()])
    assert result.returncode == 0, result.output
    assert result.changes("h") == ["Stable Diffusion web UI | Download model sd15.safetensors",
                                   "Stable Diffusion web UI | Start the cpu service"]
    # The fact hashed it (once per fact run); the fetch operation asked nothing more.
    assert f"stdin={dest}" in hashed_files(log)
    assert model_commands(result, dest) == []


def test_same_content_without_a_sidecar_only_gets_its_checksum_recorded(server, tmp_path,
                                                                         watched):
    """A model fetched before sidecars existed (or by hand) is hashed once, not downloaded."""
    host, dest, log = laid_out(tmp_path, server, watched)
    sidecar_of(dest).unlink()
    result = plan("deploy/cpu.py", [host()])
    assert result.returncode == 0, result.output
    assert result.changes("h") == [
        "Stable Diffusion web UI | Record the checksum of model sd15.safetensors"]
    # Executed, that operation writes the sidecar that the next run trusts.
    stat = f"{dest.stat().st_size} {int(dest.stat().st_mtime)}"
    assert sh(download.record_command(str(dest), SHA, stat)).returncode == 0
    log.unlink(missing_ok=True)
    assert plan("deploy/cpu.py", [host()]).changes("h") == []
    assert NAME not in hashed_files(log)


def test_a_new_pinned_checksum_fetches_the_model_again(server, tmp_path, watched):
    host, dest, log = laid_out(tmp_path, server, watched)
    made = host()
    made.data["webui_models"] = [{"name": NAME, "url": f"{server}/{NAME}", "sha256": OTHER}]
    result = plan("deploy/cpu.py", [made])
    assert result.changes("h") == ["Stable Diffusion web UI | Download model sd15.safetensors",
                                   "Stable Diffusion web UI | Start the cpu service"]
    assert NAME not in hashed_files(log)  # the sidecar says what it holds: no need to hash it
    assert model_commands(result, dest) == []


# --- bounded downloads, progress, partial files ---------------------------------------------


@pytest.fixture
def trickle():
    """127.0.0.1 serving /slow (CONTENT in 8 pieces, 0.6 s apart) and /stall (one piece, then
    nothing while the connection stays open)."""
    import time

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(CONTENT)))
            self.end_headers()
            piece = len(CONTENT) // 8
            for i in range(8):
                self.wfile.write(CONTENT[i * piece:(i + 1) * piece])
                self.wfile.flush()
                time.sleep(0.6 if self.path == "/slow" else 30)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_download_shows_progress_while_it_runs_and_its_duration_after(trickle, tmp_path):
    dest = tmp_path / NAME
    done = sh(download.fetch_command(f"{trickle}/slow", str(dest), SHA, record=True))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    progress = [line for line in lines if line.startswith(f"downloading {NAME}: ")]
    assert progress and progress[0].endswith(", 3 s"), lines
    assert lines[-1].startswith(f"downloaded {NAME}: {len(CONTENT) // 1024} KiB in "), lines
    assert dest.read_bytes() == CONTENT


def test_a_stalled_download_gives_up_within_its_bound_and_leaves_nothing(trickle, tmp_path,
                                                                         monkeypatch):
    import time

    monkeypatch.setattr(download, "STALL_SECONDS", 2)
    monkeypatch.setattr(download, "RETRIES", 1)
    dest = tmp_path / NAME
    started = time.monotonic()
    done = sh(download.fetch_command(f"{trickle}/stall", str(dest), SHA))
    assert time.monotonic() - started < 20
    assert done.returncode == 1
    assert "no data for 2 s or no connection within 30 s, 2 attempts" in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(f"{dest} was not changed")
    assert list(tmp_path.iterdir()) == []


def test_a_stalled_download_without_curl_or_wget_is_bounded_and_says_why(trickle, tmp_path):
    """A minimal host (Debian's minbase: no curl, no wget) downloads with python3: a stall
    ends each attempt after ``stall`` s, tried ``retries`` more times, and says so."""
    import time

    dest = tmp_path / NAME
    command = download.fetch_command(f"{trickle}/stall", str(dest), SHA, stall=2, retries=1)
    command = command.replace("command -v curl", "false").replace("command -v wget", "false")
    started = time.monotonic()
    done = sh(command)
    assert 4 <= time.monotonic() - started < 20  # two attempts of 2 s each, 2 s apart
    assert done.returncode == 1, done.stderr
    assert "no data for 2 s or no connection within 30 s, 2 attempts (exit 28)" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
    # A server that answers is read to its end the same way.
    done = sh(download.fetch_command(f"{trickle}/slow", str(dest), SHA).replace(
        "command -v curl", "false").replace("command -v wget", "false"))
    assert done.returncode == 0, done.stderr
    assert dest.read_bytes() == CONTENT


def test_a_partial_file_a_killed_run_left_is_removed_by_the_next(server, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    dest = models / NAME
    left = models / f".{NAME}.sdinfra-part.Ab3xYz"
    left.write_bytes(b"")
    other = models / ".other.safetensors.sdinfra-part.Ab3xYz"  # another model's: not ours
    other.write_bytes(b"")
    assert sh(download.fetch_command(f"{server}/{NAME}", str(dest), SHA)).returncode == 0
    assert sorted(p.name for p in models.iterdir()) == [other.name, NAME]


def test_a_full_disk_is_named_as_such(server, tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    dest = tmp_path / "models" / NAME
    # curl writes into the temporary file; a symlink to /dev/full makes every write ENOSPC.
    command = download.fetch_command(f"{server}/{NAME}", str(dest), SHA).replace(
        'curl -fsSL', 'ln -sf /dev/full "$t" && curl -fsSL')
    done = sh(command)
    assert done.returncode == 1
    assert f"no space left on the device of {dest.parent}" in done.stderr, done.stderr


# --- the fleet's cache first (roles.cache) ---------------------------------------------------


def test_a_good_copy_from_the_cache_is_kept_and_the_models_url_never_asked(server, tmp_path):
    dest = tmp_path / "models" / NAME
    done = sh(download.fetch_first_command(f"{server}/{NAME}", "http://127.0.0.1:9/none",
                                           str(dest), SHA, record=True))
    assert done.returncode == 0, done.stderr + done.stdout
    assert dest.read_bytes() == CONTENT and sidecar_of(dest).read_text() == recorded(dest)
    assert "no verified copy" not in done.stdout + done.stderr


@pytest.mark.parametrize("first", ["bad.safetensors", "missing.safetensors", None])
def test_a_copy_from_the_cache_that_differs_or_fails_is_refused_and_fetched_from_its_url(
        server, tmp_path, first):
    """Another checksum (corrupted on the cache or in transit), a 404, the cache down."""
    dest = tmp_path / "models" / NAME
    cached = f"{server}/{first}" if first else "http://127.0.0.1:9/x"
    done = sh(download.fetch_first_command(cached, f"{server}/{NAME}", str(dest), SHA,
                                           record=True, retries=0))
    assert done.returncode == 0, done.stderr + done.stdout
    assert dest.read_bytes() == CONTENT and sidecar_of(dest).read_text() == recorded(dest)
    # Why it fell back is in the output, which the operation shows.
    assert f"no verified copy from {cached} (above): downloading {server}/{NAME}" in done.stdout
    if first == "bad.safetensors":
        assert f"checksum mismatch for {cached}: expected sha256 {SHA}" in done.stdout
    else:
        assert f"download of {cached} failed" in done.stdout
    assert sorted(p.name for p in dest.parent.iterdir()) == [f".{NAME}.sha256", NAME]


def test_when_the_cache_and_the_url_both_fail_the_model_there_is_kept(server, tmp_path):
    dest = tmp_path / "models" / NAME
    dest.parent.mkdir()
    dest.write_bytes(b"the model there before")
    done = sh(download.fetch_first_command(f"{server}/bad.safetensors",
                                           f"{server}/bad.safetensors", str(dest), SHA,
                                           retries=0))
    assert done.returncode == 1
    assert f"checksum mismatch for {server}/bad.safetensors" in done.stderr
    assert dest.read_bytes() == b"the model there before"
    assert sorted(p.name for p in dest.parent.iterdir()) == [NAME]
