"""
Verified downloads: a file is kept only when its sha256 is the pinned one.

pyinfra's ``files.download`` moves the downloaded file into place and checks it afterwards, so a
file with the wrong content can be left behind looking like a good one. ``fetch`` downloads to a
temporary name in the destination's directory, checks the sha256 there and only then renames it
into place (same file system: the rename is atomic). A mismatch removes the temporary file,
leaves ``dest`` as it was and fails the operation, saying what was expected and what arrived.

The download uses curl, else wget, else python3, whichever the host has, so a minimal host needs
no package installed first. ``file://`` URLs work with curl and python3.

Large files (the web UI's models, 2-7 GB) are hashed once, when they arrive: with ``record=True``
the command that moves the checked file into place also writes a sidecar next to it,
``.NAME.sha256`` holding ``SHA256 SIZE MTIME`` (``sidecar``). Later runs trust that checksum
while the file's size and mtime are the recorded ones (``TRUSTED_SHA256``, a shell snippet for
a fact) and hash the file again only when they changed. ``put`` is the same for a file uploaded
from the controller.

.. code:: python

    from roles import download

    download.fetch(
        name="Download the model",
        url="https://example.org/models/v1-5-pruned-emaonly.safetensors",
        dest="/srv/sd/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
        sha256="6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
    )
"""

from __future__ import annotations

import os
import posixpath
import shlex

from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.files import Sha256File

from roles.progress import Shown, Upload, room
from roles.settings import COMMON, read

# Every download is bounded: no connection within CONNECT_TIMEOUT seconds, or less than
# STALL_BYTES a second for STALL_SECONDS (a link that went down mid-download), gives up the
# attempt; RETRIES more attempts follow. Without a bound a host whose link went down held the
# whole run for as long as anyone waited. ``fetch`` takes the last two from the host's
# settings (download_stall_timeout, download_retries: roles.settings.COMMON).
CONNECT_TIMEOUT = 30
STALL_SECONDS = 60
STALL_BYTES = 1024
RETRIES = 3
# Progress every PROGRESS_EVERY seconds while a download runs (the bytes that arrived so far).
PROGRESS_EVERY = 3

# Downloads with python3 when neither curl nor wget is there (Debian's minbase has neither);
# the timeout is per read, so a stall ends it too. A timeout is tried again, as curl's --retry
# does, and ends as curl's does (exit 28), so that the message says why.
_PYTHON_GET = (
    "import shutil, sys, time, urllib.error, urllib.request\n"
    "url, out, stall, retries = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])\n"
    "for attempt in range(retries + 1):\n"
    "    try:\n"
    "        r = urllib.request.urlopen(url, timeout=stall)\n"
    "        shutil.copyfileobj(r, open(out, 'wb'))\n"
    "        break\n"
    "    except (TimeoutError, urllib.error.URLError) as e:\n"
    "        if not isinstance(getattr(e, 'reason', e), TimeoutError):\n"
    "            raise\n"
    "        if attempt == retries:\n"
    "            sys.exit(28)\n"
    "        time.sleep(2)\n"
)


def partial_glob(dest: str) -> str:
    """The names an unfinished download of ``dest`` has (a run killed mid-download leaves one)."""
    directory, base = posixpath.split(dest)
    return posixpath.join(directory, f".{base}.sdinfra-part.*")


def sidecar(path: str) -> str:
    """Where the checksum of ``path`` is recorded: ``.NAME.sha256`` in the same directory."""
    directory, base = posixpath.split(path)
    return posixpath.join(directory, f".{base}.sha256")


# `stat` of a file as the sidecar records it: size and mtime (whole seconds).
STAT_FORMAT = "%s %Y"


def _record(dest: str) -> str:
    """Shell: write ``dest``'s sidecar from "$got" (its checked sha256) and its size and mtime."""
    q_dest, side = shlex.quote(dest), shlex.quote(sidecar(dest))
    return (f"s=$(stat -L -c '{STAT_FORMAT}' -- {q_dest}) && "
            f"printf '%s %s\\n' \"$got\" \"$s\" > {side}.new && mv -f {side}.new {side}")


def _keep(temp: str, dest: str, source: str, sha256: str, mode: str, record: bool,
          what: str = "download") -> list[str]:
    """
    Shell lines: keep ``temp`` as ``dest`` only if its sha256 is ``sha256`` (then write the
    sidecar with ``record``), else remove it and fail naming ``source``.
    """
    q_dest = shlex.quote(dest)
    mismatch = shlex.quote(
        f"checksum mismatch for {source}: expected sha256 {sha256}, got "
    )
    kept = shlex.quote(f"; the {what} was removed and {dest} was not changed")
    lines = [
        f"got=$(sha256sum {temp} | cut -d ' ' -f 1)",
        f"if [ \"$got\" != {shlex.quote(sha256)} ]; then",
        f"  rm -f {temp}; echo {mismatch}\"$got\"{kept} >&2; exit 1",
        "fi",
    ]
    if record:
        # The old sidecar goes first: a run killed between the two moves leaves no record that
        # could vouch for the new file, which the next run then hashes.
        lines.append(f"rm -f {shlex.quote(sidecar(dest))}")
    lines.append(f"chmod {shlex.quote(str(mode))} {temp} && mv -f {temp} {q_dest}")
    if record:
        lines[-1] += " && " + _record(dest)
    return lines


def fetch_command(url: str, dest: str, sha256: str, mode: str = "644",
                  record: bool = False, stall: int | None = None,
                  retries: int | None = None) -> str:
    """
    The shell command that downloads ``url`` to ``dest`` only if its sha256 is ``sha256``.

    Exits non-zero, with the reason on stderr and no file left behind, when the download fails or
    the checksum differs. With ``record``, the checked file's sidecar (``.NAME.sha256``) is
    written after it was moved into place, never for a file whose checksum differs. Prints the
    bytes that arrived every few seconds while it runs and how long it took (see
    roles.progress.Shown). A partial file a killed run left behind is removed first. Exposed
    (not only used by ``fetch``) so that it can be tested by running it. ``stall`` and
    ``retries``: STALL_SECONDS and RETRIES unless given.
    """
    stall = STALL_SECONDS if stall is None else stall
    retries = RETRIES if retries is None else retries
    directory = posixpath.dirname(dest) or "/"
    base = posixpath.basename(dest)
    q_url, q_dir = shlex.quote(url), shlex.quote(directory)
    q_template = shlex.quote(f"{directory.rstrip('/')}/.{base}.sdinfra-part.XXXXXX")
    q_partials = shlex.quote(f"{directory.rstrip('/')}/.{base}.sdinfra-part.") + "*"
    failed = shlex.quote(f"download of {url} failed")
    kept = shlex.quote(f"; {dest} was not changed")
    return "\n".join([
        f"install -d -m 0755 {q_dir} && rm -f {q_partials} && t=$(mktemp {q_template}) || exit 1",
        # Removed however this shell ends (an error, a signal); after the move it is gone anyway.
        # PIPE: the run was killed or interrupted, and the next progress line has no reader;
        # the download would otherwise go on alone, its partial file with it.
        "pid=; trap 'rm -f \"$t\"' EXIT; "
        "trap '[ -n \"$pid\" ] && kill $pid; exit 130' HUP INT TERM PIPE",
        "if command -v curl >/dev/null 2>&1; then",
        f"  curl -fsSL --connect-timeout {CONNECT_TIMEOUT} --speed-limit {STALL_BYTES} "
        f"--speed-time {stall} --retry {retries} --retry-delay 2 -o \"$t\" {q_url} &",
        "elif command -v wget >/dev/null 2>&1; then",
        f"  wget -q -T {stall} -t {retries + 1} -O \"$t\" {q_url} &",
        "else",
        f"  python3 -c {shlex.quote(_PYTHON_GET)} {q_url} \"$t\" {stall} {retries} &",
        "fi",
        "pid=$! s=0",
        "while kill -0 $pid 2>/dev/null; do sleep 1; s=$((s + 1)); "
        f"[ $((s % {PROGRESS_EVERY})) -eq 0 ] && kill -0 $pid 2>/dev/null && "
        f"echo \"downloading {base}: $(($(stat -c %s \"$t\") / 1024)) KiB, $s s\"; done",
        "wait $pid; rc=$?",
        "if [ $rc -ne 0 ]; then",
        # curl's 23 and wget's 3 are write errors: say so, it reads like a network fault else.
        "  why=; case $rc in 23|3) why=': no space left on the device of '; "
        f"why=\"$why\"{q_dir} ;; 28|4) why=': no data for {stall} s or no connection "
        f"within {CONNECT_TIMEOUT} s, {retries + 1} attempts' ;; esac",
        f"  echo {failed}\"$why (exit $rc)\"{kept} >&2; exit 1",
        "fi",
        f"echo \"downloaded {base}: $(($(stat -c %s \"$t\") / 1024)) KiB in $s s\"",
        *_keep('"$t"', dest, url, sha256, mode, record),
    ])


def fetch_first_command(first: str, url: str, dest: str, sha256: str, mode: str = "644",
                        record: bool = False, stall: int | None = None,
                        retries: int | None = None) -> str:
    """
    ``fetch_command`` of ``first`` (the fleet's cache: roles.cache), once, without retries;
    when that fails, its download or its sha256 (the copy is refused: removed, ``dest`` not
    changed), a line saying so and ``fetch_command`` of ``url``. The first attempt's messages
    go to stdout: the operation succeeds, and its output is what shows why it fell back.
    """
    refused = shlex.quote(f"sdinfra: no verified copy from {first} (above): "
                          f"downloading {url} instead")
    cached = fetch_command(first, dest, sha256, mode, record, stall, 0)
    upstream = fetch_command(url, dest, sha256, mode, record, stall, retries)
    return f"( {cached}\n) 2>&1 || {{ echo {refused}\n{upstream}\n}}"


def upload_temp(dest: str) -> str:
    directory, base = posixpath.split(dest)
    return posixpath.join(directory, f".{base}.sdinfra-upload")


def put_command(dest: str, sha256: str, mode: str = "644", record: bool = True) -> str:
    """The shell command that keeps an uploaded file (at ``upload_temp(dest)``) as ``dest`` only
    if its sha256 is ``sha256``, recording it (``record``) as ``fetch_command`` does."""
    temp = shlex.quote(upload_temp(dest))
    return "\n".join(_keep(temp, dest, f"the upload to {dest}", sha256, mode, record, "upload"))


def record_command(path: str, sha256: str, stat: str) -> str:
    """
    Write the sidecar of ``path``, already hashed (``sha256``) while its stat was ``stat``
    (``SIZE MTIME``); fails, writing nothing, when the file changed since.
    """
    q_path = shlex.quote(path)
    changed = shlex.quote(f"{path} changed while it was being verified: run again")
    return (f"got={shlex.quote(sha256)}; "
            f"[ \"$(stat -L -c '{STAT_FORMAT}' -- {q_path} 2>/dev/null)\" = {shlex.quote(stat)} ] "
            f"|| {{ echo {changed} >&2; exit 1; }}; " + _record(path))


# For a fact: prints "trusted=SHA256=PATH" for each existing file whose sidecar matches its size and
# mtime, else "hashed=SHA256=SIZE MTIME=PATH" (the file hashed now). Nothing for a missing file.
# Expects the paths in "$@" (set -- PATH...).
TRUSTED_SHA256 = (
    "for m in \"$@\"; do [ -f \"$m\" ] || continue; "
    f"s=$(stat -L -c '{STAT_FORMAT}' -- \"$m\") || continue; "
    "v=; c=\"${m%/*}/.${m##*/}.sha256\"; [ -r \"$c\" ] && read -r v < \"$c\"; "
    "if [ -n \"$v\" ] && [ \"${v#* }\" = \"$s\" ]; then echo \"trusted=${v%% *}=$m\"; "
    "else echo \"hashed=$(sha256sum < \"$m\" | cut -c 1-64)=$s=$m\"; fi; done"
)


def parse_trusted(lines) -> tuple[dict, dict]:
    """``TRUSTED_SHA256``'s lines: ({path: sha256 trusted}, {path: (sha256 hashed now, stat)})."""
    trusted, hashed = {}, {}
    for line in lines:
        key, _, rest = line.partition("=")
        if key == "trusted":
            digest, _, path = rest.partition("=")
            trusted[path] = digest
        elif key == "hashed":
            digest, stat_path = rest.split("=", 1)
            stat, _, path = stat_path.partition("=")
            hashed[path] = (digest, stat)
    return trusted, hashed


@operation()
def fetch(url: str, dest: str, sha256: str, mode: str = "644", record: bool = False,
          current: str | None = None, first: str = ""):
    """
    Download ``url`` to ``dest`` and keep it only if its sha256 is ``sha256``.

    Nothing is downloaded when ``dest`` already has that checksum (one ``sha256sum`` on the host,
    unless the caller knows it: ``current``). A download whose checksum differs is removed and the
    operation fails; ``dest`` is never a file with another checksum because of this operation.

    + url: http(s):// or file:// URL
    + dest: absolute path on the host; its directory is created when missing
    + sha256: the 64 hex digits the file must have
    + mode: permissions of the kept file
    + record: write the sidecar ``.NAME.sha256`` so that later runs need not hash the file
    + current: the sha256 ``dest`` has now, "" when it is missing (read by the caller already)
    + first: a URL to try once before ``url`` (the fleet's cache), its copy verified the same

    .. code:: python

        download.fetch(
            name="Download amdgpu-install",
            url="https://repo.radeon.com/amdgpu-install/5.3/ubuntu/jammy/"
                "amdgpu-install_5.3.50300-1_all.deb",
            dest="/var/cache/sdinfra/rocm/jammy/amdgpu-install_5.3.50300-1_all.deb",
            sha256="<the sha256 you checked>",
        )
    """
    sha256 = sha256.lower()
    if current is None:
        current = host.get_fact(Sha256File, path=dest)
    if current == sha256:
        return
    bounds = read(host, COMMON)
    bounded = {"stall": bounds["download_stall_timeout"], "retries": bounds["download_retries"]}
    if first:
        yield Shown(fetch_first_command(first, url, dest, sha256, mode, record, **bounded))
    else:
        yield Shown(fetch_command(url, dest, sha256, mode, record, **bounded))


@operation()
def put(src: str, dest: str, sha256: str, mode: str = "644", record: bool = True):
    """
    Upload the controller's file ``src`` to ``dest``, kept only if its sha256 there is ``sha256``
    (``src`` is checked by the caller; this checks what arrived), and recorded in the sidecar as
    ``fetch`` does. Always uploads: call it when ``dest`` is missing or differs.
    """
    directory = posixpath.dirname(dest) or "/"
    yield (f"install -d -m 0755 {shlex.quote(directory)} && "
           f"rm -f {shlex.quote(upload_temp(dest))} && "
           + room(directory, os.path.getsize(src), posixpath.basename(dest)))
    yield Upload(src, upload_temp(dest), f"uploading {posixpath.basename(dest)}")
    yield put_command(dest, sha256.lower(), mode, record)


def in_place(state: dict, path: str, sha256: str, name: str) -> str:
    """
    The sha256 ``path`` has by ``state`` (``{"trusted", "hashed"}``, as ``parse_trusted``
    reads TRUSTED_SHA256), "" when it is missing. A file hashed now that has ``sha256`` gets
    its sidecar written (``mark_verified``, named ``name``), which the next run trusts.
    """
    current = state["trusted"].get(path)
    if current is None and path in state["hashed"]:
        current, stat = state["hashed"][path]
        if current == sha256:
            mark_verified(name=name, path=path, sha256=sha256, stat=stat)
    return current or ""


@operation()
def mark_verified(path: str, sha256: str, stat: str):
    """Write the sidecar of ``path``, hashed already (``sha256``) while its stat was ``stat``."""
    yield record_command(path, sha256.lower(), stat)
