"""
Apt helpers shared by the roles: installing only what is missing, and signed repositories.

A dpkg run that was interrupted (a killed deploy, a lost connection, a power cut in the middle of
an install) leaves packages unpacked but not configured, and apt then refuses every install
("dpkg was interrupted, you must manually run 'dpkg --configure -a'"). ``install`` and
``repository`` finish such a run first, seen from the same command that lists the packages.

Every third-party repository is added the way the vendors document it today: a deb822
``.sources`` file whose ``Signed-By`` names a keyring in /etc/apt/keyrings, never ``apt-key``.
The key is fetched once and kept only when its fingerprint is the pinned one.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.util.packaging import parse_packages
from pyinfra.operations import apt, files, server

KEYRINGS = "/etc/apt/keyrings"
SOURCES = "/etc/apt/sources.list.d"
DPKG_UPDATES = "/var/lib/dpkg/updates"  # dpkg's journal: entries here = a run did not finish
INTERRUPTED = "sdinfra:dpkg-interrupted"
# dpkg -l's second status letter for a package a dpkg run left half way: Half-installed,
# Unpacked, halF-configured, triggers-aWaited, triggers-pending.
HALF_DONE = "HUFWt"
FINISH_COMMAND = ("DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold "
                  "--configure -a")


class DpkgPackages(FactBase):
    """
    The installed packages (as pyinfra's ``DebPackages``: fully installed ones only, name ->
    versions) and whether the last dpkg run was interrupted: its journal in
    /var/lib/dpkg/updates is not empty, or a package is left half way (``dpkg -l`` status U, F,
    H, W or t). One command, the ``dpkg -l`` that ``install`` needs anyway.

    .. code:: python

        {"packages": {"curl": {"7.88.1-10+deb12u5"}}, "interrupted": False}
    """

    @staticmethod
    def default():
        return {"packages": {}, "interrupted": False}

    def requires_command(self):
        return "dpkg"

    def command(self):
        # Journal entries are named by number, as apt counts them (not dpkg's tmp.i); looked
        # for by the shell itself, no process.
        return (f"dpkg -l; for f in {DPKG_UPDATES}/*; do case \"${{f##*/}}\" in "
                f"''|*[!0-9]*) ;; *) echo {INTERRUPTED}; break ;; esac; done")

    def process(self, output):
        lines = list(output)
        half = [line for line in lines
                if len(line) > 2 and line[0] in "uihrp" and line[1] in HALF_DONE
                and line[2] in " R"]
        return {"packages": parse_packages(DebPackages.regex, lines),
                "interrupted": INTERRUPTED in (line.strip() for line in lines) or bool(half)}


def missing(packages: list[str], dpkg: dict | None = None) -> list[str]:
    """The packages not installed on the current host (``dpkg``: a DpkgPackages fact read
    already; pyinfra caches no fact, so each read is one more remote command)."""
    installed = (dpkg if dpkg is not None else host.get_fact(DpkgPackages))["packages"]
    return [name for name in packages if name not in installed]


_finished: set = set()  # hosts whose interrupted dpkg run this run finishes already


def finish_interrupted(dpkg: dict | None = None) -> None:
    """
    ``dpkg --configure -a`` when the host's last dpkg run was interrupted, once per host and
    run; nothing otherwise. Call it before anything that runs apt-get. ``dpkg``: the
    DpkgPackages fact, when read already.
    """
    dpkg = dpkg if dpkg is not None else host.get_fact(DpkgPackages)
    if dpkg["interrupted"] and host.name not in _finished:
        _finished.add(host.name)
        server.shell(name="Finish the interrupted dpkg run (dpkg --configure -a)",
                     commands=[FINISH_COMMAND])


@deploy("Install missing packages")
def install(packages: list[str], refresh: bool = False, dpkg: dict | None = None):
    """
    Install the packages that are not installed yet, refreshing the package lists first.

    Nothing is run, not even ``apt-get update``, when every package is already there: a
    converged host costs one ``dpkg -l``. An interrupted dpkg run is finished first
    (``finish_interrupted``).

    + packages: Debian package names
    + refresh: also run ``apt-get update`` when nothing is missing (a repository was just added)
    + dpkg: the DpkgPackages fact when the caller read it already (else it is read here)
    """
    if dpkg is None:
        dpkg = host.get_fact(DpkgPackages)  # one read for both
    finish_interrupted(dpkg)
    todo = missing(packages, dpkg)
    if todo or refresh:
        apt.update(name="Refresh package lists")
    if todo:
        apt.packages(name=f"Install {' '.join(todo)}", packages=todo, no_recommends=True)


class KeyFingerprints(FactBase):
    """
    Fingerprints of the primary keys in an OpenPGP key file, empty when the file is missing.

    .. code:: python

        ["9DC858229FC7DD38854AE2D88D81803C0EBFCD88"]
    """

    default = list

    def command(self, path):
        quoted = shlex.quote(path)
        return (
            f"test -e {quoted} && command -v gpg >/dev/null && "
            f"gpg --show-keys --with-colons {quoted} 2>/dev/null "
            "| awk -F: '$1==\"pub\"{p=1;next} p && $1==\"fpr\"{print $10; p=0}' || true"
        )

    def process(self, output):
        return [line.strip() for line in output if line.strip()]


class TextFile(FactBase):
    """
    A text file's content and mode in one command, None when it is no regular file.

    .. code:: python

        {"text": "Types: deb\\n...", "mode": "644"}
    """

    MARK = "##sdinfra:text-file"

    def command(self, path):
        quoted = shlex.quote(path)
        # sed adds the newline a file may lack, so that the mode line is a line of its own.
        return (f"echo {shlex.quote(f'{self.MARK} {path}')}; [ -f {quoted} ] && "
                f"{{ sed -e '$a\\' -- {quoted}; echo \"{self.MARK}-mode=$(stat -c %a -- {quoted})\"; }}; "
                "true")

    def process(self, output):
        lines = [line for line in output if not line.startswith(f"{self.MARK} ")]
        if not lines or not lines[-1].startswith(f"{self.MARK}-mode="):
            return None
        text = "".join(f"{line}\n" for line in lines[:-1])
        return {"text": text, "mode": lines[-1].split("=", 1)[1].strip()}


@operation()
def key(url: str, dest: str, fingerprint: str):
    """
    Fetch an armored OpenPGP key and keep it only if its fingerprint is the pinned one.

    The key goes to a temporary file first; a key with another fingerprint is removed and the
    operation fails, so apt never trusts it.

    .. code:: python

        key(url="https://download.docker.com/linux/ubuntu/gpg",
            dest="/etc/apt/keyrings/docker.asc",
            fingerprint="9DC858229FC7DD38854AE2D88D81803C0EBFCD88")
    """
    if fingerprint in host.get_fact(KeyFingerprints, path=dest):
        return
    temp = f"{dest}.new"
    message = f"the key at {url} does not have the pinned fingerprint {fingerprint}"
    yield f"install -d -m 0755 {KEYRINGS}"
    yield (
        f"curl -fsSL {shlex.quote(url)} -o {shlex.quote(temp)} "
        f"|| {{ rm -f {shlex.quote(temp)}; echo {shlex.quote(f'cannot fetch the key {url}')} >&2; "
        "exit 1; }"
    )
    yield (
        f"gpg --show-keys --with-colons {shlex.quote(temp)} | grep -q '^fpr:*{fingerprint}:' "
        f"&& chmod 0644 {shlex.quote(temp)} && mv {shlex.quote(temp)} {shlex.quote(dest)} "
        f"|| {{ rm -f {shlex.quote(temp)}; echo {shlex.quote(message)} >&2; exit 1; }}"
    )


def deb822(uris: str, suites: str, components: str, keyring: str, arch: str | None = None) -> str:
    """
    A deb822 source. A flat repository (NVIDIA's: ``Suites: /``, an exact path ending in ``/``)
    takes no ``Components`` line, as sources.list(5) says; pass ``components=""`` for it.
    """
    if suites.endswith("/") != (not components):
        raise ValueError(f"suites {suites!r} with components {components!r}: a flat repository "
                         "(suite ending in /) has no components, any other needs them")
    lines = [
        "# Managed by sdinfra: changes here are overwritten",
        "Types: deb",
        f"URIs: {uris}",
        f"Suites: {suites}",
    ]
    if components:
        lines.append(f"Components: {components}")
    if arch:
        lines.append(f"Architectures: {arch}")
    lines.append(f"Signed-By: {keyring}")
    return "\n".join(lines) + "\n"


@deploy("Signed apt repository")
def repository(repo: str, key_url: str, fingerprint: str, uris: str, suites: str,
               components: str, packages: list[str], dpkg: dict | None = None):
    """
    Add a signed repository (deb822 with Signed-By) and install packages from it.

    A flat repository is given as ``suites="/"`` (the path under ``uris``) and ``components=""``.

    The package lists are refreshed only when the key or the source changed or a package is
    missing, so a converged host runs nothing. ``dpkg``: the DpkgPackages fact, when read
    already.
    """
    keyring = f"{KEYRINGS}/{repo}.asc"
    if dpkg is None:
        dpkg = host.get_fact(DpkgPackages)
    finish_interrupted(dpkg)
    tools = missing(["ca-certificates", "curl", "gpg"], dpkg)  # to fetch the key and check it
    if tools:
        apt.update(name="Refresh package lists")
        apt.packages(name=f"Install {' '.join(tools)} (to fetch and check the key)",
                     packages=tools, no_recommends=True)
    # Decided while planning from one read of the key and one of the source, not with _if (so
    # that a dry run's plan is exact), and an operation only for what changes: an operation
    # called reads its facts again when the run executes, even when it changes nothing.
    key_changes = fingerprint not in host.get_fact(KeyFingerprints, path=keyring)
    if key_changes:
        key(name=f"Key of the {repo} repository", url=key_url, dest=keyring,
            fingerprint=fingerprint)
    source = deb822(uris, suites, components, keyring)
    path = f"{SOURCES}/{repo}.sources"
    source_changes = host.get_fact(TextFile, path=path) != {"text": source, "mode": "644"}
    if source_changes:
        files.put(name=f"Source of the {repo} repository", src=StringIO(source), dest=path,
                  mode="644")
    install(packages, refresh=key_changes or source_changes, dpkg=dpkg)
