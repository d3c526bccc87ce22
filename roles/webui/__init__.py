"""
roles.webui: the AUTOMATIC1111 web UI as a compose stack, one service per backend.

The project directory (``webui_dir``) holds ``docker-compose.yml`` with ``cpu``, ``rocm`` and
``cuda`` services, a Dockerfile per backend, ``webui.env`` with the launch flags, and the
``models`` and ``outputs`` directories that survive rebuilds. Only the host's backend is started,
and only when a file changed, it is not running or it runs another image: a converged host
rebuilds and restarts nothing. A new image is prepared beside the running one, and a new
container that does not turn healthy is rolled back to the previous image and files
(``switch_script``).

Here the deploy (``stack``); by concern: ``render`` (the project's files, the image tag),
``state`` (what the host's directory and Docker hold, one round trip), ``project`` (files and
models put in place), ``health`` (the wait for Docker's healthy), ``upgrade`` (the switch
to a new image and its rollback), ``settings``, ``flags`` and ``formats``.

.. code:: python

    from roles import preflight, webui
    webui.stack(backend="cpu", known=preflight.learn())
"""

from __future__ import annotations

import shlex
from types import SimpleNamespace

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import files, server

from roles import cache, docker, summary
from roles.hostfacts import HostFacts
from roles.progress import Shown
from roles.settings import host_error, read
from roles.webui import flags
from roles.webui.fleet import builder_of, remote_name
from roles.webui.formats import FormatError
# The modules' names stay importable from roles.webui, as before they were split.
from roles.webui.health import MASK_SECRET, health_wait, said, wait_function
from roles.webui.project import (ModelSums, fetch_models, local_sha256, project_commands,
                                 project_files)
from roles.webui.render import (BACKENDS, BUILT_IMAGES, BUILT_TAG, CONSTRAINTS, DATA_IN_CONTAINER,
                                DEFAULT_BUILDS, DOCKERIGNORE, FILES, MODELS, PROJECT,
                                SECRET_IN_CONTAINER, STATE_DIR, TEMPLATES, TORCH_COMMANDS,
                                credentials, dockerfile, image_of, launch_args, merge_flags,
                                render, render_plan)
from roles.webui.settings import SETTINGS
from roles.webui.state import (DOCKER_PARTS, DOCKER_ROOT, HEALTH_SAID, PROC, GroupIds,
                               ProjectState, docker_command, docker_state)
from roles.webui.upgrade import (KEPT, json_string, keep_files, load_image, pull_command,
                                 push_script, switch_script)


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


def directories_of(directory: str) -> list[str]:
    """The stack's directories, the project directory first."""
    return [directory, f"{directory}/data", f"{directory}/models", f"{directory}/{MODELS}",
            f"{directory}/outputs", f"{directory}/secrets"]


def model_paths(values: dict) -> list[str]:
    """Where the models of ``webui_models`` go on the host."""
    directory = values["webui_dir"].rstrip("/")
    return [f"{directory}/{MODELS}/{model['name']}" for model in values["webui_models"]]


def fleet_build(values: dict, image: str) -> tuple[str, str, str]:
    """
    (the fleet's registry, its name of ``image``, the host that builds it for the fleet), or
    three empty strings without one (no cache_host, or a prebuilt webui_image). The builder is
    claimed by the first host to ask (roles.webui.fleet), the same for each later ask.
    """
    registry = "" if values["webui_image"] else cache.registry(cache.values_of())
    if not registry:
        return "", "", ""
    return registry, remote_name(registry, image), builder_of(image)


def state_ask(backend: str, known: HostFacts, plan=None, values: dict | None = None) -> tuple:
    """
    The ProjectState fact stack() reads, with its arguments, for ``known``'s host running
    ``backend`` (read_ahead): the stack's directories and files, the image the plan asks for
    (its first), the models; with the fleet's registry, on the host that builds the image for
    the fleet (roles.webui.fleet: claimed here, by the first host to ask), the registry's name
    of it, to ask whether the registry has it in the same read.
    """
    plan = known.plan if plan is None else plan
    values = read(host, SETTINGS) if values is None else values
    directory = values["webui_dir"].rstrip("/")
    # (a prebuilt image's name: no Dockerfile rendered for a tag, ~3 times per host and run)
    image = values["webui_image"] or image_of(values, backend,
                                              dockerfile(values, backend, plan.torch_build))
    paths = directories_of(directory) + [f"{directory}/{name}" for name in FILES]
    paths += [f"{directory}/secrets/webui-auth"]
    asked = {"directory": directory, "paths": paths, "images": [image],
             "models": model_paths(values)}
    registry, remote, builder = fleet_build(values, image)
    if registry:
        asked["pushed"] = remote if builder == host.name else ""
    return ProjectState, asked


def state_guess(backend: str | None, known: HostFacts, torch_build: str | None = None,
                certain: bool = True) -> tuple | None:
    """
    ``state_ask`` before the preflight has decided (preflight.learn's guess; ``backend`` None:
    not known yet): with ``webui_image`` (whatever the backend), or for the image of
    ``torch_build`` (preflight.build_without_hardware; ``certain``: whatever the hardware).
    None where the tag is not known, and where a guess that may be wrong would claim the
    fleet's build of a tag this host may not build (roles.webui.fleet).
    """
    values = read(host, SETTINGS)
    if values["webui_image"]:
        backend = backend or "cpu"
    elif backend is None or torch_build is None:
        return None
    elif not certain and cache.registry(cache.values_of()):
        return None
    return state_ask(backend, known, plan=SimpleNamespace(torch_build=torch_build),
                     values=values)


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
    directories = directories_of(directory)
    secret = credentials(values)
    if (values["webui_auth_env"] or values["webui_auth_file"]) and not secret:
        raise host_error("the login set by webui_auth_file/webui_auth_env holds no "
                         "user:password line")
    fact, asked = state_ask(backend, known, plan, values)
    image = asked["images"][0]
    # With the fleet's registry, a built image is built by one host and pulled by the others
    # (roles.webui.fleet); the builder asks whether the registry has it in the same read.
    registry, remote, builder = fleet_build(values, image)
    builds = builder == host.name
    state = known.fact(fact, asked)

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
        changes.append(load_image(name=f"Upload and load image {image}",
                                  archive=values["webui_image_archive"], image=image))
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
    changes += fetch_models(values, directory, state)
    compose = f"cd {shlex.quote(directory)} && {docker.compose_command(dist)} -p {PROJECT}"
    # Before any host starts its service (the others pull it then). Not a change of this
    # host's service by itself: a new image's tag changes the compose file anyway.
    if builds and (image not in state["images"] or remote not in state["pushed"]):
        server.shell(name=f"Build {image} once for the fleet and push it to {registry}",
                     commands=[Shown(push_script(directory, compose, backend, image, remote,
                                                 registry, previous=previous))])

    models_present = set(state["models"]) | {m["name"] for m in values["webui_models"]}
    if not any(name.endswith((".ckpt", ".safetensors")) for name in models_present):
        logger.warning(
            f"{host.print_prefix}no model: put a .safetensors or .ckpt file into "
            f"{directory}/{MODELS} or list one in webui_models; the {backend} service is not "
            "started"
        )
        return

    others = [name for name in state["running"] if name != backend]
    if others:
        server.shell(name=f"Stop the other backends ({', '.join(others)})",
                     commands=[f"{compose} rm --stop --force {' '.join(others)}"])
    if backend not in state["running"] or previous or any(op.will_change for op in changes):
        server.shell(name=f"Start the {backend} service",
                     commands=[Shown(switch_script(
                         directory, compose, backend, image, values["webui_start_timeout"],
                         build=not values["webui_image"], previous=previous,
                         pull=pull_command(image, remote, registry, builder)
                         if registry and not builds else ""))])
    else:
        summary.health(state["health"].get(backend, HEALTH_SAID["starting"]))


@deploy("Models of the web UI")
def models():
    """
    The models of ``webui_models`` in place and verified, without the rest of the stack
    (deploy/models.py: to put them on the hosts ahead of it); with ``cache_host``, copied from
    the fleet's cache first. One command when every model is in place.
    """
    values = read(host, SETTINGS)
    paths = model_paths(values)
    if paths:
        state = host.get_fact(ModelSums, paths=" ".join(shlex.quote(p) for p in paths))
        fetch_models(values, values["webui_dir"].rstrip("/"), state)
