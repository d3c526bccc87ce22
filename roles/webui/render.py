"""
The project directory's files (``webui_dir``), rendered on the controller: the compose file,
a Dockerfile per backend, ``webui.env`` with the launch flags, the start scripts; the image
each backend's service runs. Pure: no host is asked.

.. code:: python

    from roles.webui.render import render
    render(values, "cpu")  # {"docker-compose.yml": "...", "webui.env": "...", ...}
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path

from roles.webui import flags
from roles.webui.formats import commandline, env_file, templates
from roles.webui.settings import LAUNCHER_SOURCES, parse_logins

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

# Where the switch keeps its own files, in the project directory (root only: a copy of the
# login is there): ``images``, the images this role ran as the web UI on this host (the only
# ones it ever removes), and ``previous/``, the files of the service an upgrade replaces.
STATE_DIR = ".sdinfra"
