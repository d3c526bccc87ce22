"""
What the stack's directory and Docker hold on a host, read in one round trip (``ProjectState``),
and the GPU groups' ids (``GroupIds``). Docker's own files are read on the controller
(``docker_state``); the host only decides which docker command the same round trip still needs.

.. code:: python

    state = host.get_fact(ProjectState, directory="/opt/sd", paths=[...], images=[image])
    state["running"], state["current"], state["health"]
"""

from __future__ import annotations

import json
import re
import shlex

from pyinfra.api import FactBase

from roles.download import TRUSTED_SHA256, parse_trusted
from roles.parsers import MARKER, parts
from roles.shell import GPU_GROUPS, group_ids
from roles.summary import STATUSES
from roles.webui.render import MODELS, PROJECT

# Docker's health as the summary of a no-change run says it.
HEALTH_SAID = {
    "healthy": STATUSES["healthy"],
    "starting": "starting (Docker's healthcheck has not passed yet)",
    "unhealthy": STATUSES["unhealthy"].format(why="Docker's healthcheck (/internal/ping) fails"),
}


DOCKER_ROOT = "/var/lib/docker"
PROC = "/proc"
SHA256SUM_LINE = re.compile(r"^[0-9a-f]{64}  ")
# The parts of ProjectState's output that tell what Docker runs (roles.parsers' markers), after
# every other line: "container", the config.v2.json of each container of the project that runs;
# "ps", `docker ps`'s SERVICE|STATUS|IMAGE lines when Docker's files show none; "restarts",
# SERVICE|COUNT of what "ps" listed; "image", each image asked for that the host has;
# "registry", the fleet registry's name of the image when that registry has it (asked only of
# the host that builds for the fleet, see ``docker_command``).
DOCKER_PARTS = ("container", "ps", "restarts", "image", "registry")


def ere(text: str) -> str:
    """``text`` as a POSIX extended regular expression matching it literally (grep -E): only
    ERE's own specials are escaped (GNU grep 3.8 warns of a stray backslash before others)."""
    return re.sub(r'([.\[\]()*+?{}|^$\\])', r'\\\1', text)


def docker_command(images, pushed: str = "") -> str:
    """
    Shell: the project's running services and which of ``images`` the host has, without a
    docker command on a converged host (each costs the host ~20 ms of CPU, the daemon too).

    Docker's own files first: the config.v2.json (one JSON line) of each of the project's
    containers that Docker says runs AND whose process is alive in that container's cgroup
    (/proc/PID/cgroup names the container's id: a stale file, a dead daemon's leftovers or
    another data-root cannot pass that) is printed whole, read on the controller
    (``docker_state``). An image asked for is there when repositories.json tags it with the
    image id of such a container (what `docker ps` shows as .Image). What the files do not show
    is asked for: `docker ps` when no container passed, `docker image inspect` for the images.
    Only these decisions are taken here, because they choose the commands of the same round
    trip; the JSON itself is read in Python.

    ``pushed`` (the fleet registry's name of the image, on the host that builds it for the
    fleet): when the host has the image, whether the registry has it too (``docker manifest
    inspect``, the registry's manifest over plain HTTP, as the daemon's insecure-registries
    entry allows pulls): one more process, no more round trip.

    The shell only ever cuts a JSON line where what it looks for comes early ("Running", "Pid"
    are .State's, printed first) or matches it whole (``case``): dash's ``${j##*PATTERN}`` on a
    6 KB line costs ~40 ms of CPU (it tries every prefix), which was most of what a converged
    host spent on this fact. The image id is matched the other way round: repositories.json's
    "TAG":"ID" pairs for the images asked for, each ID looked for in the live containers' JSON.
    One grep reads both kinds of file (each process costs a container ~1 ms of CPU).
    """
    words = " ".join(shlex.quote(image) for image in images)
    label = f'"com.docker.compose.project":"{PROJECT}"'  # as config.v2.json writes it
    # repositories.json's "TAG":"sha256:ID" entries of the images asked for.
    pairs = " ".join("-e " + shlex.quote(f'"{ere(image)}":"sha256:[0-9a-f]*"') for image in images)
    # One line, as every fact's command (the unit tests' fake reads them from pyinfra's log).
    return " ".join([
        "if command -v docker >/dev/null; then",
        # The newline: the last character of the shell's default IFS (space, tab, newline).
        "nl=${IFS#??} js='' ok='' ps='' had='' pairs='';",
        # One grep for both: the project's containers, FILE:JSON (the whole line; the id is the
        # directory), and repositories.json's pairs, FILE:PAIR.
        f"found=$(grep -oHE -e {shlex.quote('^.*' + ere(label) + '.*$')} {pairs} -- "
        f"{DOCKER_ROOT}/containers/*/config.v2.json {DOCKER_ROOT}/image/*/repositories.json "
        "2>/dev/null);",
        # One JSON line each; no glob in it is expanded.
        "set -f; IFS=$nl;",
        "for e in $found; do",
        "unset IFS; f=${e%%:*} j=${e#*:};",
        "case $f in */repositories.json) pairs=\"$pairs$nl$j\"; continue ;; esac;",
        "id=${f%/*}; id=${id##*/};",
        # The first "Running" and "Pid" keys are .State's: JSON escapes a quote inside a string,
        # so '"Pid":' in an environment variable or argument reads '\"Pid\":'.
        "case $j in *'\"Running\":true'*) ;; *) continue ;; esac;",
        "p=${j#*'\"Pid\":'}; p=${p%%[!0-9]*};",
        f'[ "${{p:-0}}" -gt 0 ] && [ -r {PROC}/"$p"/cgroup ] || continue;',
        # (2>/dev/null: the process may end between the test and the read)
        "alive=''; { while IFS= read -r l; do case $l in *\"$id\"*) alive=1; break ;; esac;",
        f"done < {PROC}/\"$p\"/cgroup; }} 2>/dev/null;",
        '[ -n "$alive" ] || continue;',
        "echo '### container'; printf '%s\\n' \"$j\"; js=\"$js$nl$j\";",
        "done;",
        "unset IFS; set +f;",
        '[ -n "$js" ] || {',
        f"ps=$(docker ps --filter label=com.docker.compose.project={PROJECT} "
        "--format '{{.Label \"com.docker.compose.service\"}}|{{.Status}}|{{.Image}}' "
        "2>/dev/null);",
        "[ -n \"$ps\" ] && { printf '### ps\\n%s\\n' \"$ps\";",
        # Docker's restart count of each, which ps does not show: between two crashes a
        # container its policy restarts reads "Up 1 second (health: starting)".
        "r=$(docker inspect -f '{{index .Config.Labels \"com.docker.compose.service\"}}|"
        f"{{{{.RestartCount}}}}' $(docker ps -q --filter label=com.docker.compose.project={PROJECT}) "
        "2>/dev/null);",
        "[ -n \"$r\" ] && printf '### restarts\\n%s\\n' \"$r\"; }; };",
        # A tag counts when its image id is the one a live container runs: the container's
        # "Image":"sha256:ID" key (its .Config.Image is a name, or that same id).
        "[ -n \"$js\" ] && for t in $pairs; do",
        "case $js in *\"\\\"Image\\\":\\\"${t#*'\":\"'}\"*) ok=\"$ok$nl${t%%'\":\"'*}\\\"\" ;; esac;",
        "done;",
        f"for w in {words}; do",
        "case \"$nl$ok$nl$ps$nl\" in *\"$nl\\\"$w\\\"$nl\"*|*\"|$w$nl\"*) ;;",
        "*) docker image inspect \"$w\" >/dev/null 2>&1 || continue ;; esac;",
        "printf '### image\\n%s\\n' \"$w\"; had=1;",
        "done;",
        *([f"[ -n \"$had\" ] && docker manifest inspect --insecure {shlex.quote(pushed)} "
           f">/dev/null 2>&1 </dev/null && printf '### registry\\n%s\\n' {shlex.quote(pushed)};"]
          if pushed else []),
        "fi",
    ])


def restart_loop(restarts: int, healthy: bool) -> str | None:
    """The summary's status of a service Docker's restart policy restarted ``restarts`` times:
    not healthy now, it is a crash loop caught between two crashes (its health is "starting"
    again after each restart); else None."""
    if restarts and not healthy:
        return STATUSES["unhealthy"].format(why=f"restart loop: restarted {restarts} times")
    return None


def docker_state(parts) -> dict:
    """
    ``docker_command``'s parts (roles.parsers.parts) -> the running services, the image each
    was started from (.Config.Image), Docker's health of each (.State.Health.Status, as the
    summary says it) and the images asked for that the host has.

    .. code:: python

        docker_state(parts(["### ps", "cpu|sdinfra/webui:cpu-v1"], DOCKER_PARTS))
        # {"running": ["cpu"], "current": {"cpu": "sdinfra/webui:cpu-v1"}, "health": {},
        #  "images": [], "pushed": []}
    """
    found = {"running": [], "current": {}, "health": {}, "images": [], "pushed": []}
    listed, restarted = {}, {}  # what docker ps said of each service; Docker's restart counts
    for name, lines in parts:
        for line in lines:
            if name == "container":
                try:
                    container = json.loads(line)
                except ValueError:
                    continue
                config = container.get("Config") or {}
                service = (config.get("Labels") or {}).get("com.docker.compose.service")
                if not service:
                    continue
                found["running"].append(service)
                found["current"][service] = config.get("Image", "")
                status = ((container.get("State") or {}).get("Health") or {}).get("Status")
                if status:
                    found["health"][service] = HEALTH_SAID.get(status, status)
                looping = restart_loop(container.get("RestartCount") or 0, status == "healthy")
                if looping:
                    found["health"][service] = looping
            elif name == "ps":
                # SERVICE|STATUS|IMAGE (the image last: the shell matches "|IMAGE" at the end)
                service, sep, rest = line.partition("|")
                status, _, image = rest.rpartition("|")
                if sep and service:
                    found["running"].append(service)
                    found["current"][service] = image
                    listed[service] = status
                    if status.startswith("Restarting"):
                        found["health"][service] = STATUSES["unhealthy"].format(
                            why="restart loop: Docker shows it restarting")
            elif name == "restarts":
                service, _, count = line.rpartition("|")
                restarted[service] = int(count) if count.isdigit() else 0
            elif name == "image" and line:
                found["images"].append(line)
            elif name == "registry" and line:
                found["pushed"].append(line)
    # As for a container read from Docker's files.
    for service, status in listed.items():
        looping = restart_loop(restarted.get(service, 0), "(healthy)" in status)
        if looping and service not in found["health"]:
            found["health"][service] = looping
    return found


class ProjectState(FactBase):
    """
    What the stack's directory and Docker hold, read in one round trip. ``paths`` are hashed
    (small files); ``models`` are trusted from their sidecars (see roles.download), hashed only
    when a sidecar is missing or its size and mtime are not the file's.

    .. code:: python

        {"gids": {"video": "44", "render": "110"}, "running": ["cpu"],
         "current": {"cpu": "sdinfra/webui:cpu-v1.10.1-3f2a9c01d4e5"},
         "health": {"cpu": "healthy"},
         "images": ["sdinfra/webui:cpu-v1.10.1-3f2a9c01d4e5"], "models": ["sd-v1-5.safetensors"],
         "files": {"/opt/stable-diffusion/webui.env": ("644", "ab12...")},
         "dirs": {"/opt/stable-diffusion": "755"},
         "trusted": {"/opt/stable-diffusion/models/Stable-diffusion/sd.safetensors": "6ce0..."},
         "hashed": {"/opt/.../other.safetensors": ("5f3a...", "4265380512 1717000000")}}
    """

    ahead = "project-state"  # its part's name when read ahead (roles.hostfacts)

    def command(self, directory, paths, images, models=(), pushed=""):
        quoted = " ".join(shlex.quote(p) for p in paths)
        # The models: trusted from their sidecars, hashed only when one is stale or missing.
        verify = (f"set -- {' '.join(shlex.quote(m) for m in models)}; {TRUSTED_SHA256}; "
                  if models else "")
        return (
            f"echo '{MARKER}{self.ahead}'; "
            f"{GPU_GROUPS}; "
            # Two processes whatever the number of paths (one stat, one sha256sum), read
            # together on the controller.
            f"stat -L -c 'S=%F=%a=%n' -- {quoted} 2>/dev/null; "
            f"sha256sum -- {quoted} 2>/dev/null; "
            # The models there, as `ls` lists them (no dot files), without a process.
            f"for f in {shlex.quote(directory + '/' + MODELS)}/*; do "
            "{ [ -e \"$f\" ] || [ -L \"$f\" ]; } && echo \"model=${f##*/}\"; done; "
            f"{verify}"
            # What a run killed mid-way left: partial downloads and uploads, temporary files.
            f"for f in {shlex.quote(directory + '/' + MODELS)}/.*.sdinfra-part.* "
            f"{shlex.quote(directory + '/' + MODELS)}/.*.sdinfra-upload "
            f"{shlex.quote(directory)}/*.sdinfra-new {shlex.quote(directory)}/secrets/*.sdinfra-new; "
            "do [ -e \"$f\" ] && echo \"leftover=$f\"; done; "
            f"{docker_command(images, pushed)}; "
            "true"
        )

    @staticmethod
    def default():
        return {"gids": {}, "running": [], "images": [], "models": [],
                "files": {}, "dirs": {}, "trusted": {}, "hashed": {}, "leftover": [], "health": {},
                "current": {}, "pushed": []}

    def process(self, output):
        state = self.default()
        output = list(output)
        # Docker's parts come last: the lines before them are the directory's.
        docker = next((n for n, line in enumerate(output)
                       if line.startswith(MARKER) and line[len(MARKER):] in DOCKER_PARTS),
                      len(output))
        state.update(docker_state(parts(output[docker:], DOCKER_PARTS)))
        output = output[:docker]
        state["trusted"], state["hashed"] = parse_trusted(output)
        state["gids"] = group_ids(output)
        kinds, sums = {}, {}
        for line in output:
            if SHA256SUM_LINE.match(line):  # sha256sum's "DIGEST  PATH"
                sums[line[66:]] = line[:64]
                continue
            key, _, rest = line.partition("=")
            if key == "S":  # stat's S=TYPE=MODE=PATH
                kind, mode_path = rest.split("=", 1)
                mode, _, path = mode_path.partition("=")
                kinds[path] = (kind, mode)
            elif key in ("model", "leftover"):
                state[{"model": "models"}.get(key, key)].append(rest)
        for path, (kind, mode) in kinds.items():
            if kind == "directory":
                state["dirs"][path] = mode
            elif kind.startswith("regular") and path in sums:
                state["files"][path] = (mode, sums[path])
        return state


class GroupIds(FactBase):
    """The ids of the GPU device groups: ``{"video": "44", "render": "110"}``."""

    default = dict

    def command(self):
        return f"{GPU_GROUPS} || true"

    def process(self, output):
        return group_ids(output)
