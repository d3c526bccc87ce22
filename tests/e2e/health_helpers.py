"""What tests/e2e/test_health.py drives its fleet with: a deploy watched line by line as it
runs, waits, the hosts' settings changed between runs, a link cut mid-download and a run
killed while apt installs."""

from __future__ import annotations

from testbed.hosts import REPO, ssh, write_settings
from tests.e2e.test_faults import site


KNOBS = "/opt/stable-diffusion/data/sdinfra-standin.json"  # the stand-in's control file
MODELS_DIR = "/opt/stable-diffusion/models/Stable-diffusion"


class Watched:
    """deploy/site.py (or another deploy) started in the background; each line it prints on
    stderr kept with the seconds since the start, as it arrives."""

    def __init__(self, fleet, deploy: str = "deploy/site.py", *args: str):
        import os
        import subprocess
        import threading
        import time

        from testbed.hosts import PYINFRA

        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.out: list[str] = []
        self.proc = subprocess.Popen(
            [PYINFRA, str(fleet.inventory_path), deploy, "-y", "--json", *args], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYINFRA_PROGRESS": "off"})

        def read_err():
            for line in self.proc.stderr:
                self.lines.append((time.monotonic() - self.started, line))

        self.readers = [threading.Thread(target=read_err, daemon=True),
                        threading.Thread(target=lambda: self.out.extend(self.proc.stdout),
                                         daemon=True)]
        for reader in self.readers:
            reader.start()

    def said(self, text: str) -> bool:
        return any(text in line for _, line in list(self.lines))

    def at(self, text: str) -> float:
        """When the first line holding ``text`` arrived."""
        return next(t for t, line in self.lines if text in line)

    def wait(self, timeout: float = 600):
        import subprocess
        import time

        self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=10)
        result = subprocess.CompletedProcess(self.proc.args, self.proc.returncode,
                                             "".join(self.out),
                                             "".join(line for _, line in self.lines))
        result.seconds = time.monotonic() - self.started
        print(f"{self.proc.args[2]}: exit {result.returncode} in {result.seconds:.1f} s")
        return result


def kept(fleet, *args: str):
    """deploy/site.py (test_faults.site), its stderr kept in the fleet's directory to read
    after a failure."""
    result = site(fleet, *args)
    logs = sorted(fleet.workdir.glob("site-*.log"))
    (fleet.workdir / f"site-{len(logs) + 1:02d}.log").write_text(result.stderr + result.stdout)
    return result


def until(check, seconds: float, what: str, every: float = 0.3):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"after {seconds} s: {what}")


def set_data(fleet, name: str, **changes) -> None:
    import json

    data = json.loads(fleet.host_data_path.read_text())
    data[name].update(changes)
    write_settings(fleet, data)


def container_health(fleet, name: str, service: str = "cpu") -> str:
    return ssh(fleet, name, "docker inspect -f '{{.State.Status}}/{{.State.Health.Status}}' "
                            f"$(docker ps -aq --filter label=com.docker.compose.service={service}"
                            " | head -n 1)").strip()


class CutLink:
    """A model served on one host's gateway (its own veth: the only address it may reach) that
    stops mid-body while ``cut`` is set, as a link that went down does: half the bytes, then
    nothing, the connection neither closed nor reset. ``requests`` counts the GETs."""

    def __init__(self, gateway: str):
        import hashlib
        import http.server
        import threading
        import time

        self.content = bytes(range(256)) * 1024  # 256 KiB
        self.sha256 = hashlib.sha256(self.content).hexdigest()
        self.cut = True
        self.requests = 0
        self.stop = threading.Event()
        link = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                link.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(link.content)))
                self.end_headers()
                half = len(link.content) // 2 if link.cut else len(link.content)
                self.wfile.write(link.content[:half])
                self.wfile.flush()
                if half < len(link.content):
                    link.stop.wait(600)  # the link is down: nothing more comes

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((gateway, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{gateway}:{self.httpd.server_address[1]}/cut.safetensors"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self._sleep = time.sleep

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def with_cut_model(fleet, link: CutLink, **settings) -> None:
    """h-cpu's models and the one behind ``link``, with ``settings``; h-cuda with the flag
    test_status_reports_every_host_truly gave it (it starts, torch sees no GPU there)."""
    import json

    models = [model for model in json.loads(fleet.host_data_path.read_text())["h-cpu"][
        "webui_models"] if model["name"] != "cut.safetensors"]
    set_data(fleet, "h-cpu", **settings, webui_models=[
        *models, {"name": "cut.safetensors", "url": link.url, "sha256": link.sha256}])
    set_data(fleet, "h-cuda", webui_extra_args=["--skip-torch-cuda-test"])


def partials(fleet, name: str) -> list[str]:
    return ssh(fleet, name, f"ls -A {MODELS_DIR} | grep sdinfra-part || true").split()


SLOW_DPKG = "/etc/apt/apt.conf.d/99sdinfra-test-slow-dpkg"  # TEST ONLY, removed after


def killed_mid_apt(fleet, hold: int) -> list[str]:
    """docker-compose removed from h-cpu, and apt's dpkg run held back ``hold`` s on it (a
    DPkg::Pre-Invoke hook: what a large package's unpack takes); deploy/site.py started and
    only the pyinfra process SIGKILLed once apt-get installs docker-compose there. The host's
    apt goes on (its session had no terminal to hang up): the pids of its apt-get."""
    ssh(fleet, "h-cpu", "apt-get remove -y docker-compose >/dev/null 2>&1 && "
                        f"echo 'DPkg::Pre-Invoke {{\"sleep {hold}\";}};' > {SLOW_DPKG}")
    run = Watched(fleet)

    def installing():
        seen = ssh(fleet, "h-cpu", "pgrep -a 'apt-get|sleep' || true").splitlines()
        apt = [line.split()[0] for line in seen
               if "apt-get" in line and " install " in line and "docker-compose" in line]
        return apt if apt and any(line.endswith(f"sleep {hold}") for line in seen) else None

    try:
        pids = until(installing, 240, "the run never installed docker-compose on h-cpu")
    finally:
        run.proc.kill()  # SIGKILL, pyinfra alone: no summary, no cleanup of its own
        run.wait(timeout=30)
    still = ssh(fleet, "h-cpu", "pgrep -a apt-get || true")
    assert any(pid in still for pid in pids), f"the host's apt did not go on: {still!r}"
    return pids
