"""Locally built stand-ins for the vendor artefacts the end-to-end tests cannot download.

AMD's, NVIDIA's, Docker Hub's and GitHub's servers are out of reach on the machines this project
is tested on, so the paths of the deploys that need them run against files built here, from
scratch, into a directory the caller owns, and served over plain HTTP on loopback and on the
host-side veth addresses of the test hosts.  Nothing is cached outside that directory (gpg runs in
a short-lived GNUPGHOME under the system temporary directory, removed before the call returns).

What is built (see :func:`build_all`)::

    WORKDIR/
      www/                                   <- serve this directory (see serve())
        keys/sdinfra-standin.asc             armored public key of the repository key
        keys/sdinfra-standin.gpg             the same key, binary ("dearmored") keyring
        keys/wrong-key.asc, wrong-key.gpg    another key, for "signed with another key" faults
        apt/                                 signed apt repository, dists layout:
          dists/stable/{Release,InRelease,Release.gpg}
          dists/stable/main/binary-amd64/{Packages,Packages.gz}
          pool/main/*.deb                    nvidia-container-toolkit, nvidia-driver-standin
        apt-wrongkey/                        the same packages, signed with the wrong key
        libnvidia-container/gpgkey           the repository key, where NVIDIA publishes theirs
        libnvidia-container/stable/deb/amd64/  the same packages as a flat repository
                                             ("deb [signed-by=...] URL/stable/deb/amd64 /"),
                                             the layout NVIDIA's real repository has
        libnvidia-container-wrongkey/stable/deb/amd64/  that flat repository signed with the
                                             wrong key
        radeon/amdgpu-install/5.3/ubuntu/{focal,jammy}/amdgpu-install_5.3.50300-1_all.deb
        radeon-cpuonly/...                   the same path; its rocminfo shows CPU agents only
        images/webui-standin.tar             `docker load -i` archive (legacy docker save format):
                                             the web UI stand-in, see below
        models/standin.safetensors           a few KB, valid safetensors header
        models/checksums.sha256              "<sha256>  standin.safetensors"
      private/                               secret keys (never served)

Every stand-in says it is one (package descriptions, program output, the web page), so that
nobody mistakes a test host for a real GPU host.

The web UI stand-in image (images/webui-standin.tar, :func:`build_webui_image`)
------------------------------------------------------------------------------
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

Debian packages this module needs on the machine that builds: dpkg (dpkg-deb), apt-utils
(apt-ftparchive), gnupg and gpgv, busybox-static (its /bin/busybox goes into the image),
python3 (Debian's /usr/bin/python3 and its libraries go into the image).
The tests also use apt (apt-get), util-linux (unshare) and coreutils (chroot), all priority
required/important on Debian.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import http.server
import io
import ipaddress
import json
import os
import posixpath
import re
import shutil
import socket
import stat
import struct
import subprocess
import tarfile
import tempfile
import textwrap
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Iterable, Mapping, Sequence

#: Fixed timestamp for every file put into a package or an image (2023-11-14 22:13:20 UTC), so
#: that two builds of the same stand-in give byte-identical .debs and image archives.
EPOCH = 1_700_000_000

DEFAULT_IMAGE_TAG = "sdinfra/webui-standin:test"
AMDGPU_INSTALL_VERSION = "5.3.50300-1"
AMDGPU_INSTALL_FILENAME = f"amdgpu-install_{AMDGPU_INSTALL_VERSION}_all.deb"
ROCM_VERSION_INFO = "5.3.0-50300"
NVIDIA_CTK_VERSION = "1.14.3"
NVIDIA_DRIVER_VERSION = "525.147.05"
STANDIN_MAINTAINER = "sdinfra test stand-ins <standins@sdinfra.invalid>"
WEBUI_PORT = 7860


# --------------------------------------------------------------------------------------------
# small helpers


def sha256_file(path: os.PathLike | str) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        return subprocess.run(list(cmd), **kw)
    except subprocess.CalledProcessError as e:  # make failures readable in test output
        raise RuntimeError(
            f"command failed ({e.returncode}): {' '.join(cmd)}\nstdout:\n{e.stdout}\nstderr:\n{e.stderr}"
        ) from None


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} not found: install the Debian package {package}")
    return path


# --------------------------------------------------------------------------------------------
# 1. GPG keys


@dataclasses.dataclass(frozen=True)
class GpgKey:
    """A throwaway signing key, exported into files."""

    fingerprint: str  # 40 upper-case hex digits
    uid: str
    public_asc: Path  # armored public key (what a vendor publishes; usable as apt Signed-By)
    public_gpg: Path  # binary keyring (what `gpg --dearmor` makes; usable with gpgv --keyring)
    secret_asc: Path  # armored secret key, no passphrase (keep out of the served tree)


@contextlib.contextmanager
def _gnupg_home():
    """A fresh GNUPGHOME with a short path (gpg-agent's socket path has a length limit)."""
    home = tempfile.mkdtemp(prefix="sdgpg-")
    os.chmod(home, 0o700)
    env = dict(os.environ, GNUPGHOME=home)
    try:
        yield home, env
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", home, "--kill", "all"],
            env=env, capture_output=True, check=False,
        )
        shutil.rmtree(home, ignore_errors=True)


def make_gpg_key(dest_dir: os.PathLike | str, name: str = "sdinfra-standin",
                 uid: str = "sdinfra stand-in repository (TEST ONLY) <standins@sdinfra.invalid>",
                 private_dir: os.PathLike | str | None = None) -> GpgKey:
    """Generate an ed25519 signing key without passphrase and export it.

    Public files go to ``dest_dir/NAME.asc`` and ``NAME.gpg``; the secret key to
    ``private_dir/NAME.secret.asc`` (default: ``dest_dir``).
    """
    _need("gpg", "gnupg")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    priv = Path(private_dir) if private_dir is not None else dest
    priv.mkdir(parents=True, exist_ok=True)
    params = textwrap.dedent(f"""\
        %no-protection
        Key-Type: eddsa
        Key-Curve: ed25519
        Key-Usage: sign
        Name-Real: {uid.split(' <')[0]}
        Name-Email: {uid.split('<')[1].rstrip('>') if '<' in uid else 'standins@sdinfra.invalid'}
        Expire-Date: 0
        %commit
        """)
    with _gnupg_home() as (home, env):
        _run(["gpg", "--batch", "--gen-key"], input=params, env=env)
        out = _run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=env).stdout
        fprs = [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]
        if not fprs:
            raise RuntimeError("gpg made no key:\n" + out)
        fpr = fprs[0].upper()
        pub_asc = dest / f"{name}.asc"
        pub_gpg = dest / f"{name}.gpg"
        sec_asc = priv / f"{name}.secret.asc"
        pub_asc.write_text(_run(["gpg", "--batch", "--armor", "--export", fpr], env=env).stdout)
        pub_gpg.write_bytes(_run(["gpg", "--batch", "--export", fpr], env=env, text=False).stdout)
        sec_asc.write_text(
            _run(["gpg", "--batch", "--armor", "--export-secret-keys", fpr], env=env).stdout)
        os.chmod(sec_asc, 0o600)
        real_uid = [line.split(":")[9] for line in out.splitlines() if line.startswith("uid:")][0]
    return GpgKey(fingerprint=fpr, uid=real_uid, public_asc=pub_asc, public_gpg=pub_gpg,
                  secret_asc=sec_asc)


def _sign_release(release: Path, key: GpgKey) -> tuple[Path, Path]:
    """Write InRelease (clearsigned) and Release.gpg (armored detached) next to ``release``."""
    inrelease = release.with_name("InRelease")
    detached = release.with_name("Release.gpg")
    with _gnupg_home() as (home, env):
        _run(["gpg", "--batch", "--import", str(key.secret_asc)], env=env)
        base = ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "",
                "--local-user", key.fingerprint, "--digest-algo", "SHA512"]
        _run(base + ["--clearsign", "--output", str(inrelease), str(release)], env=env)
        _run(base + ["--armor", "--detach-sign", "--output", str(detached), str(release)], env=env)
    return inrelease, detached


# --------------------------------------------------------------------------------------------
# 2. Debian packages


def _installed_size_kib(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath).relative_to(root).parts[:1] == ("DEBIAN",):
            continue
        total += len(dirnames)
        for fn in filenames:
            p = Path(dirpath, fn)
            total += 1 if p.is_symlink() else max(1, -(-p.stat().st_size // 1024))
    return total


def build_deb(dest_dir: os.PathLike | str, package: str, version: str,
              files: Mapping[str, tuple[bytes | str, int]], *, description: str,
              architecture: str = "all", depends: str | None = None,
              section: str = "misc", extra_control: Mapping[str, str] | None = None,
              filename: str | None = None) -> Path:
    """Build a .deb with ``dpkg-deb --build`` from ``{"/abs/path": (content, mode)}``.

    Owners are root:root, every mtime is :data:`EPOCH`: the result is byte-for-byte reproducible.
    ``description`` is "synopsis\\nlong text"; the long text is folded into control format.
    """
    _need("dpkg-deb", "dpkg")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sddeb-", dir=dest) as tmp:
        root = Path(tmp, "root")
        (root / "DEBIAN").mkdir(parents=True)
        for path, (content, mode) in sorted(files.items()):
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            data = content.encode() if isinstance(content, str) else content
            target.write_bytes(data)
            os.chmod(target, mode)
        synopsis, _, long = description.partition("\n")
        long_lines = [(" " + ln) if ln.strip() else " ." for ln in long.strip("\n").splitlines()]
        control = {
            "Package": package,
            "Version": version,
            "Architecture": architecture,
            "Maintainer": STANDIN_MAINTAINER,
            "Installed-Size": str(_installed_size_kib(root)),
        }
        if depends:
            control["Depends"] = depends
        control.update({"Section": section, "Priority": "optional"})
        control.update(extra_control or {})
        text = "".join(f"{k}: {v}\n" for k, v in control.items())
        text += f"Description: {synopsis}\n" + "".join(ln + "\n" for ln in long_lines)
        (root / "DEBIAN" / "control").write_text(text)
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                os.utime(Path(dirpath, n), (EPOCH, EPOCH), follow_symlinks=False)
            os.chmod(dirpath, 0o755)
        os.utime(root, (EPOCH, EPOCH))
        out = dest / (filename or f"{package}_{version}_{architecture}.deb")
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
        _run(["dpkg-deb", "--root-owner-group", "-Zxz", "-z6", "--build", str(root), str(out)],
             env=env)
    return out


# ---- nvidia-container-toolkit stand-in

NVIDIA_CTK = r'''#!/usr/bin/python3
"""sdinfra STAND-IN for NVIDIA's nvidia-ctk (TEST ONLY; no GPU support whatsoever).

Implements `nvidia-ctk runtime configure --runtime=docker` the way nvidia-ctk @VERSION@ does:
load the daemon config (missing file = {}), set runtimes.<name> = {"args": [], "path": PATH},
optionally default-runtime, write it back with Go's json.MarshalIndent(cfg, "", "    ")
formatting (keys sorted, 4-space indent, no trailing newline).
"""
import json
import os
import sys

VERSION = "@VERSION@"
COMMIT = "sdinfra-standin"


def log(level, msg):
    sys.stderr.write("%s[0000] %s\n" % (level, msg))


def go_json(obj):
    text = json.dumps(obj, indent=4, sort_keys=True, ensure_ascii=False, separators=(",", ": "))
    # Go's encoder escapes these for HTML safety
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def usage(out=sys.stdout):
    out.write(
        "NAME:\n   NVIDIA Container Toolkit CLI - Tools to configure the NVIDIA Container Toolkit\n\n"
        "USAGE:\n   nvidia-ctk [global options] command [command options] [arguments...]\n\n"
        "VERSION:\n   %s\n\nCOMMANDS:\n   runtime  A collection of runtime-related utilities for "
        "the NVIDIA Container Toolkit\n\n(sdinfra stand-in: only `runtime configure` is implemented)\n"
        % VERSION)


def parse_flags(args, spec):
    """urfave/cli style flags: -f, --f, --f=v, --f v; booleans take no value."""
    opts = {}
    rest = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest.extend(args[i + 1:])
            break
        if a.startswith("-") and a != "-":
            name, eq, val = a.lstrip("-").partition("=")
            if name not in spec:
                raise SystemExit("flag provided but not defined: -%s" % name)
            key, kind = spec[name]
            if kind == "bool":
                opts[key] = (val.lower() in ("", "true", "1")) if eq else True
            else:
                if not eq:
                    i += 1
                    if i >= len(args):
                        raise SystemExit("flag needs an argument: -%s" % name)
                    val = args[i]
                opts[key] = val
        else:
            rest.append(a)
        i += 1
    return opts, rest


def runtime_configure(args):
    spec = {
        "runtime": ("runtime", "str"),
        "config": ("config", "str"),
        "dry-run": ("dry_run", "bool"),
        "nvidia-runtime-name": ("name", "str"), "runtime-name": ("name", "str"),
        "nvidia-runtime-path": ("path", "str"), "runtime-path": ("path", "str"),
        "nvidia-set-as-default": ("default", "bool"), "set-as-default": ("default", "bool"),
        "cdi.enabled": ("cdi", "bool"), "cdi-enabled": ("cdi", "bool"),
    }
    try:
        opts, _ = parse_flags(args, spec)
    except SystemExit as e:
        log("ERRO", str(e))
        return 1
    runtime = opts.get("runtime", "docker")
    if runtime != "docker":
        log("ERRO", "unrecognized runtime '%s' (sdinfra stand-in implements docker only)" % runtime)
        return 1
    path = opts.get("config", "/etc/docker/daemon.json")
    name = opts.get("name", "nvidia")
    rt_path = opts.get("path", "nvidia-container-runtime")
    log("INFO", "Loading docker config from %s" % path)
    if os.path.isdir(path):
        log("ERRO", "unable to load config for runtime docker: config file is a directory")
        return 1
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
        except ValueError as e:
            log("ERRO", "unable to load config for runtime docker: %s" % e)
            return 1
        if not isinstance(cfg, dict):
            log("ERRO", "unable to load config for runtime docker: not a JSON object")
            return 1
        log("INFO", "Successfully loaded config")
    else:
        log("INFO", "Config file does not exist; creating new one")
        cfg = {}
    runtimes = cfg.get("runtimes")
    if not isinstance(runtimes, dict):
        runtimes = {}
    runtimes[name] = {"args": [], "path": rt_path}
    cfg["runtimes"] = runtimes
    if opts.get("default"):
        cfg["default-runtime"] = name
    if opts.get("cdi"):
        features = cfg.get("features") if isinstance(cfg.get("features"), dict) else {}
        features["cdi"] = True
        cfg["features"] = features
    out = go_json(cfg)
    if opts.get("dry_run"):
        sys.stdout.write(out + "\n")
        return 0
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, mode=0o755, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(out)
    log("INFO", "Wrote updated config to %s" % path)
    log("INFO", "It is recommended that docker daemon be restarted.")
    return 0


def main(argv):
    if not argv or argv[0] in ("-h", "--help", "help"):
        usage()
        return 0
    if argv[0] in ("-v", "--version", "version"):
        sys.stdout.write("NVIDIA Container Toolkit CLI version %s\ncommit: %s\n" % (VERSION, COMMIT))
        return 0
    # global flags before the command (e.g. --debug) are accepted and ignored
    while argv and argv[0].startswith("-"):
        argv = argv[1:]
    if len(argv) >= 2 and argv[0] == "runtime" and argv[1] == "configure":
        return runtime_configure(argv[2:])
    log("ERRO", "sdinfra stand-in nvidia-ctk: unsupported command: %s" % " ".join(argv))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''

NVIDIA_CONTAINER_RUNTIME = r'''#!/bin/sh
# sdinfra STAND-IN for nvidia-container-runtime (TEST ONLY).  Docker 20.10 does not look at a
# runtime's path until a container is started with it; this stub lets such a container start by
# handing every argument to runc unchanged (no GPU is injected).
for r in /usr/sbin/runc /usr/bin/runc /usr/local/sbin/runc /usr/local/bin/runc; do
    [ -x "$r" ] && exec "$r" "$@"
done
exec runc "$@"
'''


def build_nvidia_container_toolkit_deb(dest_dir: os.PathLike | str, *,
                                       version: str = NVIDIA_CTK_VERSION) -> Path:
    """Stand-in ``nvidia-container-toolkit`` (Architecture: all, Depends: python3)."""
    return build_deb(
        dest_dir, "nvidia-container-toolkit", f"{version}-1",
        {
            "/usr/bin/nvidia-ctk": (NVIDIA_CTK.replace("@VERSION@", version), 0o755),
            "/usr/bin/nvidia-container-runtime": (NVIDIA_CONTAINER_RUNTIME, 0o755),
            # dockerd registers its "nvidia" device driver (what compose's GPU reservation asks
            # for) only when this hook is on PATH at start; the stand-in hook does nothing.
            "/usr/bin/nvidia-container-runtime-hook": ("#!/bin/sh\nexit 0\n", 0o755),
        },
        description=(
            "sdinfra STAND-IN for the NVIDIA Container Toolkit (TEST ONLY)\n"
            "Not NVIDIA software.  nvidia-ctk implements `runtime configure --runtime=docker`\n"
            "(merges runtimes.nvidia into /etc/docker/daemon.json) and --version;\n"
            "nvidia-container-runtime hands everything to runc."),
        depends="python3", section="utils",
    )


# ---- NVIDIA driver stand-in (nvidia-smi)

NVIDIA_SMI = r'''#!/usr/bin/python3
"""sdinfra STAND-IN for nvidia-smi (TEST ONLY): prints what a @NAME@ would show."""
import sys
import time

GPU = {
    "name": "@NAME@",
    "memory_mib": @MEMORY@,
    "driver": "@DRIVER@",
    "cuda": "@CUDA@",
    "bus_id": "00000000:01:00.0",
    "uuid": "GPU-5dd1f2a8-3f4b-7c2e-9d61-0a2b4c6d8e10",
    "compute_cap": "@CCAP@",
    "used_mib": 4,
    "temp": 41,
}
BROKEN = @BROKEN@


def fields():
    g = GPU
    return {
        "name": (g["name"], None), "gpu_name": (g["name"], None),
        "driver_version": (g["driver"], None),
        "count": ("1", None), "index": ("0", None),
        "pci.bus_id": (g["bus_id"], None), "gpu_bus_id": (g["bus_id"], None),
        "uuid": (g["uuid"], None), "gpu_uuid": (g["uuid"], None),
        "compute_cap": (g["compute_cap"], None),
        "memory.total": (str(g["memory_mib"]), "MiB"),
        "memory.used": (str(g["used_mib"]), "MiB"),
        "memory.free": (str(g["memory_mib"] - g["used_mib"]), "MiB"),
        "temperature.gpu": (str(g["temp"]), None),
        "utilization.gpu": ("0", "%"), "utilization.memory": ("0", "%"),
        "power.draw": ("[N/A]", None), "power.limit": ("[N/A]", None),
        "persistence_mode": ("Disabled", None), "pstate": ("P8", None),
    }


def query(spec, fmt):
    opts = [o.strip() for o in fmt.split(",")] if fmt else []
    if "csv" not in opts:
        sys.stdout.write("sdinfra stand-in nvidia-smi: --query-gpu needs --format=csv\n")
        return 2
    known = fields()
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for n in names:
        if n not in known:
            sys.stdout.write('Field "%s" is not a valid field to query.\n\n' % n)
            return 2
    nounits = "nounits" in opts
    if "noheader" not in opts:
        hdr = []
        for n in names:
            unit = known[n][1]
            hdr.append("%s [%s]" % (n, unit) if unit and not nounits else n)
        sys.stdout.write(", ".join(hdr) + "\n")
    vals = []
    for n in names:
        v, unit = known[n]
        vals.append(v if (unit is None or nounits) else "%s %s" % (v, unit))
    sys.stdout.write(", ".join(vals) + "\n")
    return 0


def table():
    g = GPU
    name = g["name"] if len(g["name"]) <= 18 else g["name"][:15] + "..."
    used = "%dMiB" % g["used_mib"]
    total = "%dMiB" % g["memory_mib"]
    sep = "+-------------------------------+----------------------+----------------------+"
    top = "+" + "-" * 77 + "+"

    def row(*cols):
        return "|" + "|".join(cols) + "|"

    def wide(text):
        return "|" + text.ljust(77) + "|"

    lines = [
        time.strftime("%a %b %d %H:%M:%S %Y").ljust(31),
        top,
        wide(" NVIDIA-SMI %-12s Driver Version: %-12s CUDA Version: %s"
             % (g["driver"], g["driver"], g["cuda"])),
        "|" + "-" * 31 + "+" + "-" * 22 + "+" + "-" * 22 + "+",
        row(" GPU  Name        Persistence-M", " Bus-Id        Disp.A ", " Volatile Uncorr. ECC "),
        row(" Fan  Temp  Perf  Pwr:Usage/Cap", "         Memory-Usage ", " GPU-Util  Compute M. "),
        row(" " * 31, " " * 22, "               MIG M. "),
        "|" + "=" * 31 + "+" + "=" * 22 + "+" + "=" * 22 + "|",
        row("   0  %-18s  Off  " % name, " %s Off " % g["bus_id"], "                  N/A "),
        row(" N/A   %2dC    P8    N/A /  N/A " % g["temp"],
            " %9s / %8s " % (used, total), "      0%      Default "),
        row(" " * 31, " " * 22, "                  N/A "),
        sep,
        " " * 79,
        top,
        wide(" Processes:"),
        wide("  GPU   GI   CI        PID   Type   Process name                  GPU Memory"),
        wide("        ID   ID                                                   Usage"),
        "|" + "=" * 77 + "|",
        wide("  No running processes found"),
        top,
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def main(argv):
    if BROKEN:
        sys.stdout.write(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running.\n\n")
        return 9
    spec = fmt = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--query-gpu="):
            spec = a.split("=", 1)[1]
        elif a == "--query-gpu" and i + 1 < len(argv):
            i += 1
            spec = argv[i]
        elif a.startswith("--format="):
            fmt = a.split("=", 1)[1]
        elif a == "--format" and i + 1 < len(argv):
            i += 1
            fmt = argv[i]
        elif a in ("-L", "--list-gpus"):
            sys.stdout.write("GPU 0: %s (UUID: %s)\n" % (GPU["name"], GPU["uuid"]))
            return 0
        elif a in ("-h", "--help"):
            sys.stdout.write("sdinfra stand-in nvidia-smi: supports no option, -L, "
                             "--query-gpu=FIELDS --format=csv[,noheader][,nounits]\n")
            return 0
        i += 1
    if spec is not None:
        return query(spec, fmt)
    return table()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


def build_nvidia_driver_deb(dest_dir: os.PathLike | str, *,
                            package: str = "nvidia-driver-standin",
                            version: str = f"{NVIDIA_DRIVER_VERSION}-1",
                            gpu_name: str = "NVIDIA GeForce GTX 950M", memory_mib: int = 2048,
                            driver_version: str = NVIDIA_DRIVER_VERSION,
                            cuda_version: str = "12.0", compute_cap: str = "5.0",
                            broken: bool = False) -> Path:
    """Stand-in NVIDIA driver: only ``/usr/bin/nvidia-smi`` (no kernel module, no libraries).

    ``broken=True`` gives the nvidia-smi of a host whose driver is installed but not loaded
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver", exit 9).
    """
    script = (NVIDIA_SMI.replace("@NAME@", gpu_name).replace("@MEMORY@", str(int(memory_mib)))
              .replace("@DRIVER@", driver_version).replace("@CUDA@", cuda_version)
              .replace("@CCAP@", compute_cap).replace("@BROKEN@", "True" if broken else "False"))
    return build_deb(
        dest_dir, package, version, {"/usr/bin/nvidia-smi": (script, 0o755)},
        description=(
            f"sdinfra STAND-IN for an NVIDIA driver (TEST ONLY)\n"
            f"Not NVIDIA software: no kernel module, no libraries.  Provides an nvidia-smi that\n"
            f"reports a {gpu_name} with {memory_mib} MiB"
            + (" (broken: driver not loaded)" if broken else "") + "."),
        depends="python3", section="non-free/utils",
    )


# ---- apt repositories


@dataclasses.dataclass(frozen=True)
class AptRepo:
    root: Path          # directory to serve; the URI of a sources entry points here
    layout: str         # "dists" or "flat"
    suite: str          # "stable" (dists) or "/" (flat)
    component: str | None
    key: GpgKey         # the key it is signed with
    packages: dict      # name -> version
    release_dir: Path   # where Release/InRelease/Release.gpg are

    def sources(self, uri: str, signed_by: str) -> str:
        """deb822 ``.sources`` text for this repository at ``uri``."""
        return deb822_sources(uri, signed_by, suite=self.suite, component=self.component)


def deb822_sources(uri: str, signed_by: str, *, suite: str = "stable",
                   component: str | None = "main") -> str:
    """A deb822 sources entry (``/etc/apt/sources.list.d/NAME.sources``)."""
    lines = ["Types: deb", f"URIs: {uri}", f"Suites: {suite}"]
    if component:
        lines.append(f"Components: {component}")
    lines.append(f"Signed-By: {signed_by}")
    return "\n".join(lines) + "\n"


def _deb_field(deb: Path, field: str) -> str:
    return _run(["dpkg-deb", "--field", str(deb), field]).stdout.strip()


def build_apt_repo(dest: os.PathLike | str, debs: Iterable[os.PathLike | str], key: GpgKey, *,
                   layout: str = "dists", suite: str = "stable", component: str = "main",
                   architectures: str = "amd64", origin: str = "sdinfra-standin",
                   label: str = "sdinfra stand-in repository (TEST ONLY)") -> AptRepo:
    """Build a signed apt repository at ``dest`` (replaced if it exists).

    ``layout="dists"``: ``dists/SUITE/COMPONENT/binary-ARCH/Packages`` + ``pool/COMPONENT/``;
    sources entry ``Suites: SUITE``, ``Components: COMPONENT``.
    ``layout="flat"``: Packages, Release and the .debs in one directory; sources entry
    ``Suites: /`` and no Components (NVIDIA's own repository has this layout).
    """
    _need("apt-ftparchive", "apt-utils")
    if layout not in ("dists", "flat"):
        raise ValueError("layout must be 'dists' or 'flat'")
    root = Path(dest)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    debs = [Path(d) for d in debs]
    pool = root / "pool" / component if layout == "dists" else root
    pool.mkdir(parents=True, exist_ok=True)
    packages = {}
    for d in debs:
        shutil.copy2(d, pool / d.name)
        packages[_deb_field(d, "Package")] = _deb_field(d, "Version")
    arch = architectures.split()[0]
    if layout == "dists":
        release_dir = root / "dists" / suite
        index_dir = release_dir / component / f"binary-{arch}"
        pool_rel = f"pool/{component}"
    else:
        release_dir = index_dir = root
        pool_rel = "."
    index_dir.mkdir(parents=True, exist_ok=True)
    pkgs = _run(["apt-ftparchive", "packages", pool_rel], cwd=root).stdout
    if layout == "flat":  # apt-ftparchive writes "./name.deb"; apt wants paths relative to root
        pkgs = pkgs.replace("Filename: ./", "Filename: ")
    (index_dir / "Packages").write_text(pkgs)
    with gzip.GzipFile(index_dir / "Packages.gz", "wb", mtime=EPOCH) as gz:
        gz.write(pkgs.encode())
    opts = [f"-oAPT::FTPArchive::Release::Origin={origin}",
            f"-oAPT::FTPArchive::Release::Label={label}",
            f"-oAPT::FTPArchive::Release::Architectures={architectures}",
            "-oAPT::FTPArchive::Release::Description=sdinfra test stand-ins; not vendor software"]
    if layout == "dists":
        opts += [f"-oAPT::FTPArchive::Release::Suite={suite}",
                 f"-oAPT::FTPArchive::Release::Codename={suite}",
                 f"-oAPT::FTPArchive::Release::Components={component}"]
        release_text = _run(["apt-ftparchive", *opts, "release", "."], cwd=release_dir).stdout
    else:
        # only the indices, not the .debs, belong in a flat Release
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            for n in ("Packages", "Packages.gz"):
                shutil.copy2(root / n, Path(tmp, n))
            release_text = _run(["apt-ftparchive", *opts, "release", "."], cwd=tmp).stdout
    release = release_dir / "Release"
    release.write_text(release_text)
    _sign_release(release, key)
    return AptRepo(root=root, layout=layout, suite=suite if layout == "dists" else "/",
                   component=component if layout == "dists" else None, key=key,
                   packages=packages, release_dir=release_dir)


def build_wrong_key_repo(dest: os.PathLike | str, like: AptRepo, wrong_key: GpgKey) -> AptRepo:
    """The same packages and layout as ``like``, signed with ``wrong_key`` (fault tests)."""
    debs = sorted((like.root / "pool").rglob("*.deb")) if like.layout == "dists" \
        else sorted(like.root.glob("*.deb"))
    with tempfile.TemporaryDirectory() as tmp:
        copies = [Path(shutil.copy2(d, tmp)) for d in debs]
        return build_apt_repo(dest, copies, wrong_key, layout=like.layout,
                              suite=like.suite if like.layout == "dists" else "stable",
                              component=like.component or "main")


# ---- amdgpu-install stand-in

AMDGPU_INSTALL = r'''#!/bin/sh
# sdinfra STAND-IN for AMD's amdgpu-install @VERSION@ (TEST ONLY; not AMD software).
# Appends its arguments (one line) to /var/log/amdgpu-install.args, then "installs" ROCm by
# copying stand-in rocminfo/rocm-smi to /opt/rocm-5.3.0 (symlinked as /opt/rocm).  It adds no
# apt sources and installs no kernel module; /var/lib/amdgpu-install-standin/state says what the
# real installer would have done.  SDINFRA_STANDIN_ROOT (tests only) prefixes every path.
set -eu
R="${SDINFRA_STANDIN_ROOT:-}"
mkdir -p "$R/var/log"
printf '%s\n' "$*" >> "$R/var/log/amdgpu-install.args"

ALL_USECASES="dkms graphics multimedia workstation rocm rocmdev amf lrt opencl openclsdk hip hiplibsdk mllib mlsdk"
ROCM_USECASES="rocm rocmdev lrt opencl openclsdk hip hiplibsdk mllib mlsdk"
usecases=""
dkms=yes
action=install
for a in "$@"; do
    case "$a" in
        --usecase=*) usecases=$(printf '%s' "${a#--usecase=}" | tr ',' ' ') ;;
        --usecase)
            echo "E: Command line option --usecase is not understood in combination with the other options" >&2
            exit 100 ;;
        --no-dkms) dkms=no ;;
        --list-usecase) action=list ;;
        --uninstall) action=uninstall ;;
        -h|--help) action=help ;;
        *) ;;  # -y, --rocmrelease=..., --no-32, --accept-eula ...: recorded only
    esac
done

case "$action" in
help)
    echo "Usage: amdgpu-install [options...] (sdinfra stand-in: records its arguments)"
    echo "  --usecase=USECASE[,...]  --list-usecase  --no-dkms  --uninstall  -y"
    exit 0 ;;
list)
    echo "If --usecase option is not present, the default selection is \"graphics,opencl,hip\""
    echo "Available use cases:"
    for u in $ALL_USECASES; do echo "- $u"; done
    exit 0 ;;
uninstall)
    rm -rf "$R/opt/rocm-5.3.0" "$R/opt/rocm" "$R/var/lib/amdgpu-install-standin"
    echo "amdgpu-install (sdinfra stand-in): removed"
    exit 0 ;;
esac

[ -n "$usecases" ] || usecases="graphics opencl hip"
for u in $usecases; do
    case " $ALL_USECASES " in
        *" $u "*) ;;
        *) echo "ERROR: Unsupported use case: $u" >&2; exit 1 ;;
    esac
done
rocm=no
for u in $usecases; do
    case " $ROCM_USECASES " in *" $u "*) rocm=yes ;; esac
done
if [ "$rocm" = yes ]; then
    rm -rf "$R/opt/rocm-5.3.0"
    mkdir -p "$R/opt"
    cp -a "$R/usr/share/amdgpu-install-standin/rocm-5.3.0" "$R/opt/rocm-5.3.0"
    ln -sfn rocm-5.3.0 "$R/opt/rocm"
fi
mkdir -p "$R/var/lib/amdgpu-install-standin"
{
    echo "usecases=$(echo $usecases | tr ' ' ',')"
    echo "dkms=$dkms"
    echo "rocm=$rocm"
} > "$R/var/lib/amdgpu-install-standin/state"
echo "amdgpu-install (sdinfra stand-in): use cases $usecases; kernel module (dkms): $dkms; ROCm user space: $rocm"
'''

ROCMINFO_HEAD = """\
ROCk module is loaded
=====================
HSA System Attributes
=====================
Runtime Version:         1.1
System Timestamp Freq.:  1000.000000MHz
Sig. Max Wait Duration:  18446744073709551615 (0xFFFFFFFFFFFFFFFF) (timestamp count)
Machine Model:           LARGE
System Endianness:       LITTLE

==========
HSA Agents
==========
*******
Agent 1
*******
  Name:                    Intel(R) Core(TM) i5-4590 CPU @ 3.30GHz
  Uuid:                    CPU-XX
  Marketing Name:          Intel(R) Core(TM) i5-4590 CPU @ 3.30GHz
  Vendor Name:             CPU
  Feature:                 None specified
  Profile:                 FULL_PROFILE
  Float Round Mode:        NEAR
  Max Queue Number:        0(0x0)
  Queue Min Size:          0(0x0)
  Queue Max Size:          0(0x0)
  Queue Type:              MULTI
  Node:                    0
  Device Type:             CPU
  Cache Info:
    L1:                      32768(0x8000) KB
  Chip ID:                 0(0x0)
  ASIC Revision:           0(0x0)
  Cacheline Size:          64(0x40)
  Max Clock Freq. (MHz):   3700
  BDFID:                   0
  Internal Node ID:        0
  Compute Unit:            4
  SIMDs per CU:            0
  Shader Engines:          0
  Shader Arrs. per Eng.:   0
  WatchPts on Addr. Ranges:1
  Features:                None
  Pool Info:
    Pool 1
      Segment:                 GLOBAL; FLAGS: FINE GRAINED
      Size:                    16315488(0xf8f460) KB
      Allocatable:             TRUE
      Alloc Granule:           4KB
      Alloc Alignment:         4KB
      Accessible by all:       TRUE
    Pool 2
      Segment:                 GLOBAL; FLAGS: KERNARG, FINE GRAINED
      Size:                    16315488(0xf8f460) KB
      Allocatable:             TRUE
      Alloc Granule:           4KB
      Alloc Alignment:         4KB
      Accessible by all:       TRUE
    Pool 3
      Segment:                 GLOBAL; FLAGS: COARSE GRAINED
      Size:                    16315488(0xf8f460) KB
      Allocatable:             TRUE
      Alloc Granule:           4KB
      Alloc Alignment:         4KB
      Accessible by all:       TRUE
  ISA Info:
"""

ROCMINFO_GFX803 = """\
*******
Agent 2
*******
  Name:                    gfx803
  Uuid:                    GPU-XX
  Marketing Name:          Baffin [Radeon RX 460/560D / Pro 450/455/460/555/555X/560/560X]
  Vendor Name:             AMD
  Feature:                 KERNEL_DISPATCH
  Profile:                 BASE_PROFILE
  Float Round Mode:        NEAR
  Max Queue Number:        128(0x80)
  Queue Min Size:          64(0x40)
  Queue Max Size:          131072(0x20000)
  Queue Type:              MULTI
  Node:                    1
  Device Type:             GPU
  Cache Info:
    L1:                      16(0x10) KB
  Chip ID:                 26607(0x67ef)
  ASIC Revision:           0(0x0)
  Cacheline Size:          64(0x40)
  Max Clock Freq. (MHz):   1200
  BDFID:                   256
  Internal Node ID:        1
  Compute Unit:            14
  SIMDs per CU:            4
  Shader Engines:          2
  Shader Arrs. per Eng.:   1
  WatchPts on Addr. Ranges:4
  Features:                KERNEL_DISPATCH
  Fast F16 Operation:      TRUE
  Wavefront Size:          64(0x40)
  Workgroup Max Size:      1024(0x400)
  Workgroup Max Size per Dimension:
    x                        1024(0x400)
    y                        1024(0x400)
    z                        1024(0x400)
  Max Waves Per CU:        40(0x28)
  Max Work-item Per CU:    2560(0xa00)
  Grid Max Size:           4294967295(0xffffffff)
  Grid Max Size per Dimension:
    x                        4294967295(0xffffffff)
    y                        4294967295(0xffffffff)
    z                        4294967295(0xffffffff)
  Max fbarriers/Workgrp:   32
  Pool Info:
    Pool 1
      Segment:                 GLOBAL; FLAGS: COARSE GRAINED
      Size:                    2097152(0x200000) KB
      Allocatable:             TRUE
      Alloc Granule:           4KB
      Alloc Alignment:         4KB
      Accessible by all:       FALSE
    Pool 2
      Segment:                 GROUP
      Size:                    64(0x40) KB
      Allocatable:             FALSE
      Alloc Granule:           0KB
      Alloc Alignment:         0KB
      Accessible by all:       FALSE
  ISA Info:
    ISA 1
      Name:                    amdgcn-amd-amdhsa--gfx803
      Machine Models:          HSA_MACHINE_MODEL_LARGE
      Profiles:                HSA_PROFILE_BASE
      Default Rounding Mode:   NEAR
      Default Rounding Mode:   NEAR
      Fast f16:                TRUE
      Workgroup Max Size:      1024(0x400)
      Workgroup Max Size per Dimension:
        x                        1024(0x400)
        y                        1024(0x400)
        z                        1024(0x400)
      Grid Max Size:           4294967295(0xffffffff)
      Grid Max Size per Dimension:
        x                        4294967295(0xffffffff)
        y                        4294967295(0xffffffff)
        z                        4294967295(0xffffffff)
      FBarrier Max Size:       32
"""

ROCMINFO_TAIL = "*** Done ***\n"

ROCM_SMI_GPU = """\


======================= ROCm System Management Interface =======================
================================= Concise Info =================================
GPU  Temp (DieEdge)  AvgPwr  SCLK    MCLK    Fan     Perf  PwrCap  VRAM%  GPU%
0    35.0c           8.0W    214Mhz  300Mhz  19.61%  auto  48.0W     0%   0%
================================================================================
============================= End of ROCm SMI Log ==============================
"""

ROCM_SMI_NONE = """\


======================= ROCm System Management Interface =======================
WARNING: No AMD GPUs specified
================================= Concise Info =================================
GPU  Temp (DieEdge)  AvgPwr  SCLK  MCLK  Fan  Perf  PwrCap  VRAM%  GPU%
================================================================================
============================= End of ROCm SMI Log ==============================
"""


def _cat_script(text: str, what: str) -> str:
    return (f"#!/bin/sh\n# sdinfra STAND-IN for {what} (TEST ONLY; not AMD software)\n"
            f"cat <<'SDINFRA_EOF'\n{text}SDINFRA_EOF\n")


def build_amdgpu_install_deb(dest_dir: os.PathLike | str, *, gpu: bool = True) -> Path:
    """Stand-in ``amdgpu-install_5.3.50300-1_all.deb``.

    ``gpu=True``: the installed rocminfo lists a CPU agent and a gfx803 (Polaris, RX 460) agent;
    ``gpu=False``: CPU agents only (what a gfx8 card without PCIe atomics looks like).
    """
    base = "/usr/share/amdgpu-install-standin/rocm-5.3.0"
    rocminfo = ROCMINFO_HEAD + (ROCMINFO_GFX803 if gpu else "") + ROCMINFO_TAIL
    files = {
        "/usr/bin/amdgpu-install": (AMDGPU_INSTALL.replace("@VERSION@", AMDGPU_INSTALL_VERSION),
                                    0o755),
        f"{base}/bin/rocminfo": (_cat_script(rocminfo, "rocminfo"), 0o755),
        f"{base}/bin/rocm-smi": (
            _cat_script(ROCM_SMI_GPU if gpu else ROCM_SMI_NONE, "rocm-smi"), 0o755),
        f"{base}/bin/rocm_agent_enumerator": (
            _cat_script("gfx000\n" + ("gfx803\n" if gpu else ""), "rocm_agent_enumerator"),
            0o755),
        f"{base}/.info/version": (ROCM_VERSION_INFO + "\n", 0o644),
    }
    return build_deb(
        dest_dir, "amdgpu-install", AMDGPU_INSTALL_VERSION, files,
        description=(
            "sdinfra STAND-IN for AMD's amdgpu-install (TEST ONLY)\n"
            "Not AMD software.  amdgpu-install records its arguments in\n"
            "/var/log/amdgpu-install.args and copies stand-in rocminfo and rocm-smi\n"
            "(" + ("CPU agent + gfx803 agent" if gpu else "CPU agents only")
            + ") to /opt/rocm-5.3.0."),
        section="admin", filename=AMDGPU_INSTALL_FILENAME,
    )


# --------------------------------------------------------------------------------------------
# 4. web UI stand-in image

# The stand-in web UI: testbed/standin_webui/ (launch.py, webui.py, modules/, torch/), Python
# files laid out as the real image lays out AUTOMATIC1111's (/webui, run as `python launch.py`
# by /sdinfra/start.sh), run by the build machine's Debian python3 with only the standard library
# modules they import (see the top of this module for what it does).
STANDIN_SOURCES = Path(__file__).with_name("standin_webui")
FLAGS_FILE = Path(__file__).resolve().parents[1] / "roles" / "webui" / "webui_flags.txt"
START_SH = Path(__file__).resolve().parents[1] / "roles" / "webui" / "templates" / "start.sh"
LAUNCH_PY = START_SH.with_name("launch.py")
DEBIAN_PYTHON = Path("/usr/bin/python3")
# What the stand-in's interpreter needs beyond what its sources import: start-up (site,
# encodings), the deploy's own launcher wrapper (runpy) and the tests' requests (urllib.request).
PYTHON_EXTRA_MODULES = ["site", "sysconfig", "encodings", "runpy", "gettext", "locale", "urllib.request",
                        "_sysconfigdata__x86_64-linux-gnu", "_sysconfigdata__linux_x86_64-linux-gnu"]

_STDLIB_ZIP = r"""
import modulefinder, os, py_compile, sys, tempfile, zipfile
out, sources, extra = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
stdlib = os.path.dirname(os.__file__)
finder = modulefinder.ModuleFinder(path=[sources, os.path.join(sources, "modules"), stdlib],
                                   excludes=["torch", "webui", "modules", "tkinter", "test",
                                             "unittest", "pydoc", "doctest", "_pydecimal"])
for root, _, files in os.walk(sources):
    for name in sorted(files):
        if name.endswith(".py"):
            finder.run_script(os.path.join(root, name))
for name in extra:
    try:
        finder.import_hook(name)
    except ImportError:
        pass
    if name == "encodings":
        for file in sorted(os.listdir(os.path.join(stdlib, "encodings"))):
            if file.endswith(".py") and not file.startswith("mac_"):
                finder.import_hook("encodings." + file[:-3])
paths = {}
for name, module in finder.modules.items():
    file = module.__file__
    if not file or not file.endswith(".py") or not file.startswith(stdlib + "/"):
        continue
    arc = os.path.relpath(file, stdlib) + "c"
    paths[arc] = file
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf, tempfile.TemporaryDirectory() as tmp:
    for arc in sorted(paths):
        pyc = os.path.join(tmp, "m.pyc")
        py_compile.compile(paths[arc], cfile=pyc, dfile=arc[:-1], doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        info = zipfile.ZipInfo(arc, date_time=(2023, 11, 14, 22, 13, 20))
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, open(pyc, "rb").read())
print(sys.version_info[0], sys.version_info[1])
"""


def _python_runtime(python: Path = DEBIAN_PYTHON) -> dict[str, tuple[bytes, int]]:
    """Debian's python3 for the image: the binary, the shared libraries ``ldd`` names, and a
    zip of the compiled standard library modules the stand-in imports, by path in the image."""
    binary = python.resolve()
    if not binary.exists():
        raise RuntimeError(f"{python} not found: install the Debian package python3")
    files: dict[str, tuple[bytes, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / "stdlib.zip"
        out = _run([str(binary), "-I", "-c", _STDLIB_ZIP, str(zip_path), str(STANDIN_SOURCES),
                    ",".join(PYTHON_EXTRA_MODULES)]).stdout.split()
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


def build_rootfs_layer(busybox: Path | None = None, version: str = "v1.10.1") -> bytes:
    """The image's single layer (an uncompressed tar), reproducible."""
    busybox = busybox or find_static_busybox()
    applets = _busybox_applets(busybox)
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
        "history": [{"created": created, "created_by": "sdinfra testbed/standins.py",
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


# --------------------------------------------------------------------------------------------
# 5. model file


@dataclasses.dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str
    checksums: Path  # "<sha256>  <name>" file next to it


def build_model(dest_dir: os.PathLike | str, name: str = "standin.safetensors") -> ModelFile:
    """A 4 KiB float32 tensor in safetensors format, with a checksums.sha256 file."""
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    n = 32 * 32
    data = struct.pack(f"<{n}f", *(((i * 37) % 101) / 101.0 - 0.5 for i in range(n)))
    header = {
        "__metadata__": {"format": "pt", "sdinfra": "stand-in model, TEST ONLY, not a checkpoint"},
        "standin.weight": {"dtype": "F32", "shape": [32, 32], "data_offsets": [0, len(data)]},
    }
    hb = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    hb += b" " * (-len(hb) % 8)
    path = dest / name
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    digest = sha256_file(path)
    sums = dest / "checksums.sha256"
    sums.write_text(f"{digest}  {name}\n")
    return ModelFile(path=path, sha256=digest, checksums=sums)


def read_safetensors_header(path: os.PathLike | str) -> dict:
    """Parse and check a safetensors file's header (used by the tests)."""
    raw = Path(path).read_bytes()
    (hlen,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + hlen])
    body = len(raw) - 8 - hlen
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    if end != body:
        raise ValueError(f"tensor data ends at {end}, file body is {body} bytes")
    return header


# --------------------------------------------------------------------------------------------
# everything at once


@dataclasses.dataclass(frozen=True)
class StandIns:
    """What :func:`build_all` made.  ``*_path`` values are relative to ``root`` (= URL paths)."""

    root: Path                     # serve this directory
    key: GpgKey
    wrong_key: GpgKey
    apt: AptRepo                   # dists layout, suite "stable", component "main"
    apt_wrong_key: AptRepo         # same, signed with wrong_key
    apt_flat: AptRepo              # flat layout (NVIDIA-like), signed with key
    apt_flat_wrong_key: AptRepo    # the same flat repository, signed with wrong_key
    key_path: str                  # "keys/sdinfra-standin.asc"
    key_gpg_path: str              # "keys/sdinfra-standin.gpg"
    wrong_key_path: str
    apt_path: str                  # "apt"
    apt_wrong_key_path: str        # "apt-wrongkey"
    apt_flat_path: str             # "libnvidia-container/stable/deb/amd64"
    apt_flat_wrong_key_path: str   # "libnvidia-container-wrongkey/stable/deb/amd64"
    nvidia_gpgkey_path: str        # "libnvidia-container/gpgkey"
    nvidia_toolkit_deb: Path
    nvidia_driver_deb: Path
    nvidia_driver_package: str
    amdgpu_base_path: str          # "radeon": replaces https://repo.radeon.com
    amdgpu_cpuonly_base_path: str  # "radeon-cpuonly"
    amdgpu_deb_path: str           # radeon/amdgpu-install/5.3/ubuntu/jammy/amdgpu-install_...deb
    amdgpu_cpuonly_deb_path: str
    amdgpu_sha256: str
    amdgpu_cpuonly_sha256: str
    image: WebuiImage
    image_path: str                # "images/webui-standin.tar"
    model: ModelFile
    model_path: str                # "models/standin.safetensors"
    model_checksums_path: str      # "models/checksums.sha256"

    def url(self, base: str, rel: str) -> str:
        """``url("http://10.77.1.1:8080", s.apt_path)`` -> ``http://10.77.1.1:8080/apt``."""
        return base.rstrip("/") + "/" + rel.lstrip("/")

    def apt_sources(self, base: str, signed_by: str, *, wrong_key: bool = False,
                    flat: bool = False) -> str:
        repo, rel = ((self.apt_flat_wrong_key, self.apt_flat_wrong_key_path)
                     if flat and wrong_key else
                     (self.apt_flat, self.apt_flat_path) if flat else
                     (self.apt_wrong_key, self.apt_wrong_key_path) if wrong_key else
                     (self.apt, self.apt_path))
        return repo.sources(self.url(base, rel), signed_by)


def build_all(workdir: os.PathLike | str, *, image_tag: str = DEFAULT_IMAGE_TAG,
              nvidia_driver_package: str = "nvidia-driver-standin") -> StandIns:
    """Build every stand-in into ``workdir`` (``workdir/www`` is what to serve)."""
    work = Path(workdir)
    www = work / "www"
    private = work / "private"
    scratch = work / "build"
    for d in (www, scratch):
        if d.exists():
            shutil.rmtree(d)
    www.mkdir(parents=True)
    private.mkdir(parents=True, exist_ok=True)
    os.chmod(private, 0o700)
    scratch.mkdir(parents=True)

    keys = www / "keys"
    key = make_gpg_key(keys, "sdinfra-standin", private_dir=private)
    wrong = make_gpg_key(keys, "wrong-key",
                         uid="sdinfra WRONG key (TEST ONLY) <wrong-key@sdinfra.invalid>",
                         private_dir=private)

    toolkit = build_nvidia_container_toolkit_deb(scratch)
    driver = build_nvidia_driver_deb(scratch, package=nvidia_driver_package)
    apt = build_apt_repo(www / "apt", [toolkit, driver], key)
    apt_wrong = build_wrong_key_repo(www / "apt-wrongkey", apt, wrong)
    flat_rel = "libnvidia-container/stable/deb/amd64"
    apt_flat = build_apt_repo(www / flat_rel, [toolkit, driver], key, layout="flat")
    flat_wrong_rel = "libnvidia-container-wrongkey/stable/deb/amd64"
    apt_flat_wrong = build_wrong_key_repo(www / flat_wrong_rel, apt_flat, wrong)
    shutil.copy2(key.public_asc, www / "libnvidia-container" / "gpgkey")

    amd_rel = {}
    amd_sha = {}
    for base, gpu in (("radeon", True), ("radeon-cpuonly", False)):
        deb = build_amdgpu_install_deb(scratch / base, gpu=gpu)
        for codename in ("focal", "jammy"):
            d = www / base / "amdgpu-install" / "5.3" / "ubuntu" / codename
            d.mkdir(parents=True)
            shutil.copy2(deb, d / deb.name)
        amd_rel[base] = f"{base}/amdgpu-install/5.3/ubuntu/jammy/{deb.name}"
        amd_sha[base] = sha256_file(deb)

    image = build_webui_image(www / "images" / "webui-standin.tar", tag=image_tag)
    model = build_model(www / "models")
    shutil.rmtree(scratch)

    return StandIns(
        root=www, key=key, wrong_key=wrong, apt=apt, apt_wrong_key=apt_wrong, apt_flat=apt_flat,
        apt_flat_wrong_key=apt_flat_wrong, apt_flat_wrong_key_path=flat_wrong_rel,
        key_path="keys/sdinfra-standin.asc", key_gpg_path="keys/sdinfra-standin.gpg",
        wrong_key_path="keys/wrong-key.asc", apt_path="apt", apt_wrong_key_path="apt-wrongkey",
        apt_flat_path=flat_rel, nvidia_gpgkey_path="libnvidia-container/gpgkey",
        nvidia_toolkit_deb=next((www / "apt" / "pool").rglob(toolkit.name)),
        nvidia_driver_deb=next((www / "apt" / "pool").rglob(driver.name)),
        nvidia_driver_package=nvidia_driver_package,
        amdgpu_base_path="radeon", amdgpu_cpuonly_base_path="radeon-cpuonly",
        amdgpu_deb_path=amd_rel["radeon"], amdgpu_cpuonly_deb_path=amd_rel["radeon-cpuonly"],
        amdgpu_sha256=amd_sha["radeon"], amdgpu_cpuonly_sha256=amd_sha["radeon-cpuonly"],
        image=image, image_path="images/webui-standin.tar",
        model=model, model_path="models/standin.safetensors",
        model_checksums_path="models/checksums.sha256",
    )


# --------------------------------------------------------------------------------------------
# 6. HTTP file server


@dataclasses.dataclass(frozen=True)
class Request:
    server: str     # "ADDRESS:PORT" the request came in on
    client: str     # client address
    method: str
    path: str       # URL path, query string removed, percent-decoded
    status: int
    time: float


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server_version = "sdinfra-standin-http"
    sys_version = ""

    def list_directory(self, path):  # no directory listings
        self.send_error(404, "Not Found")
        return None

    def log_request(self, code="-", size="-"):
        try:
            status = int(code)
        except (TypeError, ValueError):
            status = 0
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        self.server.owner._record(Request(  # type: ignore[attr-defined]
            server="%s:%s" % self.server.server_address[:2], client=self.client_address[0],
            method=self.command or "-", path=path, status=status, time=time.time()))

    def log_message(self, format, *args):  # keep test output clean
        pass


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, owner, freebind):
        self.owner = owner
        self._freebind = freebind
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        super().__init__(addr, handler)

    def server_bind(self):
        if self._freebind:
            self.socket.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: address may come later
        super().server_bind()


class Server:
    """Serves one directory on several addresses, one port; records every request.

    Use :func:`serve` to make one.  ``requests`` is a list of :class:`Request` (thread-safe
    appends); ``clear()`` empties it, ``paths()`` lists the request paths.
    """

    def __init__(self, directory: os.PathLike | str, addresses: Sequence[str], port: int = 0,
                 *, freebind: bool = False):
        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise ValueError(f"not a directory: {self.directory}")
        if not addresses:
            raise ValueError("give at least one address to listen on")
        for a in addresses:
            ip = ipaddress.ip_address(a)  # ValueError for host names
            if ip.is_unspecified:
                raise ValueError(f"refusing to listen on {a}: give explicit addresses")
        self.addresses = list(addresses)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._servers: list[_HTTPServer] = []
        self._threads: list[threading.Thread] = []
        handler = _make_handler(self.directory)
        try:
            for a in self.addresses:
                srv = _HTTPServer((a, port), handler, self, freebind)
                port = srv.server_address[1]  # port 0: the first bind picks one for all
                self._servers.append(srv)
        except Exception:
            for s in self._servers:
                s.server_close()
            raise
        self.port = port
        for srv in self._servers:
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                 name=f"standin-http-{srv.server_address[0]}", daemon=True)
            t.start()
            self._threads.append(t)

    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)

    def url(self, address: str | None = None, path: str = "") -> str:
        a = address or self.addresses[0]
        host = f"[{a}]" if ":" in a else a
        return f"http://{host}:{self.port}/" + path.lstrip("/")

    @property
    def urls(self) -> list[str]:
        return [self.url(a) for a in self.addresses]

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _make_handler(directory: Path):
    class H(_Handler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(directory), **kw)
    return H


def serve(directory: os.PathLike | str, addresses: Sequence[str], port: int = 0, *,
          freebind: bool = False) -> Server:
    """Serve ``directory`` over HTTP on each of ``addresses`` (never 0.0.0.0) on one port.

    ``port=0`` picks a free port (``server.port``).  ``freebind=True`` allows binding an address
    not configured yet (a veth that comes up later).  Stop with ``.stop()`` or use ``with``.
    """
    return Server(directory, addresses, port, freebind=freebind)


__all__ = [
    "AptRepo", "GpgKey", "ModelFile", "Request", "Server", "StandIns", "WebuiImage",
    "build_all", "build_amdgpu_install_deb", "build_apt_repo", "build_deb", "build_model",
    "build_nvidia_container_toolkit_deb", "build_nvidia_driver_deb", "build_rootfs_layer",
    "build_webui_image", "build_wrong_key_repo", "deb822_sources", "find_static_busybox",
    "make_gpg_key", "read_safetensors_header", "serve", "sha256_file",
]
