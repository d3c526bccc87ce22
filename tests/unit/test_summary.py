"""
The end-of-run summary (roles/summary.py): the line that says why a host failed, a bad file that
fails only its host, and a run stopped by Ctrl-C or SIGTERM that says ``interrupted``, never
``ok`` (a real pyinfra run on @local, signalled while it runs a command).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from roles.summary import why
from tests.unit.fakehost import PYINFRA, REPO, plan
from tests.unit.test_docker import converged


def test_the_summary_shows_apts_first_error_not_its_last_line():
    # apt-get install racing another apt (Debian 12's apt 2.6 wording).
    out = ["Reading package lists...",
           "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 "
           "(apt-get)",
           "N: Be aware that removing the lock file is not a solution and may break your system.",
           "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is "
           "another process using it?"]
    assert why(out) == out[1]
    dpkg = ["Setting up docker.io (20.10.24+dfsg1-1+b3) ...",
            "dpkg: error processing package docker.io (--configure):",
            " installed docker.io package post-installation script subprocess returned error "
            "exit status 1",
            "Errors were encountered while processing:", " docker.io"]
    assert why(dpkg) == "dpkg: error processing package docker.io (--configure):"
    assert why(["one", "", "the last  "]) == "the last"
    assert why([]) == ""


def test_an_error_on_stderr_wins_over_a_progress_line_printed_after_it_on_stdout():
    # roles/download.py's fetch: the duration on stdout, the checksum mismatch on stderr.
    stderr = ["checksum mismatch for http://mirror/a.deb: expected sha256 aa, got bb"]
    stdout = ["downloaded a.deb: 3 KiB in 1 s"]
    assert why(stderr, stdout) == stderr[0]
    assert why([], stdout) == stdout[0]  # a command that said nothing on stderr
    assert why(["not it"], ["E: apt's own reason"]) == "E: apt's own reason"


def test_a_broken_daemon_json_fails_its_host_only_naming_the_file_and_the_parser():
    good = converged("good", "debian12", "distro")
    # A converged host whose daemon.json has a trailing comma (hand-edited).
    broken = converged("bad", "debian12", "distro")
    broken.file("/etc/docker/daemon.json", '{\n    "log-driver": "json-file",\n}\n', replace=True)
    result = plan("deploy/docker.py", [broken, good])
    assert result.returncode == 0, result.output[-3000:]
    assert result.changes("bad") == ["Docker Engine | Stop this host"]
    stop = next(op for op in result.ops if op["name"] == "Docker Engine | Stop this host")
    assert stop["hosts_with_change"] == ["@fake/bad"]
    assert "Traceback" not in result.output


def _run_and_signal(tmp_path, signum):
    deploy = tmp_path / "long.py"
    deploy.write_text(
        "from pyinfra.operations import server\n"
        "from roles import summary\n"
        "summary.record('cpu')\n"
        "server.shell(name='quick', commands=['true'])\n"
        f"server.shell(name='long', commands=['touch {tmp_path}/started; sleep 60'])\n")
    run = subprocess.Popen([PYINFRA, "@local", str(deploy), "-y"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYINFRA_PROGRESS": "off"})
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    run.send_signal(signum)
    out, err = run.communicate(timeout=60)
    return err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_says_interrupted_never_ok(tmp_path, signum):
    err = _run_and_signal(tmp_path, signum)
    assert "--> sdinfra summary:" in err, err[-2000:]
    row = err.split("--> sdinfra summary:", 1)[1].splitlines()[2]
    assert row.split()[0] == "@local" and row.split()[-1] == "interrupted", err[-2000:]
