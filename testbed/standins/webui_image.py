"""The web UI stand-in image (images/webui-standin.tar, :func:`build_webui_image`).

Laid out as the real image (roles/webui/templates/Dockerfile.j2): ``WORKDIR /webui``,
``ENTRYPOINT ["/bin/sh", "/sdinfra/start.sh"]`` with the deploy's own start.sh and launch.py
there (the compose file mounts the project's over them), which run ``launch.py``.
Its Python files are testbed/standin_webui/ (launch.py, webui.py, modules/, torch/), run by the
build machine's Debian python3 with a zip of the standard library modules they import, plus
a static busybox (sh, wget for the healthcheck); about 14 MB. It generates no images. What it
copies from AUTOMATIC1111's web UI v1.10.1 (commit 82a973c), each cited beside its code:

- ``COMMANDLINE_ARGS`` split with shlex.split and appended to sys.argv (paths_internal.py);
  ``--data-dir``/``--models-dir`` read first by their own parser (paths_internal.py).
- One argparse parser with the release's flags (roles/webui/webui_flags.txt, cmd_args.py):
  a flag without its value or a bad ``--port`` stops it at the launcher's parse_known_args
  (launch_utils.py, exit 2); an unknown flag stops it after the launch line at
  shared_cmd_options.py's parse_args, with argparse's ``usage: launch.py ...`` and
  ``launch.py: error: unrecognized arguments: ...`` (exit 2); abbreviations are argparse's.
- ``Python ...``, ``Version: <version>``, ``Commit hash: ...``, then the torch GPU test
  (``import torch; assert torch.cuda.is_available()`` in a child python) that stops the start
  with ``RuntimeError: Torch is not able to use GPU; add --skip-torch-cuda-test ...`` unless
  ``--skip-torch-cuda-test`` (launch_utils.py prepare_environment), ``--exit``, then
  ``Launching Web UI with arguments: <every argument>`` (launch_utils.py start()): an
  ``--api-auth`` given as an argument is printed there, as upstream prints it.
- Logins: ``--gradio-auth``/``--gradio-auth-path`` split at commas, each login at its first
  colon (initialize_util.py get_gradio_auth_creds); a login without a colon stops the start
  (gradio's ``{a[0]: a[1] ...}``: IndexError). The UI is gradio's: ``GET /`` is a login page
  until ``POST /login`` (form fields username, password) set the ``access-token`` cookie; other
  UI paths (``/standin.json``: what the stand-in saw) answer 401 without it. ``--api-auth``
  split at commas, each at every colon into exactly two (api.py Api.__init__: ValueError
  stops the web UI, after it began to listen, as upstream); ``/sdapi/v1/*`` exist with
  ``--api`` only and want HTTP Basic with one of those logins when ``--api-auth`` is set.
  ``/internal/ping`` answers ``{}`` without any login (ui.py).
- Listens on ``--server-name``, else 0.0.0.0 with ``--listen``, else 127.0.0.1
  (initialize_util.py gradio_server_name), port ``--port`` or 7860, and prints
  ``Running on local URL:  http://ADDRESS:PORT`` once it does.
- Settings in ``--ui-settings-file`` (default DATA/config.json) loaded at start
  (shared_init.py) and saved by ``POST /sdapi/v1/options`` with a JSON object (api.py
  set_config; ``GET`` returns them); DATA/ui-config.json written at start when missing
  (ui_loadsave.py). DATA is ``--data-dir`` (default /webui, the script's directory).
- ``torch`` (in /usr/lib/python3/dist-packages): ``torch.cuda.is_available()`` is true only
  when the devices a real build would use are in the container: rocm (SDINFRA_BACKEND=rocm)
  ``/dev/kfd`` and a ``/dev/dri/renderD*``; cuda ``/dev/nvidiactl`` and a ``/dev/nvidiaN``;
  cpu never. ``torch.version.hip``/``.cuda`` say the build. Ask it as status tooling would:
  ``docker exec CTR python3 -c "import torch; print(torch.cuda.is_available())"``.

Knobs: the control file ``DATA/sdinfra-standin.json`` (on a deployed host
``<webui_dir>/data/sdinfra-standin.json``: the deploy runs the web UI with ``--data-dir
/data`` on ``<webui_dir>/data``), read once at each start, a JSON object::

    {"start_delay": 2,             # seconds between the launch line and listening (default 2)
     "exit": {"code": 3,           # exit at start with this status (default 1) ...
              "log": "line"},      # ... after printing this line on stderr
     "unhealthy_after": 30,        # /internal/ping answers 503 from N s after listening on
                                   # (printing "sdinfra stand-in: turned unhealthy ..." once)
     "versions": {"v1.10.2": {"exit": {"code": 1, "log": "..."}}}}

``versions`` maps a release to keys that replace the top-level ones when the image is that
release: ``build_webui_image(version=...)`` (default v1.10.1; the image's
``SDINFRA_STANDIN_VERSION`` and its ``Version:`` line), so one control file stages a good
old release and a bad new one. A missing file means the defaults; a file that is not JSON
stops the start with Python's error. Without ``start_delay`` the stand-in still takes 2 s.

Debian packages this module needs on the machine that builds: busybox-static (its /bin/busybox
goes into the image), python3 (Debian's /usr/bin/python3 and its libraries go into the image).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import struct
import tarfile
import tempfile
import time
from pathlib import Path

from testbed.standins.common import EPOCH, PROGRAMS, STANDIN_MAINTAINER, _run, sha256_file

DEFAULT_IMAGE_TAG = "sdinfra/webui-standin:test"
WEBUI_PORT = 7860


# The stand-in web UI: testbed/standin_webui/ (launch.py, webui.py, modules/, torch/), Python
# files laid out as the real image lays out AUTOMATIC1111's (/webui, run as `python launch.py`
# by /sdinfra/start.sh), run by the build machine's Debian python3 with only the standard library
# modules they import (see the top of this module for what it does).
STANDIN_SOURCES = Path(__file__).resolve().parents[1] / "standin_webui"
FLAGS_FILE = Path(__file__).resolve().parents[2] / "roles" / "webui" / "webui_flags.txt"
START_SH = Path(__file__).resolve().parents[2] / "roles" / "webui" / "templates" / "start.sh"
LAUNCH_PY = START_SH.with_name("launch.py")
DEBIAN_PYTHON = Path("/usr/bin/python3")
# What the stand-in's interpreter needs beyond what its sources import: start-up (site,
# encodings), the deploy's own launcher wrapper (runpy) and the tests' requests (urllib.request).
PYTHON_EXTRA_MODULES = ["site", "sysconfig", "encodings", "runpy", "gettext", "locale", "urllib.request",
                        "_sysconfigdata__x86_64-linux-gnu", "_sysconfigdata__linux_x86_64-linux-gnu"]


@functools.cache
def _python_runtime(python: Path = DEBIAN_PYTHON) -> dict[str, tuple[bytes, int]]:
    """Debian's python3 for the image: the binary, the shared libraries ``ldd`` names, and a
    zip of the compiled standard library modules the stand-in imports, by path in the image.
    Worked out once per process (the zip alone takes ~5 s, the same for every release a test
    builds: test_upgrade builds three); callers copy before changing it."""
    binary = python.resolve()
    if not binary.exists():
        raise RuntimeError(f"{python} not found: install the Debian package python3")
    files: dict[str, tuple[bytes, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / "stdlib.zip"
        out = _run([str(binary), "-I", str(PROGRAMS / "stdlib-zip.py"), str(zip_path),
                    str(STANDIN_SOURCES), ",".join(PYTHON_EXTRA_MODULES)]).stdout.split()
        major, minor = out[-2:]
        files[f"usr/lib/python{major}{minor}.zip"] = (zip_path.read_bytes(), 0o644)
    files[f"usr/bin/python{major}.{minor}"] = (binary.read_bytes(), 0o755)
    for line in _run(["ldd", str(binary)]).stdout.splitlines():
        parts = line.split()
        path = next((p for p in parts if p.startswith("/")), None)
        if path:
            files[path.lstrip("/")] = (Path(path).resolve().read_bytes(), 0o755)
    return files


def _standin_tree(version: str) -> dict[str, tuple[bytes, int]]:
    """The stand-in web UI's files by path in the image."""
    files = {}
    for source in sorted(STANDIN_SOURCES.rglob("*.py")):
        rel = source.relative_to(STANDIN_SOURCES).as_posix()
        # torch sits where Debian's python3 looks for installed packages.
        dest = (f"usr/lib/python3/dist-packages/{rel}" if rel.startswith("torch/")
                else f"webui/{rel}")
        files[dest] = (source.read_bytes(), 0o644)
    files["webui/modules/webui_flags.txt"] = (FLAGS_FILE.read_bytes(), 0o644)
    # The web UI's git tree carries models/VAE-approx/model.pt (modules/sd_vae_approx.py loads
    # it from models_path): the stand-in's, a few bytes saying what it is.
    files["webui/models/VAE-approx/model.pt"] = (b"sdinfra stand-in: not a model\n", 0o644)
    # The deploy's own start.sh and launch.py, where the compose file mounts them.
    files["sdinfra/start.sh"] = (START_SH.read_bytes(), 0o755)
    files["sdinfra/launch.py"] = (LAUNCH_PY.read_bytes(), 0o644)
    return files


@dataclasses.dataclass(frozen=True)
class WebuiImage:
    path: Path
    tag: str
    sha256: str          # of the archive file
    image_id: str        # "sha256:<hex>" = digest of the config JSON (what `docker images` shows)
    layer_diff_id: str   # "sha256:<hex>" of the uncompressed layer tar


def find_static_busybox() -> Path:
    """Debian's busybox-static binary; refuses a dynamically linked busybox."""
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.exists():
            p = p.resolve()
            if _elf_has_interp(p):
                raise RuntimeError(f"{p} is dynamically linked: install busybox-static")
            return p
    raise RuntimeError("no busybox found: install the Debian package busybox-static")


def _elf_has_interp(path: Path) -> bool:
    with open(path, "rb") as f:
        ident = f.read(16)
        if ident[:4] != b"\x7fELF":
            raise RuntimeError(f"{path} is not an ELF file")
        is64 = ident[4] == 2
        endian = "<" if ident[5] == 1 else ">"
        hdr = f.read(48 if is64 else 36)
        if is64:
            phoff = struct.unpack_from(endian + "Q", hdr, 16)[0]
            phentsize, phnum = struct.unpack_from(endian + "HH", hdr, 38)
        else:
            phoff = struct.unpack_from(endian + "I", hdr, 12)[0]
            phentsize, phnum = struct.unpack_from(endian + "HH", hdr, 26)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            if struct.unpack(endian + "I", f.read(4))[0] == 3:  # PT_INTERP
                return True
    return False


def _busybox_applets(busybox: Path) -> list[str]:
    out = _run([str(busybox), "--list"]).stdout.split()
    return sorted(a for a in out if a and "/" not in a and a not in ("busybox", "[", "[["))


def _tar_add(tf: tarfile.TarFile, name: str, *, data: bytes | None = None, mode: int = 0o644,
             kind: bytes = tarfile.REGTYPE, linkname: str = "") -> None:
    ti = tarfile.TarInfo(name)
    ti.mtime = EPOCH
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mode = mode
    ti.type = kind
    ti.linkname = linkname
    if data is not None:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        tf.addfile(ti)


def build_rootfs_layer(busybox: Path | None = None, version: str = "v1.10.1", *,
                       files: dict[str, tuple[bytes, int]] | None = None) -> bytes:
    """The image's single layer (an uncompressed tar), reproducible. ``files``: the image's
    files by path (default: Debian's python3 and the stand-in web UI, ``_standin_tree``)."""
    busybox = busybox or find_static_busybox()
    applets = _busybox_applets(busybox)
    if files is None:
        files = {**_python_runtime(), **_standin_tree(version)}
    python = next(p for p in files if re.fullmatch(r"usr/bin/python3\.\d+", p))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = {"bin": 0o755, "dev": 0o755, "etc": 0o755, "proc": 0o755, "root": 0o700,
                "sys": 0o755, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755, "data": 0o755}
        for path in files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.setdefault("/".join(parts[:i]), 0o755)
        for d in sorted(dirs):
            _tar_add(tf, d, mode=dirs[d], kind=tarfile.DIRTYPE)
        _tar_add(tf, "bin/busybox", data=busybox.read_bytes(), mode=0o755)
        for a in ["sh"] + [a for a in applets if a != "sh"]:
            _tar_add(tf, f"bin/{a}", kind=tarfile.SYMTYPE, linkname="busybox")
        # No "render" group, like Debian's and Ubuntu's base images: group_add must use a GID.
        _tar_add(tf, "etc/group",
                 data=b"root:x:0:\nvideo:x:44:\nnogroup:x:65534:\n")
        _tar_add(tf, "etc/passwd", data=(
            b"root:x:0:0:root:/root:/bin/sh\n"
            b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
        for path in sorted(files):
            data, mode = files[path]
            _tar_add(tf, path, data=data, mode=mode)
        # `python` and `python3`, as in the python:3.10-slim base of the real image.
        for name in ("python", "python3"):
            _tar_add(tf, f"usr/bin/{name}", kind=tarfile.SYMTYPE, linkname=python.split("/")[-1])
        _tar_add(tf, "usr/bin/env", kind=tarfile.SYMTYPE, linkname="/bin/busybox")
    return buf.getvalue()


def build_webui_image(dest: os.PathLike | str, *, tag: str = DEFAULT_IMAGE_TAG,
                      busybox: Path | None = None, version: str = "v1.10.1") -> WebuiImage:
    """Write a ``docker load -i`` archive (legacy ``docker save`` layout) to ``dest``.
    ``version`` is the web UI release the stand-in says it is (``Version:`` line, the control
    file's ``versions`` entry)."""
    layer = build_rootfs_layer(busybox, version)
    diff_hex = hashlib.sha256(layer).hexdigest()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "author": STANDIN_MAINTAINER,
        "config": {
            # PYTHONHOME: the standard library is a zip only, which python's own search for
            # its prefix does not take for a landmark.
            "Env": ["PATH=/usr/bin:/bin", "PYTHONHOME=/usr", "PYTHONUNBUFFERED=1",
                    "PYTHONDONTWRITEBYTECODE=1", f"SDINFRA_STANDIN_VERSION={version}"],
            # As the real image (roles/webui/templates/Dockerfile.j2): WORKDIR /webui and
            # /bin/sh /sdinfra/start.sh.
            "Entrypoint": ["/bin/sh", "/sdinfra/start.sh"],
            "Cmd": [],
            "ExposedPorts": {f"{WEBUI_PORT}/tcp": {}},
            "WorkingDir": "/webui",
            "Labels": {
                "org.opencontainers.image.title": "sdinfra web UI stand-in (TEST ONLY)",
                "org.opencontainers.image.description":
                    "Not AUTOMATIC1111's web UI: an HTTP stand-in in Python on port 7860",
                "org.opencontainers.image.version": version,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_hex}"]},
        "history": [{"created": created, "created_by": "sdinfra testbed/standins/webui_image.py",
                     "comment": "sdinfra web UI stand-in"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    repo, _, tagname = tag.rpartition(":")
    if not repo or "/" in tagname:
        raise ValueError(f"tag must be NAME:TAG, got {tag!r}")
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": [tag],
                 "Layers": [f"{diff_hex}/layer.tar"]}]
    repositories = {repo: {tagname: diff_hex}}
    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        _tar_add(tf, diff_hex, mode=0o755, kind=tarfile.DIRTYPE)
        _tar_add(tf, f"{diff_hex}/VERSION", data=b"1.0")
        _tar_add(tf, f"{diff_hex}/layer.tar", data=layer)
        _tar_add(tf, f"{config_hex}.json", data=config_bytes)
        _tar_add(tf, "manifest.json", data=json.dumps(manifest, separators=(",", ":")).encode())
        _tar_add(tf, "repositories", data=json.dumps(repositories, separators=(",", ":")).encode())
    return WebuiImage(path=out, tag=tag, sha256=sha256_file(out),
                      image_id=f"sha256:{config_hex}", layer_diff_id=f"sha256:{diff_hex}")
