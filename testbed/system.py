"""What the fleet does on this machine: run commands (a failure raises FleetError saying what
was being done), write files, find processes, unmount and remove trees, and make and remove
the hosts' own cgroups."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from pathlib import Path

# Debian packages this harness runs on the machine (busybox-static: only for the Docker check's
# tiny image). The CI setup installs these.
HOST_PACKAGES = (
    "debootstrap", "debian-archive-keyring", "systemd-container", "zstd", "tar", "iptables",
    "iproute2", "openssh-client", "busybox-static",
)


class FleetError(RuntimeError):
    """Something about the fleet failed; the message names the host where there is one."""


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure raise FleetError saying what we were doing and what it said."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    try:
        return subprocess.run(cmd, check=True, **kwargs)
    except FileNotFoundError as e:
        raise FleetError(f"{what}: {cmd[0]} is not installed (the fleet needs the Debian "
                         f"packages {' '.join(HOST_PACKAGES)})") from e
    except subprocess.CalledProcessError as e:
        output = (e.stderr or e.stdout or "").strip()
        raise FleetError(f"{what}: `{shlex.join(cmd)}` exited {e.returncode}: {output}") from e


def _quiet(cmd: list[str]) -> bool:
    """Run a cleanup command whose failure (thing already gone) is fine; True if it worked."""
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _write(path: Path, text: str, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)


def _write_atomic(path: Path, text: str) -> None:
    # Another process may read fleet.json at any moment (status, down): never show half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _proc_start_time(pid: int) -> int | None:
    """Start time of a process (clock ticks since boot), None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _nspawn_pids_using(root: str) -> list[int]:
    """systemd-nspawn processes running a host from this root directory."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                args = (proc / "cmdline").read_bytes().split(b"\0")
                if args and args[0].endswith(b"systemd-nspawn") and root.encode() in args:
                    pids.append(int(proc.name))
    return pids


def _umount_below(path: Path) -> None:
    """Unmount anything still mounted at or below path (e.g. debootstrap's /proc after a crash)."""
    prefix = str(path.resolve())
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].encode().decode("unicode_escape")
            if target == prefix or target.startswith(prefix + "/"):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        _quiet(["umount", "-l", target])


def _remove_tree(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    _umount_below(path)
    # --one-file-system: should anything still be mounted below, never delete through it.
    _run(["rm", "-rf", "--one-file-system", str(path)], f"removing {path}")


def _systemd_cgroup_roots() -> list[Path]:
    """Where systemd-nspawn --keep-unit puts a container's cgroups: the hierarchies systemd
    tracks processes in (name=systemd and the unified one on a cgroup v1 "hybrid" machine, the
    unified one alone on a cgroup v2 machine), each at this process's own cgroup."""
    mine = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        mine[controllers] = path
    roots = []
    for mount, key in ((Path("/sys/fs/cgroup/systemd"), "name=systemd"),
                       (Path("/sys/fs/cgroup/unified"), ""),
                       (Path("/sys/fs/cgroup"), "")):
        if (mount / "cgroup.procs").exists() and key in mine:
            if mount == Path("/sys/fs/cgroup") and not (mount / "cgroup.controllers").exists():
                continue     # the tmpfs holding v1 hierarchies, not a cgroup v2 root
            roots.append(mount / mine[key].lstrip("/"))
    return roots


def _remove_cgroup(path: Path) -> None:
    """Remove a cgroup directory and the empty cgroups below it (cgroupfs only allows rmdir)."""
    if not path.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)
