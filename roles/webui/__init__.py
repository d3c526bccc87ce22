"""
roles.webui: the AUTOMATIC1111 web UI as a compose stack, one service per backend.

The project directory (``webui_dir``) holds ``docker-compose.yml`` with ``cpu``, ``rocm`` and
``cuda`` services, a Dockerfile per backend, ``webui.env`` with the launch flags, and the
``models`` and ``outputs`` directories that survive rebuilds. Only the host's backend is started,
and only when a file changed, it is not running or it runs another image: a converged host
rebuilds and restarts nothing. A new image is prepared beside the running one, and a new
container that does not turn healthy is rolled back to the previous image and files
(``switch_script``).

.. code:: python

    from roles import preflight, webui
    webui.stack(backend="cpu", known=preflight.learn())
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import FactBase, FileUploadCommand, deploy, operation
from pyinfra.operations import files, server

from roles import docker, summary
from roles.summary import STATUSES
from roles.download import TRUSTED_SHA256, parse_trusted
from roles.hostfacts import HostFacts
from roles.parsers import MARKER, parts
from roles.progress import Shown, Upload, room, ticking
from roles.settings import host_error, read
from roles.shell import GPU_GROUPS, group_ids
from roles.webui import flags
from roles.webui.formats import FormatError, commandline, env_file, templates
from roles.webui.settings import LAUNCHER_SOURCES, SETTINGS, parse_logins

BACKENDS = ("cpu", "rocm", "cuda")
PROJECT = "sdinfra"  # compose project name: labels the containers this role manages
MODELS = "models/Stable-diffusion"

# The torch builds the image can install, pinned to what the web UI release expects; the
# preflight's decision names the one a host gets (Decision.torch_build: which CUDA build its
# driver runs), the others' Dockerfiles get their backend's default.
TORCH_COMMANDS = {
    "cpu": "pip install torch==2.1.2+cpu torchvision==0.16.2+cpu "
           "--extra-index-url https://download.pytorch.org/whl/cpu",
    "rocm5.6": "pip install torch==2.1.2+rocm5.6 torchvision==0.16.2+rocm5.6 "
               "--extra-index-url https://download.pytorch.org/whl/rocm5.6",
    "cu121": "pip install torch==2.1.2+cu121 torchvision==0.16.2+cu121 "
             "--extra-index-url https://download.pytorch.org/whl/cu121",
    "cu118": "pip install torch==2.1.2+cu118 torchvision==0.16.2+cu118 "
             "--extra-index-url https://download.pytorch.org/whl/cu118",
}
DEFAULT_BUILDS = {"cpu": "cpu", "rocm": "rocm5.6", "cuda": "cu121"}
SECRET_IN_CONTAINER = "/run/secrets/webui-auth"
DATA_IN_CONTAINER = "/data"

TEMPLATES = templates(Path(__file__).with_name("templates"))
# The versions of the image's Python packages (how it is made and refreshed: its header).
CONSTRAINTS = Path(__file__).with_name("constraints.txt")


def credentials(values: dict) -> str:
    """The login lines (``user:password``), read on the controller; empty when none is set."""
    if values["webui_auth_env"]:
        raw = os.environ.get(values["webui_auth_env"], "")
    elif values["webui_auth_file"]:
        raw = Path(values["webui_auth_file"]).read_text()
    else:
        return ""
    lines, _ = parse_logins(raw, api=values["webui_api"])
    return "\n".join(lines) + "\n" if lines else ""


def _flag_groups(tokens) -> list[list[str]]:
    """["--precision", "full", "--no-half"] -> [["--precision", "full"], ["--no-half"]]."""
    groups: list[list[str]] = []
    for token in tokens:
        if token.startswith("--") or not groups:
            groups.append([token])
        else:
            groups[-1].append(token)
    return groups


def merge_flags(*lists) -> list[str]:
    """Flags of several lists, each flag once (the first one given wins), values kept with it."""
    seen, merged = set(), []
    for group in _flag_groups([t for tokens in lists for t in tokens]):
        if group[0] not in seen:
            seen.add(group[0])
            merged += group
    return merged


def launch_args(values: dict, backend: str, auth: bool, extra: list[str] = ()) -> list[str]:
    """The web UI's flags: the launch plan's (``extra``: the preflight's decision), memory,
    login, API, then the user's extras. Nothing of the backend's own: the plan has it."""
    # --listen binds inside the container only; which host address publishes it is the compose
    # file's port mapping, 127.0.0.1 unless webui_listen.
    vram = {"low": ["--lowvram"], "med": ["--medvram"]}.get(values["webui_vram"], [])
    if vram:  # the user's choice wins over the preflight's
        extra = [t for g in _flag_groups(extra) if g[0] not in ("--lowvram", "--medvram")
                 for t in g]
    # --data-dir: the compose file mounts the host's data/ (with models/ and outputs/) there.
    args = merge_flags(["--listen", "--port", "7860", "--data-dir", DATA_IN_CONTAINER], extra,
                       vram)
    if auth:
        args += ["--gradio-auth-path", SECRET_IN_CONTAINER]
    if values["webui_api"]:
        args.append("--api")
    if values["webui_allow_insecure_extensions"]:
        args.append("--enable-insecure-extension-access")
    if values["webui_allow_code"]:
        args.append("--allow-code")
    return merge_flags(args, flags.parse(values["webui_extra_args"])[0])


def render(values: dict, backend: str, *, auth: bool = False, env: dict | None = None,
           extra_args: list[str] = (), cpu_threads: int = 0,
           gids: dict | None = None, torch_build: str | None = None) -> dict[str, str]:
    """
    Every file of the project directory, by path relative to it. Pure: no host is asked.
    ``env``, ``extra_args``, ``cpu_threads`` and ``torch_build`` are the launch plan (the
    preflight's decision, see ``render_plan``); the webui_cpu_threads setting, when set, wins
    over the plan's thread count.
    """
    environment = dict(env or {})
    if values["webui_api"] and auth:
        environment["SDINFRA_API_AUTH"] = "1"  # launch.py hands the secret's logins over
    if values["webui_hf_offline"]:
        # huggingface_hub and transformers 4.30 (the web UI's) read these: the cache only.
        environment["HF_HUB_OFFLINE"] = environment["TRANSFORMERS_OFFLINE"] = "1"
    threads = values["webui_cpu_threads"] or cpu_threads
    if backend == "cpu" and threads:
        environment["OMP_NUM_THREADS"] = str(threads)
    publish = values["webui_bind_address"] if values["webui_listen"] else "127.0.0.1"
    start = {name: TEMPLATES.get_template(name).render() for name in ("start.sh", "launch.py")}
    start_digest = hashlib.sha256("".join(start.values()).encode()).hexdigest()
    dockerfiles = {name: dockerfile(values, name, torch_build if name == backend else None)
                   for name in BACKENDS}
    rendered = {
        "docker-compose.yml": TEMPLATES.get_template("docker-compose.yml.j2").render(
            backend=backend, backends=BACKENDS, publish_address=publish,
            port=values["webui_port"], auth=auth, image=values["webui_image"],
            images={name: image_of(values, name, text) for name, text in dockerfiles.items()},
            start_timeout=values["webui_start_timeout"],
            gids={"video": "video", "render": "render", **(gids or {})},
            start_digest=start_digest,
        ),
        "webui.env": env_file({
            "COMMANDLINE_ARGS": commandline(launch_args(values, backend, auth, extra_args)),
            "TZ": values["webui_timezone"],
            # Hugging Face's cache (the CLIP tokenizer ...) in the data directory: kept.
            "HF_HOME": f"{DATA_IN_CONTAINER}/cache/huggingface",
            "SDINFRA_BACKEND": backend,
            **dict(sorted(environment.items())),
        }, header=f"Managed by sdinfra: the web UI's environment for the {backend} backend."),
        **start,
    }
    for name, text in dockerfiles.items():
        rendered[f"Dockerfile.{name}"] = text
    rendered["constraints.txt"] = _constraints()
    rendered[".dockerignore"] = DOCKERIGNORE
    return rendered


# The build's context is webui_dir, which also holds the models (GBs), outputs, data and the
# login in secrets/: without this file each build sent all of it to the daemon. The Dockerfile
# COPYs constraints.txt alone; Docker reads the Dockerfile itself even when it is ignored.
DOCKERIGNORE = ("# Managed by sdinfra: the build reads constraints.txt, nothing else of webui_dir.\n"
                "*\n!constraints.txt\n")


@lru_cache(maxsize=None)
def _constraints() -> str:
    return CONSTRAINTS.read_text()


def dockerfile(values: dict, backend: str, torch_build: str | None = None) -> str:
    """``backend``'s Dockerfile: the web UI at ``webui_version`` with the torch build named
    (``torch_build``, the preflight's; else the backend's default)."""
    build = torch_build or DEFAULT_BUILDS[backend]
    return TEMPLATES.get_template("Dockerfile.j2").render(
        backend=backend, version=values["webui_version"], repo_url=values["webui_repo_url"],
        torch_command=values["webui_torch_command"] or TORCH_COMMANDS[build],
        sources=[(variable, values[setting]) for variable, setting, _, _ in LAUNCHER_SOURCES],
        clip_revision=values["webui_clip_revision"],
    )


def image_of(values: dict, backend: str, dockerfile_text: str) -> str:
    """
    The image ``backend``'s service runs: ``webui_image``, else the one built from
    ``dockerfile_text``, tagged with the release and the first 12 hex digits of the sha256 of
    what the build reads (the Dockerfile, constraints.txt). Whatever makes a rebuild (a new
    release, torch build, source, pin) makes a new tag, so the new image is built beside the
    running one, which keeps its tag for a rollback.

    .. code:: python

        image_of(values, "cpu", dockerfile(values, "cpu"))  # "sdinfra/webui:cpu-v1.10.1-3f2a..."
    """
    if values["webui_image"]:
        return values["webui_image"]
    digest = hashlib.sha256((dockerfile_text + _constraints()).encode()).hexdigest()
    return f"{BUILT_IMAGES}:{backend}-{values['webui_version']}-{digest[:12]}"


# The images this role builds, and how a tag of theirs names the release (deploy/status.py).
BUILT_IMAGES = "sdinfra/webui"
BUILT_TAG = re.compile(r"(?:cpu|rocm|cuda)-(?P<version>.+?)(?:-[0-9a-f]{12})?")


def render_plan(values: dict, plan, *, auth: bool = False, env: dict | None = None,
                gids: dict | None = None) -> dict[str, str]:
    """
    The project's files for a preflight decision (``plan``): its backend, environment, flags,
    thread count and torch build, rendered as they are; ``env`` adds the settings' own
    (rocm.container_env()).
    """
    return render(values, plan.backend, auth=auth, env={**plan.env, **(env or {})},
                  extra_args=plan.webui_args, cpu_threads=plan.cpu_threads or 0, gids=gids,
                  torch_build=plan.torch_build)


# The files render() writes, by path relative to the project directory.
FILES = ("docker-compose.yml", "webui.env", "start.sh", "launch.py", "constraints.txt",
         ".dockerignore", *(f"Dockerfile.{b}" for b in BACKENDS))


def url(values: dict) -> str:
    """Where the web UI answers, as the run's summary shows it."""
    if values["webui_listen"]:
        address = values["webui_bind_address"]
        if address == "0.0.0.0":
            address = host.data.get("ssh_hostname") or host.name
        return f"http://{address}:{values['webui_port']}/"
    return f"http://127.0.0.1:{values['webui_port']}/ (on the host: ssh -L)"


def warnings(values: dict) -> list[str]:
    found = []
    if values["webui_allow_insecure_extensions"]:
        found.append("webui_allow_insecure_extensions is on: anyone who can log in can install "
                     "extensions, that is run code from the network, on this host")
    if values["webui_allow_code"]:
        found.append("webui_allow_code is on: anyone who can log in can run Python code on "
                     "this host")
    if values["webui_api"] and not (values["webui_auth_file"] or values["webui_auth_env"]):
        found.append("webui_api is on without a login: the API answers anyone who reaches the "
                     "port (127.0.0.1 only, unless webui_listen)")
    return found


@dataclass(frozen=True)
class Wanted:
    path: str
    sha256: str
    mode: str


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
# "ps", `docker ps`'s SERVICE|IMAGE lines when Docker's files show none; "image", each image
# asked for that the host has.
DOCKER_PARTS = ("container", "ps", "image")


def docker_command(images) -> str:
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
    """
    words = " ".join(shlex.quote(image) for image in images)
    label = f'"com.docker.compose.project":"{PROJECT}"'  # as config.v2.json writes it
    # One line, as every fact's command (the unit tests' fake reads them from pyinfra's log).
    return " ".join([
        "if command -v docker >/dev/null; then",
        # The newline: the last character of the shell's default IFS (space, tab, newline).
        "nl=${IFS#??} live='' ids='' ps='';",
        # One grep for the project's containers, printing FILE:JSON (the id is the directory).
        f"found=$(grep -HF -e {shlex.quote(label)} -- {DOCKER_ROOT}/containers/*/config.v2.json "
        "2>/dev/null);",
        # One JSON line each; no glob in it is expanded.
        "set -f; IFS=$nl;",
        "for e in $found; do",
        "unset IFS; f=${e%%:*} j=${e#*:}; id=${f%/*}; id=${id##*/};",
        # The first "Running" and "Pid" keys are .State's: JSON escapes a quote inside a string,
        # so '"Pid":' in an environment variable or argument reads '\"Pid\":'.
        "case $j in *'\"Running\":true'*) ;; *) continue ;; esac;",
        "p=${j#*'\"Pid\":'}; p=${p%%[!0-9]*};",
        f'[ "${{p:-0}}" -gt 0 ] && [ -r {PROC}/"$p"/cgroup ] || continue;',
        # (2>/dev/null: the process may end between the test and the read)
        "alive=''; { while IFS= read -r l; do case $l in *\"$id\"*) alive=1 ;; esac;",
        f"done < {PROC}/\"$p\"/cgroup; }} 2>/dev/null;",
        '[ -n "$alive" ] || continue;',
        "echo '### container'; printf '%s\\n' \"$j\"; live=1;",
        # The image id it runs: the last "Image" key (the first is .Config.Image, its name).
        "t=${j##*'\"Image\":\"'}; t=${t%%'\"'*}; ids=\"$ids $t\";",
        "done;",
        "unset IFS; set +f;",
        '[ -n "$live" ] || {',
        f"ps=$(docker ps --filter label=com.docker.compose.project={PROJECT} "
        "--format '{{.Label \"com.docker.compose.service\"}}|{{.Status}}|{{.Image}}' "
        "2>/dev/null);",
        "[ -n \"$ps\" ] && printf '### ps\\n%s\\n' \"$ps\"; };",
        # repositories.json's entries "TAG":"ID" for an image asked for and a running id.
        f"set --; for w in {words}; do for t in $ids; do",
        "set -- \"$@\" -e \"\\\"$w\\\":\\\"$t\\\"\"; done; done;",
        f"tags=''; [ $# -gt 0 ] && tags=$(grep -ohF \"$@\" -- "
        f"{DOCKER_ROOT}/image/*/repositories.json 2>/dev/null);",
        f"for w in {words}; do",
        "case \"$nl$tags$nl$ps$nl\" in *\"$nl\\\"$w\\\":\"*|*\"|$w$nl\"*) ;;",
        "*) docker image inspect \"$w\" >/dev/null 2>&1 || continue ;; esac;",
        "printf '### image\\n%s\\n' \"$w\";",
        "done;",
        "fi",
    ])


def docker_state(parts) -> dict:
    """
    ``docker_command``'s parts (roles.parsers.parts) -> the running services, the image each
    was started from (.Config.Image), Docker's health of each (.State.Health.Status, as the
    summary says it) and the images asked for that the host has.

    .. code:: python

        docker_state(parts(["### ps", "cpu|sdinfra/webui:cpu-v1"], DOCKER_PARTS))
        # {"running": ["cpu"], "current": {"cpu": "sdinfra/webui:cpu-v1"}, "health": {},
        #  "images": []}
    """
    found = {"running": [], "current": {}, "health": {}, "images": []}
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
                # Restarted by its policy and not healthy now: a crash loop caught between two
                # crashes (its health is "starting" again after each restart).
                restarts = container.get("RestartCount") or 0
                if restarts and status != "healthy":
                    found["health"][service] = STATUSES["unhealthy"].format(
                        why=f"restart loop: restarted {restarts} times")
            elif name == "ps":
                # SERVICE|STATUS|IMAGE (the image last: the shell matches "|IMAGE" at the end)
                service, sep, rest = line.partition("|")
                status, _, image = rest.rpartition("|")
                if sep and service:
                    found["running"].append(service)
                    found["current"][service] = image
                    if status.startswith("Restarting"):
                        found["health"][service] = STATUSES["unhealthy"].format(
                            why="restart loop: Docker shows it restarting")
            elif name == "image" and line:
                found["images"].append(line)
    return found


class ProjectState(FactBase):
    """
    What the stack's directory and Docker hold, read in one round trip. ``paths`` are hashed
    (small files); ``models`` are trusted from their sidecars (see roles.download), hashed only
    when a sidecar is missing or its size and mtime are not the file's.

    .. code:: python

        {"nproc": 8, "gids": {"video": "44", "render": "110"}, "running": ["cpu"],
         "current": {"cpu": "sdinfra/webui:cpu-v1.10.1-3f2a9c01d4e5"},
         "health": {"cpu": "healthy"},
         "images": ["sdinfra/webui:cpu-v1.10.1-3f2a9c01d4e5"], "models": ["sd-v1-5.safetensors"],
         "files": {"/opt/stable-diffusion/webui.env": ("644", "ab12...")},
         "dirs": {"/opt/stable-diffusion": "755"},
         "trusted": {"/opt/stable-diffusion/models/Stable-diffusion/sd.safetensors": "6ce0..."},
         "hashed": {"/opt/.../other.safetensors": ("5f3a...", "4265380512 1717000000")}}
    """

    def command(self, directory, paths, images, models=()):
        quoted = " ".join(shlex.quote(p) for p in paths)
        # The models: trusted from their sidecars, hashed only when one is stale or missing.
        verify = (f"set -- {' '.join(shlex.quote(m) for m in models)}; {TRUSTED_SHA256}; "
                  if models else "")
        return (
            "echo nproc=$(nproc); "
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
            f"{docker_command(images)}; "
            "true"
        )

    @staticmethod
    def default():
        return {"nproc": 0, "gids": {}, "running": [], "images": [], "models": [],
                "files": {}, "dirs": {}, "trusted": {}, "hashed": {}, "leftover": [], "health": {},
                "current": {}}

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
            if key == "nproc" and rest.isdigit():
                state["nproc"] = int(rest)
            elif key == "S":  # stat's S=TYPE=MODE=PATH
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


@operation()
def project_files(directories: list[str], wanted: dict, state: dict, regroup=None):
    """
    Make directories and files match, uploading only the files whose sha256 or mode differ.

    ``wanted`` maps a remote path to (content bytes, octal mode); ``state`` is the ProjectState
    fact already read for this run, so checking costs no further round trip. ``regroup``, when
    given, renders ``wanted`` again from the group ids read while executing: the rocm role
    creates the render group in the same run, after this host was planned.

    .. code:: python

        project_files(directories=["/opt/sd"], wanted={"/opt/sd/a.env": (b"X=1\\n", "644")},
                      state=host.get_fact(ProjectState, ...))
    """
    if regroup is not None and host.state.is_executing:
        wanted = regroup(host.get_fact(GroupIds))
    yield from project_commands(directories, wanted, state)


def project_commands(directories: list[str], wanted: dict, state: dict) -> list:
    """The commands ``project_files`` runs on a host in ``state``; empty when all matches."""
    commands: list = []
    for directory in directories:
        if directory not in state["dirs"]:
            commands.append(f"install -d -m 0755 {shlex.quote(directory)}")
    for path, (content, mode) in wanted.items():
        mode_now, digest = state["files"].get(path, (None, None))
        if digest != hashlib.sha256(content).hexdigest():
            # Written with a private mode first, so a secret is never readable, not even briefly.
            temp = f"{path}.sdinfra-new"
            commands.append(f"{room(os.path.dirname(path), len(content), os.path.basename(path))}"
                            f" && install -m 0600 /dev/null {shlex.quote(temp)}")
            commands.append(FileUploadCommand(BytesIO(content), temp))
            commands.append(f"chmod {mode} {shlex.quote(temp)} && mv {shlex.quote(temp)} "
                            f"{shlex.quote(path)}")
        elif mode_now != mode:
            commands.append(f"chmod {mode} {shlex.quote(path)}")
    return commands


@lru_cache(maxsize=None)
def _sha256_of(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_sha256(path: str) -> str:
    stat = os.stat(path)
    return _sha256_of(path, stat.st_size, stat.st_mtime)


@deploy("Stable Diffusion web UI")
def stack(backend: str, known: HostFacts, env: dict | None = None, plan=None):
    """
    The compose stack on this host, running ``backend``'s service.

    + backend: ``cpu``, ``rocm`` or ``cuda``
    + known: what this run learned about the host (roles.hostfacts): its distribution, and the
      preflight's launch plan
    + env: environment the settings add (the rocm role's HSA_OVERRIDE_GFX_VERSION setting, ...)
    + plan: the preflight's decision for this host, the one source of the launch flags,
      environment, thread count and torch build; by default ``known.plan``
    """
    if backend not in BACKENDS:
        raise host_error(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    plan = known.plan if plan is None else plan
    values = read(host, SETTINGS)
    for warning in warnings(values):
        logger.warning(f"{host.print_prefix}{warning}")
    dist = known.distro
    if (read(host, docker.settings.SETTINGS)["docker_source"] == "distro"
            and dist.family == "ubuntu" and dist.ubuntu_codename in docker.COMPOSE_V1_UBUNTU):
        raise host_error(f"docker_source = 'distro' on {dist.label} gives docker-compose 1.25, "
                         "which cannot read the stack's compose file (1.28 or newer can): use "
                         "docker_source = 'docker'")

    directory = values["webui_dir"].rstrip("/")
    secret = credentials(values)
    if (values["webui_auth_env"] or values["webui_auth_file"]) and not secret:
        raise host_error("the login set by webui_auth_file/webui_auth_env holds no "
                         "user:password line")
    image = image_of(values, backend, dockerfile(values, backend, plan.torch_build))
    directories = [directory, f"{directory}/data", f"{directory}/models", f"{directory}/{MODELS}",
                   f"{directory}/outputs", f"{directory}/secrets"]
    paths = directories + [f"{directory}/{name}" for name in FILES]
    paths += [f"{directory}/secrets/webui-auth"]
    models = [f"{directory}/{MODELS}/{model['name']}" for model in values["webui_models"]]
    state = host.get_fact(ProjectState, directory=directory, paths=paths, images=[image],
                          models=models)

    def wanted_files(gids):
        try:
            rendered = render_plan(values, plan, auth=bool(secret), env=env, gids=gids)
        except FormatError as error:
            raise host_error(f"the stack's files cannot be written: {error}") from None
        wanted = {f"{directory}/{name}": (text.encode(), "644") for name, text in rendered.items()}
        if secret:
            wanted[f"{directory}/secrets/webui-auth"] = (secret.encode(), "600")
        return wanted

    # The rocm role creates the render group in the same run, after this host was planned: its
    # id is read again when the run executes. Other backends' hosts keep the names they have (no
    # role of theirs creates these groups), so executing asks them nothing more.
    missing_groups = {"video", "render"} - set(state["gids"])
    regroup = wanted_files if backend == "rocm" and missing_groups else None
    wanted = wanted_files(state["gids"])
    changes = []
    # The new image first, beside the one running: a failed upload or load changes nothing else.
    if values["webui_image_archive"] and image not in state["images"]:
        changes.append(_load_image(values["webui_image_archive"], image))
    # An upgrade (the running service's image is not the one asked): its files are kept, before
    # they are replaced, so that the switch can go back to them (switch_script).
    previous = state["current"].get(backend) if backend in state["running"] else None
    previous = previous if previous not in (None, image) else None
    if previous:
        changes.append(server.shell(
            name=f"Keep the {backend} service's files for a rollback ({previous})",
            commands=[keep_files(directory, previous)]))
    # The operation only when something differs (or may, with regroup): calling one costs the
    # controller a walk of the call stack (pyinfra orders operations by it), even for no change.
    if regroup is not None or project_commands(directories, wanted, state):
        changes.append(project_files(name="Project directory and files", directories=directories,
                                     wanted=wanted, state=state, regroup=regroup))
    if not secret and f"{directory}/secrets/webui-auth" in state["files"]:
        changes.append(files.file(name="Remove the login no longer set",
                                  path=f"{directory}/secrets/webui-auth", present=False))

    if state["leftover"]:
        server.shell(name="Remove what an interrupted run left",
                     commands=["rm -f -- " + " ".join(shlex.quote(p) for p in state["leftover"])])
    changes += _models(values, directory, state)

    models_present = set(state["models"]) | {m["name"] for m in values["webui_models"]}
    if not any(name.endswith((".ckpt", ".safetensors")) for name in models_present):
        logger.warning(
            f"{host.print_prefix}no model: put a .safetensors or .ckpt file into "
            f"{directory}/{MODELS} or list one in webui_models; the {backend} service is not "
            "started"
        )
        return

    compose = f"cd {shlex.quote(directory)} && {docker.compose_command(dist)} -p {PROJECT}"
    others = [name for name in state["running"] if name != backend]
    if others:
        server.shell(name=f"Stop the other backends ({', '.join(others)})",
                     commands=[f"{compose} rm --stop --force {' '.join(others)}"])
    if backend not in state["running"] or previous or any(op.will_change for op in changes):
        server.shell(name=f"Start the {backend} service",
                     commands=[Shown(switch_script(
                         directory, compose, backend, image, values["webui_start_timeout"],
                         build=not values["webui_image"], previous=previous))])
    else:
        summary.health(state["health"].get(backend, HEALTH_SAID["starting"]))


# The container's log lines never show the login: each user:password line of the secret
# files f and g, and each password alone, becomes *** (literal matches: index, not a regular
# expression).
MASK_SECRET = (
    'BEGIN { fs[1] = f; fs[2] = g; for (x = 1; x <= 2; x++) if (fs[x] != "") '
    'while ((getline l < fs[x]) > 0) { '
    'n = index(l, ":"); if (n) { k++; s[k] = l; k++; s[k] = substr(l, n + 1) } } } '
    '{ for (i = 1; i <= k; i++) if (length(s[i])) while ((j = index($0, s[i])) > 0) '
    '$0 = substr($0, 1, j - 1) "***" substr($0, j + length(s[i])); print }'
)


def wait_function(directory: str, every: int = 5) -> str:
    """
    Shell: ``sdinfra_wait SERVICE TIMEOUT`` waits until Docker reports the project's
    ``SERVICE`` container healthy, at most TIMEOUT seconds, saying how it goes every ``every``
    seconds: 0 when healthy; 1 when it exited, restarts or turned unhealthy (``$why`` says
    which); 2 when Docker still says starting after TIMEOUT s (``$s``: the seconds waited).
    ``sdinfra_logs`` prints the last log lines of the container waited for, each behind
    roles.summary.LOG_LINES, the login masked. Seconds are counted on the clock
    (roles.apt.CENTISECONDS), not as loops: each loop's docker inspect takes a while too, and
    a 30 s bound took 33 s on a quiet test host, more on a loaded one.
    """
    from roles.apt import CENTISECONDS
    from roles.summary import LOG_LINES

    labels = f"--filter label=com.docker.compose.project={PROJECT}"
    inspect = ("'{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none"
               "{{end}} {{.RestartCount}} {{.State.ExitCode}}'")
    # The login now, and the one kept for a rollback (a login changed in the same run).
    secret = (f"f={shlex.quote(directory + '/secrets/webui-auth')} -v "
              f"g={shlex.quote(directory + '/' + STATE_DIR + '/previous/secrets/webui-auth')}")
    return "\n".join([
        CENTISECONDS,
        "sdinfra_wait() {",
        "  t0=$(sdinfra_cs); n=0",
        f"  svc=$1 limit=$2 s=0 why=; c=$(docker ps -aq {labels} "
        "--filter label=com.docker.compose.service=$svc | head -n 1)",
        '  [ -n "$c" ] || { why="no container for $svc"; return 1; }',
        "  while :; do",
        f"    set -- $(docker inspect -f {inspect} \"$c\" 2>/dev/null) none none 0 0",
        '    state=$1 health=$2 restarts=$3 code=$4',
        '    case "$state/$health" in',
        "      running/healthy|running/none) return 0 ;;",
        "      running/unhealthy) why=\"Docker's healthcheck (/internal/ping) fails\" ;;",
        '      restarting/*) why="restarting: exited with code $code, restarted $restarts times" ;;',
        '      exited/*|dead/*) why="exited with code $code" ;;',
        "    esac",
        # Running again after a restart: Docker has reset the exit code to 0 by then.
        '    [ -z "$why" ] && [ "$restarts" -gt 0 ] 2>/dev/null && why="restart loop: '
        '$([ "$code" = 0 ] || echo "exited with code $code, ")restarted $restarts times"',
        '    [ -n "$why" ] && return 1',
        '    [ $s -ge "$limit" ] && return 2',
        f"    [ $s -ge $n ] && {{ n=$((s - s % {every} + {every})); echo \"waiting for $svc to "
        "turn healthy: $state, $health, $s s\"; }",
        "    sleep 1; s=$(( ($(sdinfra_cs) - t0) / 100 ))",
        "  done",
        "}",
        "sdinfra_logs() {",
        f"  docker logs --tail 15 \"$c\" 2>&1 | awk -v {secret} {shlex.quote(MASK_SECRET)} "
        f"| sed 's/^/{LOG_LINES}/' >&2",
        "}",
    ])


def _said(status: str) -> str:
    """Shell words printing the summary's ``status`` (up to its first ``{``) behind HEALTH."""
    from roles.summary import HEALTH, STATUSES

    return shlex.quote(HEALTH + STATUSES[status].split("{")[0])


def health_wait(directory: str, service: str, timeout: int, every: int = 5) -> str:
    """
    Shell: wait until Docker reports the project's ``service`` container healthy, at most
    ``timeout`` seconds, saying how it goes every ``every`` seconds. Prints the summary's status
    behind roles.summary.HEALTH: ``healthy``, or ``starting (waited N s)`` when the bound is
    reached while Docker still says starting (exit 0: slow, not broken); or, exiting 1, when
    it exited, restarts or turned unhealthy, ``unhealthy: WHY`` and the container's last log
    lines (behind roles.summary.LOG_LINES, the login masked).
    """
    return "\n".join([
        wait_function(directory, every),
        f"sdinfra_wait {shlex.quote(service)} {int(timeout)}; r=$?",
        f"[ $r -eq 0 ] && {{ echo {_said('healthy')}; exit 0; }}",
        f"[ $r -eq 2 ] && {{ echo {_said('starting')}\"$s s)\"; exit 0; }}",
        f"sdinfra_logs; echo {_said('unhealthy')}\"$why\" >&2; exit 1",
    ])


# Where the switch keeps its own files, in the project directory (root only: a copy of the
# login is there): ``images``, the images this role ran as the web UI on this host (the only
# ones it ever removes), and ``previous/``, the files of the service an upgrade replaces.
STATE_DIR = ".sdinfra"
KEPT = (*FILES, "secrets/webui-auth")


def keep_files(directory: str, previous: str) -> str:
    """
    Shell: copy the project's files (``KEPT``) into ``.sdinfra/previous`` before an upgrade
    replaces them, when they are those of the running image ``previous`` (the compose file
    names it). Files an earlier, unfinished switch kept for the same image are kept as they are
    (the project's files may already be the new ones); with neither, nothing is kept and the
    switch cannot roll back.

    .. code:: python

        server.shell(commands=[keep_files("/opt/stable-diffusion", "sdinfra/webui:cpu-v1...")])
    """
    d = shlex.quote(directory)
    names = " ".join(shlex.quote(f) for f in KEPT)
    named = shlex.quote(f"image: {json_string(previous)}")
    return (
        f"d={d}; p=$d/{STATE_DIR}/previous; install -d -m 0700 $d/{STATE_DIR} && "
        f"if grep -qF -- {named} $d/docker-compose.yml 2>/dev/null; then "
        "rm -rf $p.sdinfra-new && mkdir -p $p.sdinfra-new/secrets && "
        f"for f in {names}; do if [ -e \"$d/$f\" ]; then cp -p \"$d/$f\" \"$p.sdinfra-new/$f\" "
        "|| exit 1; fi; done && rm -rf $p && mv $p.sdinfra-new $p; "
        f"elif grep -qF -- {named} $p/docker-compose.yml 2>/dev/null; then "
        "echo \"the files kept by an earlier run are those of the running image\"; "
        "else rm -rf $p; echo \"no files of the running image: this switch cannot roll "
        "back\"; fi"
    )


def json_string(value: str) -> str:
    """``value`` as the compose template writes it (Jinja's tojson)."""
    from jinja2.utils import htmlsafe_json_dumps

    return str(htmlsafe_json_dumps(value))


def switch_script(directory: str, compose: str, service: str, image: str, timeout: int,
                  build: bool = False, previous: str | None = None) -> str:
    """
    Shell: start ``service`` on ``image`` and wait until Docker says it is healthy (see
    ``wait_function``), printing the summary's status behind roles.summary.HEALTH.

    The image is prepared first, while the running container serves: built (``build``) or
    pulled when the host lacks it. With ``previous`` (the image the running service was
    started from: an upgrade), and when that container is healthy and its files were kept
    (``keep_files``), a new container that does not turn healthy within ``timeout`` seconds
    (it exits, restarts, turns unhealthy or is still starting) is replaced by the previous
    one, on its files and image: the status is ``rolled back: WHY``, exit 1. A failed build or
    pull puts the previous files back too: the running container never stopped.

    Images: every one this role ran here is listed in ``.sdinfra/images``. Once the new one is
    healthy the others listed are removed (``docker rmi``, never forced: an image another
    container uses, or another tag of the same image, stays); otherwise the previous and the
    new one are kept (the previous to go back to, the new one for the next run to try again).

    .. code:: python

        server.shell(commands=[switch_script("/opt/sd", "cd /opt/sd && docker compose -p sdinfra",
                                             "cpu", "sdinfra/webui:cpu-v1.10.1-3f2a9c01d4e5",
                                             900, build=True, previous="sdinfra/webui:...")])
    """
    q_service, q_image = shlex.quote(service), shlex.quote(image)
    q_previous = shlex.quote(previous or "")
    limit = int(timeout)
    restore = " ".join(shlex.quote(f) for f in KEPT)
    named = shlex.quote(f"image: {json_string(previous or '')}")
    prepare = (f"{compose} build {q_service}" if build else f"{compose} pull {q_service}")
    up = f"{compose} up -d {q_service}"
    labels = (f"--filter label=com.docker.compose.project={PROJECT} "
              f"--filter label=com.docker.compose.service={q_service}")
    lines = [
        wait_function(directory),
        f"d={shlex.quote(directory)}; st=$d/{STATE_DIR}; p=$st/previous; "
        f"new={q_image}; old={q_previous}",
        "install -d -m 0700 $st || exit 1",
        # Every image this role runs here is listed, so that only those are ever removed.
        'for i in $old $new; do grep -qxF -- "$i" $st/images 2>/dev/null || '
        'echo "$i" >> $st/images; done',
        # prune KEEP...: remove the listed images but KEEP; the list keeps what stays.
        "prune() {",
        "  : > $st/images.sdinfra-new",
        "  while IFS= read -r i; do",
        '    keep=; for k in "$@"; do [ "$i" = "$k" ] && keep=1; done',
        '    if [ -n "$keep" ]; then echo "$i" >> $st/images.sdinfra-new',
        '    elif docker rmi "$i" >/dev/null 2>&1 </dev/null; then echo "removed image $i"',
        '    elif docker image inspect "$i" >/dev/null 2>&1 </dev/null; then '
        'echo "$i" >> $st/images.sdinfra-new; fi',
        "  done < $st/images",
        "  mv $st/images.sdinfra-new $st/images",
        "}",
        # restore: the previous files back in place, each replaced at once; a file the
        # previous service did not have (a login set since) removed.
        "restore() {",
        f"  for f in {restore}; do",
        '    if [ -e "$p/$f" ]; then cp -p "$p/$f" "$d/$f.sdinfra-new" && '
        'mv "$d/$f.sdinfra-new" "$d/$f" || return 1; else rm -f "$d/$f"; fi',
        "  done",
        "}",
        # A rollback only to a container that was healthy on the files kept for it.
        "guard=",
        f'if [ -n "$old" ] && grep -qF -- {named} $p/docker-compose.yml 2>/dev/null; then',
        f"  c0=$(docker ps -q {labels} | head -n 1)",
        "  [ -n \"$c0\" ] && [ \"$(docker inspect -f '{{.Config.Image}} {{if .State.Health}}"
        "{{.State.Health.Status}}{{end}}' \"$c0\" 2>/dev/null)\" = \"$old healthy\" ] && guard=1",
        "fi",
        # The new image beside the running one.
        'if ! docker image inspect "$new" >/dev/null 2>&1; then',
        f"  ( {ticking(('building ' if build else 'pulling ') + image, prepare)} ); rc=$?",
        '  if [ $rc -ne 0 ]; then',
        '    [ -n "$guard" ] && restore && '
        f"echo {_said('rolled back')}\"$new could not be {'built' if build else 'pulled'} "
        '(exit code $rc); $old still runs" >&2',
        "    exit $rc",
        "  fi",
        "fi",
        f"( {ticking(f'starting {service}', up)} ); rc=$?",
        f'if [ $rc -eq 0 ]; then sdinfra_wait {q_service} {limit}; r=$?; '
        'else r=1 why="docker compose up failed (exit code $rc)"; c=; fi',
        f"if [ $r -eq 0 ]; then prune \"$new\"; rm -rf $p; echo {_said('healthy')}; exit 0; fi",
        f'[ $r -eq 2 ] && why="still starting after {limit} s"',
        '[ -n "$c" ] && sdinfra_logs',
        'if [ -z "$guard" ]; then',
        '  prune "$old" "$new"',
        f"  [ $r -eq 2 ] && {{ echo {_said('starting')}\"$s s)\"; exit 0; }}",
        f"  echo {_said('unhealthy')}\"$why\" >&2; exit 1",
        "fi",
        # Back to the previous image and files.
        'echo "$new did not turn healthy ($why): back to $old"; failed=$why',
        f"restore && ( {ticking(f'starting {service} on the previous image', up)} ) && "
        f"sdinfra_wait {q_service} {limit}; r=$?",
        'prune "$old" "$new"',
        f"[ $r -eq 0 ] && {{ echo {_said('rolled back')}\"$new $failed; $old runs again\" >&2; "
        "exit 1; }",
        f"echo {_said('unhealthy')}\"$new $failed; back on $old: ${{why:-still starting}}\" >&2",
        "exit 1",
    ]
    return "\n".join(lines)


def _models(values, directory, state):
    """
    Each listed model in place with its sha256. A model is hashed once, when it arrives (its
    sidecar records the checksum with its size and mtime); a later run trusts the sidecar while
    they are unchanged, and the state fact hashes the file again when they changed or there is
    no sidecar: the same content only gets its sidecar (re)written, other content is replaced.
    """
    from roles import download

    ops = []
    for model in values["webui_models"]:
        dest = f"{directory}/{MODELS}/{model['name']}"
        pinned = model["sha256"].lower()
        current = state["trusted"].get(dest)
        if current is None and dest in state["hashed"]:
            current, stat = state["hashed"][dest]
            if current == pinned:
                download.mark_verified(name=f"Record the checksum of model {model['name']}",
                                       path=dest, sha256=pinned, stat=stat)
                continue
        if current == pinned:
            continue
        if "url" in model:
            ops.append(download.fetch(name=f"Download model {model['name']}", url=model["url"],
                                      dest=dest, sha256=pinned, record=True,
                                      current=current or ""))
        else:
            if local_sha256(model["src"]) != pinned:
                raise host_error(f"webui_models: {model['name']}: {model['src']} does not have "
                                 f"sha256 {model['sha256']}")
            ops.append(download.put(name=f"Upload model {model['name']}", src=model["src"],
                                    dest=dest, sha256=pinned))
    return ops


@operation()
def load_image(archive: str, image: str):
    """
    Upload a ``docker save`` archive from the controller and load it, saying how far the
    upload and the load got every few seconds; a host without room for it is told so.
    """
    remote = f"/var/tmp/sdinfra-{Path(archive).name}"
    q_remote = shlex.quote(remote)
    yield f"rm -f {q_remote} && " + room("/var/tmp", os.path.getsize(archive), Path(archive).name)
    yield Upload(archive, remote, f"uploading {Path(archive).name}")
    yield Shown(ticking(f"loading {image}", f"docker load -i {q_remote}") +
                f"; rc=$?; rm -f {q_remote}; [ $rc -eq 0 ] && "
                f"docker image inspect {shlex.quote(image)} >/dev/null")


def _load_image(archive: str, image: str):
    return load_image(name=f"Upload and load image {image}", archive=archive, image=image)
