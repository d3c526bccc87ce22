"""
Everything said when a run ends, through one collector per run (``collector()``): the summary of
deploy/site.py (per host, the backend it got, where its web UI answers, what failed), the hosts
that need a reboot (the rocm and nvidia roles), the status table of deploy/status.py.

Deploy files run while pyinfra plans; the results exist only after it has executed. So the roles
tell the collector what they planned for each host (``record``, ``skip``, ``reboot``, ...) and
the collector's one ``atexit`` printer reads pyinfra's state when the run is over: hosts that
could not be reached, the first operation that failed on a host and the line of its output that
says why (``why``).

A run stopped by Ctrl-C or SIGTERM says ``interrupted`` for every host whose operations did
not all finish, never ``ok``. Every status a host can get is written here (``STATUSES``).
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import sys
import weakref
from dataclasses import dataclass, field
from typing import Callable

from pyinfra import host as current_host

# What the summary says of a host, in one place (other roles' statuses belong here too).
STATUSES = {
    "unreachable": "unreachable",
    "not run": "not run",
    "not deployed": "not deployed: {note}",
    "failed": "failed at {operation}: {why}",
    "dry": "planned (dry run)",
    "interrupted": "interrupted",
    "ok": "ok",
    # The web UI's container, as Docker reports it (roles.webui: the start's wait, or the state
    # a no-change run read).
    "healthy": "healthy",
    "starting": "starting (waited {seconds} s)",
    "unhealthy": "unhealthy: {why}",
    "rolled back": "rolled back: {why}",
}
HEALTH = "sdinfra-health: "  # how the start's wait says what it saw (roles.webui.health_wait)
LOG_LINES = "sdinfra-log: "  # the container's last log lines, each behind this mark



@dataclass
class Reboot:
    """A host that needs a reboot this run did not do: said once more when the run ends."""

    host: str
    what: str  # "ROCm", "NVIDIA": the line's prefix
    message: str  # after "reboot HOSTS: "
    operation: object = None  # the install's operation: a host where it failed says why itself


@dataclass
class Collector:
    """What is said when one run ends, gathered while it is planned and executed."""

    state: object
    planned: dict = field(default_factory=dict)  # host name -> {"backend", "url", "note", ...}
    refused: list = field(default_factory=list)  # why the run stopped before any change
    interrupted: list = field(default_factory=list)  # the signal that stopped the run
    reboots: list = field(default_factory=list)  # Reboot
    status: dict = field(default_factory=dict)  # host name -> roles.status.summarize(...)
    status_printer: Callable | None = None  # roles.status prints its table
    checked: dict = field(default_factory=dict)  # roles.settings.validate's verdicts
    printing: bool = False  # the summary table is printed at exit (a deploy recorded a host)

    def print_all(self) -> None:
        _print_reboots(self)
        if self.printing:
            _print(self)
        if self.status_printer is not None:
            self.status_printer(self)


# One collector per pyinfra run (State); a run is one process, tests may run several states.
_collectors: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def collector(state=None) -> Collector:
    """The collector of the run ``state`` (the current host's by default), printing at exit."""
    state = current_host.state if state is None else state
    found = _collectors.get(state)
    if found is None:
        found = _collectors[state] = Collector(state)
        atexit.register(found.print_all)
    return found


def fail(message: str) -> None:
    """
    Fail the current host, and only it, with ``message`` (a bad file on the host, ...): an
    operation that says it and exits non-zero, so that nothing after it runs on this host while
    the other hosts go on. Raising instead would stop the whole run.
    """
    from pyinfra.operations import server

    server.shell(name="Stop this host", commands=[f"echo {shlex.quote(message)} >&2; exit 1"])


def record(backend: str, url: str = "", note: str = "") -> None:
    """What the current host is planned to get; printed with its outcome when the run ends."""
    _summarized().planned[current_host.name] = {"backend": backend, "url": url, "note": note}


def skip(note: str) -> None:
    """The current host is not this deploy's: left alone, and the summary says why."""
    _summarized().planned[current_host.name] = {"backend": "-", "url": "", "note": note,
                                                "skipped": True}


def refused(reason: str) -> None:
    """The run stops before any host changes (a settings error): every host says so."""
    if current_host.state.is_executing:
        return  # too late to say no host changed: the failure is the host's own
    _summarized().refused.append(reason)


def reboot(what: str, message: str, operation=None) -> None:
    """
    The current host needs a reboot this run did not do: ``--> WHAT: reboot HOSTS: MESSAGE``
    when the run ends, without the hosts where ``operation`` (the install) failed.
    """
    collector().reboots.append(Reboot(current_host.name, what, message, operation))


def _print_reboots(found: Collector) -> None:
    for what in dict.fromkeys(r.what for r in found.reboots):
        needed, message = [], ""
        for r in found.reboots:
            op = r.operation
            if r.what != what or (op is not None and op.is_complete()
                                  and not op.did_succeed(False)):
                continue  # the install failed on that host: its error says more
            needed.append(r.host)
            message = r.message
        if needed:
            sys.stderr.write(f"\n--> {what}: reboot {', '.join(needed)}: {message}\n")


def _summarized() -> Collector:
    """The run's collector, with the summary printed at exit and on Ctrl-C/SIGTERM."""
    found = collector()
    if not found.printing:
        found.printing = True
        _on_signals(found)
    return found


def _on_signals(found: Collector) -> None:
    """
    Ctrl-C and SIGTERM end the run here: the summary is printed (``interrupted`` for each host
    whose operations did not all finish) and the process exits 130 or 143. pyinfra's own Ctrl-C
    handler raises SystemExit in whichever greenlet runs, which does not stop a command that
    is waiting on a host, and Python's default for SIGTERM exits without any summary.
    """
    def stop(signum, frame):
        found.interrupted.append(signal.Signals(signum).name)
        _print(found)
        sys.stdout.flush()
        os._exit(128 + signum)

    try:
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave the signals alone
        pass


def why(lines: list[str], stdout: list[str] = ()) -> str:
    """
    The line of a failed command's output that says why: apt's first ``E:`` line (the lock's
    holder, the missing package; later ones repeat it less precisely), else dpkg's first error,
    else the last line of ``lines`` (stderr). Only a command that said nothing on stderr is
    judged by the last line of its ``stdout``: progress lines there ("downloaded ... in 1 s")
    come after the error and say nothing of it.
    """
    lines = [line.strip() for line in lines if line.strip()]
    stdout = [line.strip() for line in stdout if line.strip()]
    for prefix in ("E:", "dpkg: error", "dpkg: "):
        found = [line for line in lines + stdout if line.startswith(prefix)]
        if found:
            return found[0]
    last = lines or stdout
    return last[-1] if last else ""


def _finished(state, host) -> bool:
    """Whether every operation of ``host`` ran to its end."""
    for op_hash in state.get_op_order():
        if op_hash in state.ops.get(host, {}):
            if not state.get_op_data_for_host(host, op_hash).operation_meta.is_complete():
                return False
    return True


def detail(text: str) -> None:
    """A line about the current host printed under the summary table (the ROCm kernel driver
    and why); nothing when the run records no summary for it (deploy/rocm.py)."""
    plan = collector().planned.get(current_host.name)
    if plan is not None:
        plan.setdefault("details", []).append(text)


def health(status: str) -> None:
    """The current host's web UI as a no-change run read it (``healthy``, ``starting``,
    ``unhealthy: ...``): shown instead of ``ok`` when this run started nothing."""
    plan = collector().planned.get(current_host.name)
    if plan is not None:
        plan["health"] = status


def _said_health(state, host, planned: dict) -> str | None:
    """What the start's wait said of ``host``: the summary's status, its log lines as details."""
    for op_hash in state.get_op_order():
        if op_hash not in state.ops.get(host, {}):
            continue
        meta = state.get_op_data_for_host(host, op_hash).operation_meta
        if not meta.is_complete():  # not run: the host failed before it (output unreadable)
            continue
        lines = meta.stdout_lines + meta.stderr_lines
        said = [line.strip()[len(HEALTH):] for line in lines if line.strip().startswith(HEALTH)]
        if said:
            logs = [line.rstrip()[len(LOG_LINES):] for line in lines
                    if line.startswith(LOG_LINES)]
            if logs and host.name in planned:
                planned[host.name].setdefault("details", []).extend(
                    ["the container's last log lines:"] + [f"  {line}" for line in logs])
            return said[-1]
    return None


def _failure(state, host, planned: dict) -> str:
    said = _said_health(state, host, planned)
    if said is not None:
        return said
    for op_hash in state.get_op_order():
        if op_hash not in state.ops.get(host, {}):
            continue
        meta = state.get_op_data_for_host(host, op_hash).operation_meta
        if meta.is_complete() and meta.did_error():
            names = ", ".join(sorted(state.op_meta[op_hash].names))
            reason = why(meta.stderr_lines, meta.stdout_lines)
            if not reason:
                return f"failed at {names}"
            return STATUSES["failed"].format(operation=names, why=reason)
    return "failed"


def rows(found: Collector) -> list[tuple[str, str, str, str]]:
    """(host, backend, url, status) for every host of the inventory."""
    from pyinfra.api.state import StateStage

    state, planned = found.state, found.planned
    executed = state.current_stage in (StateStage.Execute, StateStage.Disconnect)
    result = []
    for host in state.inventory:
        plan = planned.get(host.name)
        if found.refused:
            # pyinfra stops before executing anything: nothing was planned to the end, nothing
            # ran, whatever was recorded for the hosts planned before the error.
            result.append((host.name, "-", "-", f"not changed: the run was refused before any "
                                                f"change ({found.refused[0]})"))
            continue
        if plan is None:
            status = STATUSES["unreachable" if host in state.failed_hosts else "not run"]
            result.append((host.name, "-", "-", status))
            continue
        if plan.get("skipped"):
            status = plan["note"]
        elif plan["backend"] == "none":
            status = STATUSES["not deployed"].format(note=plan["note"])
        elif host in state.failed_hosts:
            status = _failure(state, host, planned)
        elif found.interrupted and (not executed or not _finished(state, host)):
            status = STATUSES["interrupted"]
        elif not executed:
            status = STATUSES["dry"]
        else:
            status = (_said_health(state, host, planned) or plan.get("health")
                      or STATUSES["ok"])
            status += f" ({plan['note']})" if plan["note"] else ""
        result.append((host.name, plan["backend"], plan["url"] or "-", status))
    return result


def _print(found: Collector) -> None:
    table = rows(found)
    if not table:
        return
    widths = [max(len(row[i]) for row in table + [("host", "backend", "web UI", "")])
              for i in range(3)]
    out = sys.stderr
    out.write("\n--> sdinfra summary:\n")
    out.write(f"    {'host':<{widths[0]}}  {'backend':<{widths[1]}}  "
              f"{'web UI':<{widths[2]}}  status\n")
    for name, backend, url, status in table:
        out.write(f"    {name:<{widths[0]}}  {backend:<{widths[1]}}  {url:<{widths[2]}}  "
                  f"{status}\n")
    details = [(name, text) for name, plan in found.planned.items()
               for text in plan.get("details", [])]
    if details:
        out.write("\n")
        for name, text in details:
            out.write(f"    {name}: {text}\n")
    out.flush()
