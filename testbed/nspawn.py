"""Booting and powering off one fleet host: its systemd-nspawn process, in the host's own
network namespace and cgroups, with its console written to a log file."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from testbed.network import Host
from testbed.system import _remove_cgroup, _remove_tree

NSPAWN_RUN = Path("/run/systemd/nspawn")
# Every booted host's systemd, journald, logind, dbus and udev each hold inotify instances, all
# root's: the kernel's default of 128 per user runs out at about 17 hosts, and the next boot
# fails with "Too many open files" (seen with two test files' fleets, a demo and a bench up).
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
MIN_INOTIFY_INSTANCES = 1024


def allow_inotify(path: Path = INOTIFY_INSTANCES, least: int = MIN_INOTIFY_INSTANCES) -> None:
    """Raise the per-user inotify instance limit to ``least`` if it is lower (never lower it).
    Left raised at teardown, like IP forwarding: other fleets may be up."""
    if int(path.read_text()) < least:
        path.write_text(f"{least}\n")


def boot(host: Host, log_path: Path) -> subprocess.Popen:
    """Start the host's systemd-nspawn (it boots systemd); its console goes to log_path."""
    env = dict(os.environ, SYSTEMD_SECCOMP="0", SYSTEMD_NSPAWN_API_VFS_WRITABLE="network")
    cmd = ["systemd-nspawn", "-D", host.root, "-b",
           f"--network-namespace-path=/run/netns/{host.netns}", "--register=no",
           "--keep-unit", f"--machine={host.machine}", "--console=passive",
           "--capability=all", "--resolv-conf=off"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.ctime()}: {shlex.join(cmd)}\n".encode())
        log.flush()
        # Own session: a Ctrl-C in the terminal reaches us, and we power the hosts off
        # cleanly, instead of reaching every nspawn at once.
        cgroups = host.cgroups
        for cgroup in cgroups:
            _remove_cgroup(cgroup)        # leftovers of a previous boot
            cgroup.mkdir(exist_ok=True)

        def join_cgroups() -> None:       # runs in the child, before exec
            for cgroup in cgroups:
                (cgroup / "cgroup.procs").write_text("0")

        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=join_cgroups)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n--- last lines of {path}:\n" + "\n".join(tail)


def poweroff(hosts: list[Host], procs: dict[str, subprocess.Popen], log,
             timeout: float = 30) -> None:
    """Power hosts off together (no threads: this also runs from atexit, at shutdown).
    ``procs``: the nspawn processes this process started, by host name (reaped, then dropped)."""
    running = [h for h in hosts if h.running()]
    for host in running:
        # SIGTERM to nspawn = a clean poweroff of the host (~1.5 s).
        os.kill(host.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for host in running:
        if not _wait_exit(host, procs, max(0.0, deadline - time.monotonic())):
            log(f"fleet: {host.name} did not power off in {timeout:.0f} s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(host.pid, signal.SIGKILL)
            _wait_exit(host, procs, 10)
    for host in hosts:
        # Anything still in the host's network namespace (its init, should nspawn have
        # died without taking it along) goes too; killing its init ends its PID namespace.
        for _ in range(50 if host.owns_network() else 0):
            pids = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True,
                                  text=True).stdout.split()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.1)
        for sub in ("propagate", "unix-export", "incoming"):
            with contextlib.suppress(OSError):
                _remove_tree(NSPAWN_RUN / sub / host.machine)
        if host.owns_network():
            for cgroup in host.cgroups:
                _remove_cgroup(cgroup)
        host.pid = host.pid_start = None
        procs.pop(host.name, None)


def _wait_exit(host: Host, procs: dict[str, subprocess.Popen], timeout: float) -> bool:
    proc = procs.get(host.name)
    if proc is not None:      # our child: reap it
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while host.running():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
