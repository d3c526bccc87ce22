"""
roles.webui: the AUTOMATIC1111 web UI as a compose stack, one service per backend.

The project directory (``webui_dir``) holds ``docker-compose.yml`` with ``cpu``, ``rocm`` and
``cuda`` services, a Dockerfile per backend, ``webui.env`` with the launch flags, and the
``models`` and ``outputs`` directories that survive rebuilds. Only the host's backend is started,
and only when a file changed or it is not running: a converged host rebuilds and restarts nothing.

.. code:: python

    from roles import preflight, webui
    webui.stack(backend="cpu", known=preflight.learn())
"""

from __future__ import annotations

import hashlib
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
    version = values["webui_version"]
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
    rendered = {
        "docker-compose.yml": TEMPLATES.get_template("docker-compose.yml.j2").render(
            backend=backend, backends=BACKENDS, publish_address=publish,
            port=values["webui_port"], auth=auth, image=values["webui_image"], version=version,
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
    for name in BACKENDS:
        build = (torch_build if name == backend else None) or DEFAULT_BUILDS[name]
        rendered[f"Dockerfile.{name}"] = TEMPLATES.get_template("Dockerfile.j2").render(
            backend=name, version=version, repo_url=values["webui_repo_url"],
            torch_command=values["webui_torch_command"] or TORCH_COMMANDS[build],
            sources=[(variable, values[setting]) for variable, setting, _, _ in LAUNCHER_SOURCES],
            clip_revision=values["webui_clip_revision"],
        )
    rendered["constraints.txt"] = CONSTRAINTS.read_text()
    return rendered


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
         *(f"Dockerfile.{b}" for b in BACKENDS))


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


DOCKER_ROOT = "/var/lib/docker"
SHA256SUM_LINE = re.compile(r"^[0-9a-f]{64}  ")

# awk over Docker's repositories.json files (tag -> image id) then the containers' config.v2.json
# (one JSON line each): "running=SERVICE" for each container of ``project`` that Docker says runs
# AND whose process is alive in that container's cgroup (/proc/PID/cgroup names the container
# id: a stale file, a dead daemon's leftovers or another data-root cannot pass that);
# "image=NAME" for each of ``images`` that such a container was started from and that still
# names the same image id (what `docker ps` shows as .Image), "check=NAME" for the others.
RUNNING_FROM_FILES = " ".join([
    'function str(key,   i, s) { i = index($0, "\\"" key "\\":\\""); if (!i) return ""; '
    's = substr($0, i + length(key) + 4); return substr(s, 1, index(s, "\\"") - 1) }',
    'FILENAME ~ /repositories\\.json$/ { tags = tags $0; next }',
    'index($0, "\\"com.docker.compose.project\\":\\"" project "\\"") {',
    'i = index($0, "\\"Running\\":"); if (!i || substr($0, i + 10, 4) != "true") next;',
    'i = index($0, "\\"Pid\\":"); pid = i ? substr($0, i + 6) + 0 : 0;',
    'id = str("ID"); if (pid < 1 || length(id) < 12) next;',
    'alive = 0; f = proc "/" pid "/cgroup";',
    'while ((getline line < f) > 0) if (index(line, id)) alive = 1;',
    'close(f); if (!alive) next;',
    'print "running=" str("com.docker.compose.service");',
    # Docker's health of that container, as `docker inspect` shows .State.Health.Status.
    'h = index($0, "\\"Health\\":{\\"Status\\":\\""); if (h) { hs = substr($0, h + 20); '
    'print "health=" str("com.docker.compose.service") "=" substr(hs, 1, index(hs, "\\"") - 1) }',
    'image = str("Image"); s = $0; imageid = "";',
    'while ((i = index(s, "\\"Image\\":\\"")) > 0) {',
    's = substr(s, i + 9); imageid = substr(s, 1, index(s, "\\"") - 1) }',
    'i = index(tags, "\\"" image "\\":\\"");',
    'if (i && imageid != "" && substr(tags, i + length(image) + 4, length(imageid) + 1) == '
    'imageid "\\"") seen[image] = 1 }',
    'END { n = split(images, w, " "); '
    'for (k = 1; k <= n; k++) print (w[k] in seen ? "image=" : "check=") w[k] }',
])
# The same lines from `docker ps --format 'SERVICE|IMAGE'`.
RUNNING_FROM_PS = (
    'NF { print "running=" $1; seen[$2] = 1 } '
    'END { n = split(images, w, " "); for (k = 1; k <= n; k++) '
    'print (w[k] in seen ? "image=" : "check=") w[k] }'
)


# Docker's health as the summary of a no-change run says it.
HEALTH_SAID = {
    "healthy": STATUSES["healthy"],
    "starting": "starting (Docker's healthcheck has not passed yet)",
    "unhealthy": STATUSES["unhealthy"].format(why="Docker's healthcheck (/internal/ping) fails"),
}


class ProjectState(FactBase):
    """
    What the stack's directory and Docker hold, read in one round trip. ``paths`` are hashed
    (small files); ``models`` are trusted from their sidecars (see roles.download), hashed only
    when a sidecar is missing or its size and mtime are not the file's.

    .. code:: python

        {"nproc": 8, "gids": {"video": "44", "render": "110"}, "running": ["cpu"],
         "images": ["sdinfra/webui:cpu-v1.10.1"], "models": ["sd-v1-5.safetensors"],
         "files": {"/opt/stable-diffusion/webui.env": ("644", "ab12...")},
         "dirs": {"/opt/stable-diffusion": "755"},
         "trusted": {"/opt/stable-diffusion/models/Stable-diffusion/sd.safetensors": "6ce0..."},
         "hashed": {"/opt/.../other.safetensors": ("5f3a...", "4265380512 1717000000")}}
    """

    def command(self, directory, paths, images, models=()):
        quoted = " ".join(shlex.quote(p) for p in paths)
        quoted_images = shlex.quote(" ".join(images))
        label = f"label=com.docker.compose.project={PROJECT}"
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
            "if command -v docker >/dev/null; then "
            # The project's running services, from Docker's own files when they show one (no
            # docker command: each costs the host ~20 ms of CPU), else from `docker ps`.
            f"set --; for f in {DOCKER_ROOT}/image/*/repositories.json "
            f"{DOCKER_ROOT}/containers/*/config.v2.json; do "
            "[ -r \"$f\" ] && set -- \"$@\" \"$f\"; done; "
            f"found=; [ $# -gt 0 ] && found=$(awk -v project={PROJECT} -v proc=/proc "
            f"-v images={quoted_images} "
            f"{shlex.quote(RUNNING_FROM_FILES)} \"$@\" 2>/dev/null); "
            "case \"$found\" in *running=*) ;; *) "
            f"found=$(docker ps --filter {label} "
            "--format '{{.Label \"com.docker.compose.service\"}}|{{.Image}}' 2>/dev/null "
            f"| awk -F'|' -v images={quoted_images} {shlex.quote(RUNNING_FROM_PS)}) ;; esac; "
            # An image no running service shows is asked for: `docker image inspect` (each
            # docker command costs the daemon too).
            "for line in $found; do case \"$line\" in "
            "running=*|image=*|health=*) echo \"$line\" ;; "
            "check=*) i=${line#check=}; docker image inspect \"$i\" >/dev/null 2>&1 "
            "&& echo \"image=$i\" ;; esac; done; "
            "fi; true"
        )

    @staticmethod
    def default():
        return {"nproc": 0, "gids": {}, "running": [], "images": [], "models": [],
                "files": {}, "dirs": {}, "trusted": {}, "hashed": {}, "leftover": [], "health": {}}

    def process(self, output):
        state = self.default()
        output = list(output)
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
            elif key == "health":
                service, _, status = rest.partition("=")
                state["health"][service] = HEALTH_SAID.get(status, status)
            elif key in ("running", "images", "image", "models", "model", "leftover"):
                state[{"image": "images", "model": "models"}.get(key, key)].append(rest)
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
    image = values["webui_image"] or f"sdinfra/webui:{backend}-{values['webui_version']}"
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
    if values["webui_image_archive"] and image not in state["images"]:
        changes.append(_load_image(values["webui_image_archive"], image))

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
    if backend not in state["running"] or any(op.will_change for op in changes):
        build = "" if values["webui_image"] else " --build"
        up = f"{compose} up -d{build} {backend}"
        server.shell(name=f"Start the {backend} service",
                     commands=[Shown(f"( {ticking(f'starting {backend}', up)} ) || exit $?\n" + health_wait(
                         directory, backend, values["webui_start_timeout"]))])
    else:
        summary.health(state["health"].get(backend, HEALTH_SAID["starting"]))


# The container's log lines never show the login: each user:password line of the secret, and
# each password alone, becomes *** (literal matches: index, not a regular expression).
MASK_SECRET = (
    'BEGIN { while ((getline l < f) > 0) { n = index(l, ":"); if (n) { k++; s[k] = l; k++; '
    's[k] = substr(l, n + 1) } } } '
    '{ for (i = 1; i <= k; i++) if (length(s[i])) while ((j = index($0, s[i])) > 0) '
    '$0 = substr($0, 1, j - 1) "***" substr($0, j + length(s[i])); print }'
)


def health_wait(directory: str, service: str, timeout: int, every: int = 5) -> str:
    """
    Shell: wait until Docker reports the project's ``service`` container healthy, at most
    ``timeout`` seconds, saying how it goes every ``every`` seconds. Prints the summary's status
    behind roles.summary.HEALTH: ``healthy``, or ``starting (waited N s)`` when the bound is
    reached while Docker still says starting (exit 0: slow, not broken); or, exiting 1, when
    it exited, restarts or turned unhealthy, ``unhealthy: WHY`` and the container's last log
    lines (behind roles.summary.LOG_LINES, the login masked).
    """
    from roles.summary import HEALTH, LOG_LINES, STATUSES

    labels = (f"--filter label=com.docker.compose.project={PROJECT} "
              f"--filter label=com.docker.compose.service={service}")
    inspect = ("'{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none"
               "{{end}} {{.RestartCount}} {{.State.ExitCode}}'")
    healthy = shlex.quote(HEALTH + STATUSES["healthy"])
    starting = shlex.quote(HEALTH + STATUSES["starting"].split("{")[0])
    unhealthy = shlex.quote(HEALTH + STATUSES["unhealthy"].split("{")[0])
    secret = shlex.quote(f"{directory}/secrets/webui-auth")
    return "\n".join([
        f"c=$(docker ps -aq {labels} | head -n 1); s=0; why=",
        f"[ -n \"$c\" ] || {{ echo {unhealthy}'no container for {service}' >&2; exit 1; }}",
        "while :; do",
        f"  set -- $(docker inspect -f {inspect} \"$c\" 2>/dev/null) none none 0 0",
        '  state=$1 health=$2 restarts=$3 code=$4',
        '  case "$state/$health" in',
        f"    running/healthy|running/none) echo {healthy}; exit 0 ;;",
        "    running/unhealthy) why=\"Docker's healthcheck (/internal/ping) fails\" ;;",
        '    restarting/*) why="restarting: exited with code $code, restarted $restarts times" ;;',
        '    exited/*|dead/*) why="exited with code $code" ;;',
        "  esac",
        '  [ -z "$why" ] && [ "$restarts" -gt 0 ] 2>/dev/null && '
        'why="restart loop: exited with code $code, restarted $restarts times"',
        '  [ -n "$why" ] && break',
        f"  [ $s -ge {int(timeout)} ] && {{ echo {starting}\"$s s)\"; exit 0; }}",
        f"  [ $((s % {every})) -eq 0 ] && echo \"waiting for {service} to turn healthy: "
        "$state, $health, $s s\"",
        "  sleep 1; s=$((s + 1))",
        "done",
        f"docker logs --tail 15 \"$c\" 2>&1 | awk -v f={secret} {shlex.quote(MASK_SECRET)} "
        f"| sed 's/^/{LOG_LINES}/' >&2",
        f"echo {unhealthy}\"$why\" >&2; exit 1",
    ])


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
