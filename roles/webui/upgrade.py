"""
Upgrades that cannot take a host down: the running service's files kept before they are
replaced (``keep_files``), the new image prepared beside the running one and a new container
that does not turn healthy replaced by the previous one (``switch_script``), a prebuilt image
uploaded and loaded (``load_image``).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from pyinfra.api import operation

from roles.progress import Shown, Upload, room, ticking
from roles.webui.health import said, wait_function
from roles.webui.render import FILES, PROJECT, STATE_DIR

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


def _rollback_lines(directory: str, service: str, image: str, previous: str | None) -> list[str]:
    """Shell: $d, $st, $p, $new and $old; ``restore``, which puts the previous files back; and
    ``guard``, set when a rollback is possible: the running container is ``previous``'s, healthy,
    and its files were kept (``keep_files``)."""
    q_service, q_image = shlex.quote(service), shlex.quote(image)
    restore = " ".join(shlex.quote(f) for f in KEPT)
    named = shlex.quote(f"image: {json_string(previous or '')}")
    labels = (f"--filter label=com.docker.compose.project={PROJECT} "
              f"--filter label=com.docker.compose.service={q_service}")
    return [
        f"d={shlex.quote(directory)}; st=$d/{STATE_DIR}; p=$st/previous; "
        f"new={q_image}; old={shlex.quote(previous or '')}",
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
    ]


def pull_command(image: str, remote: str, registry: str, builder: str) -> str:
    """Shell: ``image`` pulled from the fleet's registry, where it is ``remote`` (pushed there
    by ``builder``, see ``push_script``), and known here by its own name only (the registry's
    name removed again: ``prune`` removes images by the names the role gave them)."""
    q_image, q_remote = shlex.quote(image), shlex.quote(remote)
    reason = shlex.quote(f"E: {remote} could not be pulled from the fleet's registry "
                         f"({registry}, cache_host): the registry is down or does not have it "
                         f"({builder} builds and pushes it for this host's image)")
    return (f"docker pull {q_remote} || {{ echo {reason} >&2; exit 1; }}; "
            f"docker tag {q_remote} {q_image}; rc=$?; docker rmi {q_remote} >/dev/null 2>&1; "
            "exit $rc")


def push_script(directory: str, compose: str, service: str, image: str, remote: str,
                registry: str, previous: str | None = None) -> str:
    """
    Shell, on the host that builds ``image`` for the fleet: build it unless the host has it,
    then push it to the fleet's registry as ``remote`` (the others pull it, ``pull_command``).
    A failed build, or a push that did not reach the registry, fails the host as a failed build
    fails ``switch_script``: the previous files put back when the running container can be
    rolled back to, the running container never stopped; after a failed push the image's tag
    is removed too, unless a container uses it.
    """
    q_remote = shlex.quote(remote)
    prepare = f"{compose} build {shlex.quote(service)}"
    unreached = shlex.quote(f"E: {remote} could not be pushed to the fleet's registry "
                            f"({registry}, cache_host): is it up and reachable? The other hosts "
                            "of this image cannot pull it")
    return "\n".join([
        *_rollback_lines(directory, service, image, previous),
        'if ! docker image inspect "$new" >/dev/null 2>&1; then',
        f"  ( {ticking('building ' + image + ' for the fleet', prepare)} ); rc=$?",
        '  if [ $rc -ne 0 ]; then',
        '    [ -n "$guard" ] && restore && '
        f"echo {said('rolled back')}\"$new could not be built (exit code $rc); $old still runs\" >&2",
        "    exit $rc",
        "  fi",
        "fi",
        f'docker tag "$new" {q_remote} || exit 1',
        f"( {ticking('pushing ' + remote, f'docker push {q_remote}')} ); rc=$?",
        f"docker rmi {q_remote} >/dev/null 2>&1",
        '[ $rc -eq 0 ] && exit 0',
        # An image the registry never got is not the fleet's: untagged (docker refuses while a
        # container uses it), so that the next run, whose builder may be another host, pulls
        # what that one pushes instead of keeping its own build under the same tag.
        'docker rmi "$new" >/dev/null 2>&1',
        '[ -n "$guard" ] && restore',
        f"echo {unreached} >&2; exit $rc",
    ])


def switch_script(directory: str, compose: str, service: str, image: str, timeout: int,
                  build: bool = False, previous: str | None = None, pull: str = "") -> str:
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

    ``pull``: the shell that prepares the image instead of a build or Compose's pull (the
    fleet's registry, ``pull_command``).

    .. code:: python

        server.shell(commands=[switch_script("/opt/sd", "cd /opt/sd && docker compose -p sdinfra",
                                             "cpu", "sdinfra/webui:cpu-v1.10.1-3f2a9c01d4e5",
                                             900, build=True, previous="sdinfra/webui:...")])
    """
    q_service = shlex.quote(service)
    limit = int(timeout)
    prepare = (pull or f"{compose} build {q_service}" if build or pull
               else f"{compose} pull {q_service}")
    up = f"{compose} up -d {q_service}"
    rollback = _rollback_lines(directory, service, image, previous)
    lines = [
        wait_function(directory),
        rollback[0],
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
        *rollback[1:],
        # The new image beside the running one.
        'if ! docker image inspect "$new" >/dev/null 2>&1; then',
        f"  ( {ticking(('building ' if build and not pull else 'pulling ') + image, prepare)} ); rc=$?",
        '  if [ $rc -ne 0 ]; then',
        '    [ -n "$guard" ] && restore && '
        f"echo {said('rolled back')}\"$new could not be {'built' if build and not pull else 'pulled'} "
        '(exit code $rc); $old still runs" >&2',
        "    exit $rc",
        "  fi",
        "fi",
        f"( {ticking(f'starting {service}', up)} ); rc=$?",
        f'if [ $rc -eq 0 ]; then sdinfra_wait {q_service} {limit}; r=$?; '
        'else r=1 why="docker compose up failed (exit code $rc)"; c=; fi',
        f"if [ $r -eq 0 ]; then prune \"$new\"; rm -rf $p; echo {said('healthy')}; exit 0; fi",
        f'[ $r -eq 2 ] && why="still starting after {limit} s"',
        '[ -n "$c" ] && sdinfra_logs',
        'if [ -z "$guard" ]; then',
        '  prune "$old" "$new"',
        f"  [ $r -eq 2 ] && {{ echo {said('starting')}\"$s s)\"; exit 0; }}",
        f"  echo {said('unhealthy')}\"$why\" >&2; exit 1",
        "fi",
        # Back to the previous image and files.
        'echo "$new did not turn healthy ($why): back to $old"; failed=$why',
        f"restore && ( {ticking(f'starting {service} on the previous image', up)} ) && "
        f"sdinfra_wait {q_service} {limit}; r=$?",
        'prune "$old" "$new"',
        f"[ $r -eq 0 ] && {{ echo {said('rolled back')}\"$new $failed; $old runs again\" >&2; "
        "exit 1; }",
        f"echo {said('unhealthy')}\"$new $failed; back on $old: ${{why:-still starting}}\" >&2",
        "exit 1",
    ]
    return "\n".join(lines)


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
