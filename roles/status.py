"""
Day 2: what each host's web UI is doing now, read in one command per host; changes nothing.

    pyinfra inventories/home.py deploy/status.py

Per host: backend, image and image id, web UI version, container state and health, uptime,
restart count, models present, published address, whether torch sees the GPU inside the running
container (asked of that container: ``docker exec CTR python3 -c "import torch; ..."``), disk
used by models and outputs, and free disk. A table on the terminal when the run ends, and the
same as JSON in ``sdinfra-status.json`` (or the file ``SDINFRA_STATUS_JSON`` names).

.. code:: python

    from roles import status
    status.read()
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from datetime import datetime, timezone

from pyinfra import host
from pyinfra.api import FactBase

from roles import summary
from roles.settings import read
from roles.webui import BUILT_IMAGES, BUILT_TAG, MODELS, PROJECT
from roles.webui.settings import SETTINGS

INSPECT = "\n".join([
    'service={{index .Config.Labels "com.docker.compose.service"}}',
    "image={{.Config.Image}}", "image_id={{.Image}}", "state={{.State.Status}}",
    "health={{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
    "started={{.State.StartedAt}}", "restarts={{.RestartCount}}",
    "ports={{range $p, $b := .NetworkSettings.Ports}}{{range $b}}{{.HostIp}}:{{.HostPort}} "
    "{{end}}{{end}}",
])
GPU = "import torch; print(torch.cuda.is_available())"


class WebuiStatus(FactBase):
    """The project's container as Docker shows it, the models, disk use; see the module."""

    def command(self, directory):
        q = shlex.quote(directory)
        return (
            "echo now=$(date +%s); "
            f"c=$(docker ps -aq --filter label=com.docker.compose.project={PROJECT} "
            "2>/dev/null | head -n 1); "
            f"if [ -n \"$c\" ]; then docker inspect -f {shlex.quote(INSPECT)} \"$c\"; "
            "[ \"$(docker inspect -f '{{.State.Running}}' \"$c\")\" = true ] && "
            f"echo gpu=$(timeout 60 docker exec \"$c\" python3 -c {shlex.quote(GPU)} "
            "2>/dev/null | tail -n 1); fi; "
            f"for f in {q}/{MODELS}/*; do [ -e \"$f\" ] && echo \"model=${{f##*/}}\"; done; "
            f"du -sk {q}/models {q}/outputs 2>/dev/null | sed 's/^/du=/'; "
            f"df -Pk {q} 2>/dev/null | awk 'NR == 2 {{ print \"free=\" $4 }}'; true"
        )

    @staticmethod
    def default():
        return {"models": [], "du": {}}

    def process(self, output):
        found = {"models": [], "du": {}}
        for line in output:
            key, _, value = line.partition("=")
            if key == "model":
                found["models"].append(value)
            elif key == "du":
                size, _, path = value.partition("\t")
                found["du"][os.path.basename(path)] = int(size) * 1024 if size.isdigit() else None
            elif key:
                found[key] = value.strip()
        return found


def summarize(found: dict) -> dict:
    """What the table and the JSON say of a host, from WebuiStatus's answer."""
    now = int(found.get("now", 0) or 0)
    uptime = None
    started = found.get("started", "")
    if found.get("state") == "running" and started:
        when = datetime.fromisoformat(started[:19]).replace(tzinfo=timezone.utc)
        uptime = max(0, now - int(when.timestamp()))
    image = found.get("image", "")
    gpu = {"True": True, "False": False}.get(found.get("gpu", ""))
    return {
        "backend": found.get("service") or None,
        "image": image or None, "image_id": found.get("image_id") or None,
        "version": version_of(image),
        "state": found.get("state") or "no container",
        "health": found.get("health") if found.get("health") not in (None, "none") else None,
        "uptime_s": uptime,
        "restarts": int(found["restarts"]) if found.get("restarts", "").isdigit() else None,
        "models": found.get("models", []),
        "published": found.get("ports") or None,
        "gpu_visible": gpu,
        "models_bytes": found.get("du", {}).get("models"),
        "outputs_bytes": found.get("du", {}).get("outputs"),
        "free_bytes": int(found["free"]) * 1024 if found.get("free", "").isdigit() else None,
    }


def version_of(image: str) -> str | None:
    """The web UI release an image is: a built one's tag says it (``cpu-v1.10.1-3f2a9c01d4e5``,
    see roles.webui.image_of), a prebuilt one's tag is taken for it."""
    name, colon, tag = image.rpartition(":")
    if not colon or "/" in tag:
        return None
    built = BUILT_TAG.fullmatch(tag) if name == BUILT_IMAGES else None
    return built["version"] if built else tag


def read_status() -> None:
    """Read the current host's status; printed with the others' when the run ends."""
    values = read(host, SETTINGS)
    found = host.get_fact(WebuiStatus, directory=values["webui_dir"].rstrip("/"))
    collected = summary.collector()
    collected.status_printer = _print
    collected.status[host.name] = summarize(found)


def _size(n) -> str:
    return "-" if n is None else f"{n / 2**30:.1f}G" if n >= 2**30 else f"{n / 2**20:.0f}M"


def _print(collected: summary.Collector) -> None:
    hosts = collected.status
    path = os.environ.get("SDINFRA_STATUS_JSON", "sdinfra-status.json")
    with open(path, "w") as out:
        json.dump(hosts, out, indent=1, sort_keys=True)
    header = ("host", "backend", "version", "state", "health", "up", "restarts", "gpu",
              "models", "published", "models/outputs", "free")
    rows = [header]
    for name, s in sorted(hosts.items()):
        rows.append((name, s["backend"] or "-", s["version"] or "-", s["state"],
                     s["health"] or "-",
                     "-" if s["uptime_s"] is None else f"{s['uptime_s']} s",
                     "-" if s["restarts"] is None else str(s["restarts"]),
                     {True: "yes", False: "no", None: "-"}[s["gpu_visible"]],
                     ",".join(s["models"]) or "-", s["published"] or "-",
                     f"{_size(s['models_bytes'])}/{_size(s['outputs_bytes'])}",
                     _size(s["free_bytes"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    err = sys.stderr
    err.write("\n--> sdinfra status:\n")
    for row in rows:
        err.write("    " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
    err.write(f"    (JSON: {path})\n")
    err.flush()
