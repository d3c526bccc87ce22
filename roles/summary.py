"""
The end-of-run summary of deploy/site.py: per host, the backend it got, where its web UI
answers, and what failed.

Deploy files run while pyinfra plans; the results exist only after it has executed. So the
deploy records what it planned for each host (``record``) and registers one ``atexit`` printer,
which reads pyinfra's state when the run is over: hosts that could not be reached, the first
operation that failed on a host and its last error line.
"""

from __future__ import annotations

import atexit
import sys

from pyinfra import host as current_host

_planned: dict[str, dict] = {}
_registered = False
_refused: list[str] = []


def record(backend: str, url: str = "", note: str = "") -> None:
    """What the current host is planned to get; printed with its outcome when the run ends."""
    _planned[current_host.name] = {"backend": backend, "url": url, "note": note}
    _register()


def skip(note: str) -> None:
    """The current host is not this deploy's: left alone, and the summary says why."""
    _planned[current_host.name] = {"backend": "-", "url": "", "note": note, "skipped": True}
    _register()


def refused(reason: str) -> None:
    """The run stops before any host changes (a settings error): every host says so."""
    if current_host.state.is_executing:
        return  # too late to say no host changed: the failure is the host's own
    _refused.append(reason)
    _register()


def _register() -> None:
    global _registered
    if not _registered:
        _registered = True
        state = current_host.state
        atexit.register(_print, state)


def detail(text: str) -> None:
    """A line about the current host printed under the summary table (the ROCm kernel driver
    and why); nothing when the run records no summary for it (deploy/rocm.py)."""
    plan = _planned.get(current_host.name)
    if plan is not None:
        plan.setdefault("details", []).append(text)


def _failure(state, host) -> str:
    for op_hash in state.get_op_order():
        if op_hash not in state.ops.get(host, {}):
            continue
        meta = state.get_op_data_for_host(host, op_hash).operation_meta
        if meta.is_complete() and meta.did_error():
            names = ", ".join(sorted(state.op_meta[op_hash].names))
            lines = [line.strip() for line in meta.stderr_lines + meta.stdout_lines
                     if line.strip()]
            # apt says why on an "E:" line, then goes on printing progress; prefer the reason.
            reasons = [line for line in lines if line.startswith("E:")] or lines
            return f"failed at {names}" + (f": {reasons[-1]}" if reasons else "")
    return "failed"


def rows(state) -> list[tuple[str, str, str, str]]:
    """(host, backend, url, status) for every host of the inventory."""
    from pyinfra.api.state import StateStage

    executed = state.current_stage in (StateStage.Execute, StateStage.Disconnect)
    result = []
    for host in state.inventory:
        plan = _planned.get(host.name)
        if _refused:
            # pyinfra stops before executing anything: nothing was planned to the end, nothing
            # ran, whatever was recorded for the hosts planned before the error.
            result.append((host.name, "-", "-", f"not changed: the run was refused before any "
                                                f"change ({_refused[0]})"))
            continue
        if plan is None:
            status = "unreachable" if host in state.failed_hosts else "not run"
            result.append((host.name, "-", "-", status))
            continue
        if plan.get("skipped"):
            status = plan["note"]
        elif plan["backend"] == "none":
            status = f"not deployed: {plan['note']}"
        elif host in state.failed_hosts:
            status = _failure(state, host)
        elif not executed:
            status = "planned (dry run)"
        else:
            status = "ok" + (f" ({plan['note']})" if plan["note"] else "")
        result.append((host.name, plan["backend"], plan["url"] or "-", status))
    return result


def _print(state) -> None:
    table = rows(state)
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
    details = [(name, text) for name, plan in _planned.items()
               for text in plan.get("details", [])]
    if details:
        out.write("\n")
        for name, text in details:
            out.write(f"    {name}: {text}\n")
    out.flush()
