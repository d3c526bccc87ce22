"""
Apt helpers shared by the roles: installing only what is missing, and signed repositories.

A dpkg run that was interrupted (a killed deploy, a lost connection, a power cut in the middle of
an install) leaves packages unpacked but not configured, and apt then refuses every install
("dpkg was interrupted, you must manually run 'dpkg --configure -a'"). ``install`` and
``repository`` finish such a run first, seen from the same command that lists the packages. A
run that is merely in progress (its process still holds dpkg's lock: unattended-upgrades for
minutes after a fresh Ubuntu host boots) looks the same in dpkg's database; it is left to finish.

Every apt and dpkg command the roles run waits first, up to ``apt_lock_timeout`` seconds, for
other package runs to release their locks (``locked``), and fails the host naming the process
that holds them when the time is up.

Every third-party repository is added the way the vendors document it today: a deb822
``.sources`` file whose ``Signed-By`` names a keyring in /etc/apt/keyrings, never ``apt-key``.
The key is fetched once and kept only when its fingerprint is the pinned one.
"""

from __future__ import annotations

import re
import shlex
from io import StringIO

from pyinfra import host, logger
from pyinfra.api import FactBase, deploy, operation
from pyinfra.operations import apt, files, server

from roles import parsers
from roles.hostfacts import HostFacts
from roles.parsers import MARKER
from roles.settings import Setting, integer, read
from roles.shell import CENTISECONDS, DPKG_WATCH, SHOW, SHOW_KEY, digest, kept

SETTINGS = [
    Setting("apt_lock_timeout", 600, integer(0, 86400),
            "seconds each apt and dpkg command waits for another package run (unattended-upgrades "
            "holds dpkg's lock for minutes after a fresh Ubuntu boots) before the host fails, "
            "naming the process that holds the lock"),
]

KEYRINGS = "/etc/apt/keyrings"
SOURCES = "/etc/apt/sources.list.d"
SOURCES_LIST = "/etc/apt/sources.list"
DPKG_UPDATES = "/var/lib/dpkg/updates"  # dpkg's journal: entries here = a run did not finish
INTERRUPTED = "sdinfra:dpkg-interrupted"
LOCKED = "sdinfra:dpkg-locked"
# The locks a package run holds, the frontend's first: its holder is the run (apt-get,
# unattended-upgr), while dpkg's own lock passes to each dpkg the frontend starts. apt takes
# each with fcntl(F_SETLK, F_WRLCK) on the whole file (apt-pkg/contrib/fileutl.cc GetLock(),
# apt 3.1.12 line 280), dpkg the same way (lib/dpkg/file.c file_lock()), so they show in
# /proc/locks as POSIX WRITE locks; flock(1) cannot see them.
LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock",
         "/var/cache/apt/archives/lock")

DPKG_LOCKS = LOCKS[:2]  # held while a dpkg run is in progress, between its dpkg calls too

# ``sdinfra_holder LOCK...`` prints "LOCK PID NAME" for the first lock some process holds, and
# fails when none is held. /proc/locks lines: "1: POSIX  ADVISORY  WRITE 1234 fe:00:2146316 0 EOF"
# (a waiter's has "->" after the number); matched on the inode, as an overlay's device number
# is not the one stat shows.
HOLDER = (
    "sdinfra_holder() { for f in \"$@\"; do "
    "[ -e \"$f\" ] || continue; i=$(stat -c %i -- \"$f\" 2>/dev/null) || continue; "
    "while read -r _ a _ _ p d _; do [ \"$a\" = '->' ] && continue; "
    "case \"$d\" in *:\"$i\") ;; *) continue ;; esac; "
    "c=; read -r c < \"/proc/$p/comm\" 2>/dev/null; echo \"$f $p ${c:-?}\"; return 0; "
    "done < /proc/locks; done; return 1; }"
)
# The second of a package's status letters (dpkg -l's, dpkg-query's ``${db:Status-Abbrev}``)
# for a package a dpkg run left half way: Half-installed, Unpacked, halF-configured,
# triggers-aWaited, triggers-pending.
HALF_DONE = "HUFWt"
# One line per package dpkg knows of (dpkg-query -W without a pattern skips the not-installed
# ones, as dpkg -l does: dpkg 1.21.22 src/query/main.c showpackages() line 592, listpackages()
# line 274; the same in 1.21.1, 1.22.6 and 1.19.7's src/querycmd.c): its status letters, name
# and version as dpkg -l prints them (lib/dpkg/pkg-format.c virt_status_abbrev(), lines
# 223-232: pkg_abbrev_want/_status/_eflag, as dpkg -l's pkg_array_list_item(); line 219:
# ``${binary:Package}`` is the name with pnaw_nonambig, as dpkg -l's; lib/dpkg/dump.c
# w_version(), line 78: the version with vdew_nonambig, as dpkg -l's), without dpkg -l's
# descriptions: "ii  curl 7.88.1-10".
# ``dpkg -l`` is dpkg running dpkg-query: two programs and 25 KB of descriptions for the shell
# to copy and the controller to read; this is one program.
LIST = "dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package} ${Version}\\n'"
# An installed package's line, as pyinfra's DebPackages reads dpkg -l (facts/deb.py ``regex``):
# desired Install or Hold, status installed, no error flag; the name without its
# architecture qualifier (libc6:i386 is libc6).
INSTALLED = re.compile(r"^[ih]i\s+([^\s:]+)(?::\S*)?\s+(\S+)")
FINISH_COMMAND = ("DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold "
                  "--configure -a")


def wait_command(timeout: int) -> str:
    """
    Shell defining ``sdinfra_wait``: it returns once no process holds any of LOCKS, setting
    ``sdinfra_left`` to the seconds of ``timeout`` left (for apt's own ``DPkg::Lock::Timeout``,
    which closes the gap until apt takes the lock); after ``timeout`` seconds it prints which
    process holds which lock and fails.
    """
    message = (f"after {timeout} s (apt_lock_timeout): another package run is going on; let it "
               "finish and run the deploy again, or raise apt_lock_timeout")
    return (
        f"{HOLDER}; {CENTISECONDS}; sdinfra_wait() {{ s=$(sdinfra_cs); w=; "
        f"while h=$(sdinfra_holder {' '.join(LOCKS)}); do "
        "f=${h%% *}; r=${h#* }; p=${r%% *}; c=${r#* }; "
        f"if [ $(( $(sdinfra_cs) - s )) -ge {timeout * 100} ]; then "
        f"echo \"E: $f is still held by process $p ($c) {message}\" >&2; return 1; fi; "
        f"[ -n \"$w\" ] || {{ echo \"waiting up to {timeout} s (apt_lock_timeout): process $p "
        "($c) holds $f\" >&2; w=1; }; sleep 1; done; "
        f"sdinfra_left=$(( {timeout} - ( $(sdinfra_cs) - s ) / 100 )); "
        "[ $sdinfra_left -ge 0 ] || sdinfra_left=0; }"
    )


# apt (>= 1.9.11, every release sdinfra supports: Ubuntu 20.04 has 2.0) waits this long for
# dpkg's frontend lock and dpkg's lock itself (apt-pkg/deb/debsystem.cc GetLockMaybeWait(),
# DPkg::Lock::Timeout, apt 3.1.12 lines 80-134), but not for the lists lock of `apt-get update`
# nor the archives lock (apt-pkg/acquire.cc pkgAcquire::GetLock(), line 180), and dpkg never
# waits: hence ``sdinfra_wait`` first, for all four.
APT_WAIT = '-o DPkg::Lock::Timeout="$sdinfra_left"'


# For the apt-get calls inside a script (amdgpu-install): apt reads the file APT_CONFIG names
# before apt.conf.d (apt-pkg/init.cc pkgInitConfig(), apt 3.1.12 line 218), so every apt-get
# the script runs waits as ours do.
APT_CONFIG_WAIT = (
    "c=$(mktemp) && trap 'rm -f \"$c\"' EXIT && "
    "printf 'DPkg::Lock::Timeout \"%s\";\\n' \"$sdinfra_left\" > \"$c\" && export APT_CONFIG=\"$c\""
)


def lock_timeout() -> int:
    return read(host, SETTINGS)["apt_lock_timeout"]


def locked(command: str, timeout: int | None = None) -> str:
    """``command`` (one shell command line) run once no other package run holds dpkg's or
    apt's locks; the host fails naming the holder after ``timeout`` (apt_lock_timeout) s."""
    timeout = lock_timeout() if timeout is None else timeout
    return f"{wait_command(timeout)}; sdinfra_wait || exit 1; {command}"


class DpkgPackages(FactBase):
    """
    The installed packages (as pyinfra's ``DebPackages`` reads ``dpkg -l``: fully installed
    ones only, name -> versions); whether the last dpkg run was interrupted: its journal in
    /var/lib/dpkg/updates is not empty, or a package is left half way (status U, F, H, W or
    t), and no process holds dpkg's locks; and, when one does, that run in progress
    (``running``: which process holds which lock). One command, one dpkg-query (``LIST``); the
    locks are looked at only when dpkg's state looks unfinished.

    .. code:: python

        {"packages": {"curl": {"7.88.1-10+deb12u5"}}, "interrupted": False, "running": None}
    """

    @staticmethod
    def default():
        return {"packages": {}, "interrupted": False, "running": None}

    def requires_command(self):
        return "dpkg-query"

    def command(self):
        # Journal entries are named by number, as apt counts them (not dpkg's tmp.i); looked
        # for by the shell itself, no process. A half-way package is a line that starts with
        # its status letters: one match of the shell over the whole listing (its first line
        # too: the newline put before it).
        # The listing is kept (roles.shell.kept) while dpkg's status and journal stay as they
        # were when it showed no run left unfinished: a converged host pays a cat.
        miss = (f"l=$({LIST}); printf '%s\\n' \"$l\"; u=; "
                f"for f in {DPKG_UPDATES}/*; do case \"${{f##*/}}\" in "
                f"''|*[!0-9]*) ;; *) echo {INTERRUPTED}; u=1; break ;; esac; done; "
                "n=$(printf '\\nx'); n=${n%x}; "
                f"case \"$n$l\" in *\"$n\"[uihrp][{HALF_DONE}][' 'R]*) u=1 ;; esac; "
                "[ -z \"$u\" ] && [ -n \"$kf\" ] && printf '%s\\n' \"$kk\" \"$l\" > \"$kf\" "
                "2>/dev/null && kw=1; "
                f"if [ -n \"$u\" ]; then {HOLDER}; h=$(sdinfra_holder {' '.join(DPKG_LOCKS)}) "
                f"&& echo \"{LOCKED} $h\"; "
                "fi; true")
        return kept("dpkg-list", f"sdinfra-dpkg-list {digest(miss)} $PATH", DPKG_WATCH, miss)

    def process(self, output):
        lines = list(output)
        half = [line for line in lines
                if len(line) > 2 and line[0] in "uihrp" and line[1] in HALF_DONE
                and line[2] in " R"]
        held = next((line.strip().split(" ", 3)[1:] for line in lines
                     if line.startswith(f"{LOCKED} ")), None)
        running = None
        if held and len(held) == 3:
            running = {"lock": held[0], "pid": held[1], "name": held[2]}
        unfinished = INTERRUPTED in (line.strip() for line in lines) or bool(half)
        packages: dict[str, set[str]] = {}
        for found in filter(None, map(INSTALLED.match, lines)):
            packages.setdefault(found.group(1), set()).add(found.group(2))
        return {"packages": packages, "interrupted": unfinished and running is None,
                "running": running}


def missing(packages: list[str], dpkg: dict | None = None) -> list[str]:
    """The packages not installed on the current host (``dpkg``: a DpkgPackages fact read
    already; pyinfra caches no fact, so each read is one more remote command)."""
    installed = (dpkg if dpkg is not None else host.get_fact(DpkgPackages))["packages"]
    return [name for name in packages if name not in installed]


def finish_interrupted(dpkg: dict | None = None, known: HostFacts | None = None) -> None:
    """
    ``dpkg --configure -a`` when the host's last dpkg run was interrupted, once per host and
    run (``known``: the host's record, which says whether this run did it already); nothing
    otherwise, nor while a run is in progress (its process holds dpkg's lock: the apt commands
    after this wait for it). Call it before anything that runs apt-get. ``dpkg``: the
    DpkgPackages fact, when read already.
    """
    known = known if known is not None else HostFacts(host)
    dpkg = dpkg if dpkg is not None else host.get_fact(DpkgPackages)
    running = dpkg.get("running")
    if running and not known.dpkg_finished:
        known.dpkg_finished = True
        logger.warning(f"{host.print_prefix}a package run is in progress (process "
                       f"{running['pid']} ({running['name']}) holds {running['lock']}): "
                       f"apt waits for it, up to apt_lock_timeout = {lock_timeout()} s")
    if dpkg["interrupted"] and not known.dpkg_finished:
        known.dpkg_finished = True
        server.shell(name="Finish the interrupted dpkg run (dpkg --configure -a)",
                     commands=[locked(FINISH_COMMAND)])


@operation(is_idempotent=False)
def update():
    """
    ``apt-get update`` once no other package run holds apt's or dpkg's locks (pyinfra's
    ``apt.update`` takes no apt options and does not wait).

    .. code:: python

        update(name="Refresh package lists")

    On a host with a fleet cache (roles.cache), the controller first asks the host whether the
    cache answers, and warns when it does not: apt then goes direct (its proxy script says so
    on the host, where pyinfra does not show it). Only when apt runs: a converged host is
    asked nothing more.
    """
    from roles import cache

    yield from cache.proxy_warning()
    yield locked(f"DEBIAN_FRONTEND=noninteractive apt-get {APT_WAIT} update")


@operation()
def ensure_packages(packages: list[str], present: bool = True, no_recommends: bool = True):
    """
    pyinfra's ``apt.packages``, each of its apt-get commands run once no other package run
    holds the locks (``locked``), with apt's own wait (``DPkg::Lock::Timeout``) for the rest.

    .. code:: python

        ensure_packages(name="Install curl", packages=["curl"])
    """
    timeout = lock_timeout()
    for command in apt.packages._inner(packages=packages, present=present,
                                       no_recommends=no_recommends,
                                       extra_install_args=APT_WAIT,
                                       extra_uninstall_args=APT_WAIT):
        yield locked(str(command), timeout) if isinstance(command, str) else command


@deploy("Install missing packages")
def install(packages: list[str], refresh: bool = False, dpkg: dict | None = None,
            known: HostFacts | None = None):
    """
    Install the packages that are not installed yet, refreshing the package lists first.

    Nothing is run, not even ``apt-get update``, when every package is already there: a
    converged host costs one dpkg-query (``DpkgPackages``). An interrupted dpkg run is finished
    first (``finish_interrupted``).

    + packages: Debian package names
    + refresh: also run ``apt-get update`` when nothing is missing (a repository was just added)
    + dpkg: the DpkgPackages fact when the caller read it already (else it is read here)
    + known: the host's record (roles.hostfacts), so that dpkg is finished once per run
    """
    if dpkg is None:
        dpkg = host.get_fact(DpkgPackages)  # one read for both
    finish_interrupted(dpkg, known)
    todo = missing(packages, dpkg)
    if todo or refresh:
        update(name="Refresh package lists")
    if todo:
        ensure_packages(name=f"Install {' '.join(todo)}", packages=todo)


class KeyFingerprints(FactBase):
    """
    Fingerprints of the primary keys in an OpenPGP key file, empty when the file is missing:
    the file as the shell shows it (roles.shell.SHOW_KEY), its fingerprints worked out here
    (roles.parsers.key_fingerprints), not by gpg on the host.

    .. code:: python

        ["9DC858229FC7DD38854AE2D88D81803C0EBFCD88"]
    """

    default = list

    def command(self, path):
        return f"{SHOW_KEY}; show_key {shlex.quote(path)}; true"

    def process(self, output):
        return parsers.key_fingerprints(output)


class TextFile(FactBase):
    """
    A text file's content and mode in one command, None when it is no regular file.

    .. code:: python

        {"text": "Types: deb\\n...", "mode": "644"}
    """

    SECTIONS = ("text-file", "mode", "text")

    def command(self, path):
        quoted = shlex.quote(path)
        # sed adds the newline a file may lack, so that the next marker starts a line.
        return (f"echo '{MARKER}text-file'; [ -f {quoted} ] && {{ echo '{MARKER}mode'; "
                f"stat -c %a -- {quoted}; echo '{MARKER}text'; sed -e '$a\\' -- {quoted}; }}; "
                "true")

    def process(self, output):
        found = parsers.sections(output, self.SECTIONS)
        mode = [line.strip() for line in found.get("mode", []) if line.strip()]
        if "text" not in found or not mode:
            return None
        return {"text": "".join(f"{line}\n" for line in found["text"]), "mode": mode[0]}


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


class OtherSources(FactBase):
    """
    The apt source files other than ``path`` (``/etc/apt/sources.list``, and ``.list`` and
    ``.sources`` files in /etc/apt/sources.list.d) that name any of ``uris`` (URIs without their
    scheme, e.g. ``download.docker.com/linux``), each with its text; ``path`` itself as
    ``TextFile`` reads it. One command, one grep.

    .. code:: python

        {"source": {"text": "Types: deb\\n...", "mode": "644"},
         "others": {"/etc/apt/sources.list.d/docker.list": "deb [signed-by=...] https://..."}}
    """

    @staticmethod
    def default():
        return {"source": None, "others": {}, "mirror": None}

    def command(self, path, uris, mirror=""):
        patterns = " ".join(f"-e {shlex.quote(uri)}" for uri in uris.split())
        # Each other file: a part of its own whose first line is its path. ``mirror``: the
        # repository's mirror list (roles.cache), shown after them when it is there.
        shown = (f"; [ -f {shlex.quote(mirror)} ] && {{ echo '{MARKER}mirror-list'; "
                 f"show {shlex.quote(mirror)}; }}") if mirror else ""
        return (f"{TextFile().command(path)}; {SHOW}; echo '{MARKER}other-sources'; "
                f"for f in $(grep -lsF {patterns} -- {SOURCES_LIST} {SOURCES}/*.list "
                f"{SOURCES}/*.sources); do [ \"$f\" = {shlex.quote(path)} ] || "
                f"{{ echo '{MARKER}other-source'; echo \"$f\"; show \"$f\"; }}; done{shown}; true")

    def process(self, output):
        found = parsers.parts(output, (*TextFile.SECTIONS, "other-sources", "other-source",
                                       "mirror-list"))
        cut = next((i for i, (name, _) in enumerate(found) if name == "other-sources"),
                   len(found))
        source = TextFile().process(
            [line for name, lines in found[:cut] for line in [f"{MARKER}{name}", *lines]])
        others = {lines[0].strip(): "".join(f"{line}\n" for line in lines[1:])
                  for name, lines in found[cut:] if name == "other-source" and lines}
        mirror = next(("".join(f"{line}\n" for line in lines)
                       for name, lines in found[cut:] if name == "mirror-list"), None)
        return {"source": source, "others": others, "mirror": mirror}


def _names(line: str, uris: tuple[str, ...]) -> bool:
    """Whether an active source line names one of ``uris`` (scheme-less, http or https)."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return False
    return any(f"://{uri.rstrip('/')}/" in f"{word.rstrip('/')}/" for word in stripped.split()
               for uri in uris)


def without(path: str, text: str, uris: tuple[str, ...], replacement: str) -> str | None:
    """
    ``text`` of a source file without its entries for ``uris``: one-line entries (``.list``,
    sources.list) commented out, deb822 stanzas (``.sources``) left out; None when no entry of
    any other repository is left (the file goes, unless it is sources.list itself).
    """
    if path.endswith(".sources"):
        stanzas = [block for block in text.split("\n\n") if block.strip()]
        kept = [block for block in stanzas
                if not any(line.lower().startswith("uris:") and _names(line[5:], uris)
                           for line in block.splitlines())]
        active = [block for block in kept
                  if any(line.lower().startswith("types:") for line in block.splitlines())]
        return "\n\n".join(block.strip("\n") for block in kept) + "\n" if active else None
    lines, active = [], False
    for line in text.splitlines():
        if _names(line, uris):
            lines.append(f"# replaced by {replacement} (sdinfra): {line}")
        else:
            lines.append(line)
            active = active or bool(line.strip() and not line.strip().startswith("#"))
    if not active and path != SOURCES_LIST:
        return None
    return "\n".join(lines) + "\n"


@deploy("Signed apt repository")
def repository(repo: str, key_url: str, fingerprint: str, uris: str, suites: str,
               components: str, packages: list[str], dpkg: dict | None = None,
               replaces: tuple[str, ...] = (), known: HostFacts | None = None):
    """
    Add a signed repository (deb822 with Signed-By) and install packages from it.

    A flat repository is given as ``suites="/"`` (the path under ``uris``) and ``components=""``.
    ``replaces``: URIs without their scheme (``download.docker.com/linux``) whose entries in
    other source files this source replaces: a vendor's older guide left a ``.list`` with
    another ``signed-by`` keyring, and apt refuses two Signed-By values for one repository
    ("Conflicting values set for option Signed-By") on every update.

    The package lists are refreshed only when the key or the sources changed or a package is
    missing, so a converged host runs nothing. ``dpkg``: the DpkgPackages fact, when read
    already; ``known``: the host's record (roles.hostfacts), so that dpkg is finished once.
    """
    from roles import cache

    keyring = f"{KEYRINGS}/{repo}.asc"
    if dpkg is None:
        dpkg = host.get_fact(DpkgPackages)
    finish_interrupted(dpkg, known)
    # With a fleet cache, a repository on https is read through a mirror list: the cache
    # first, the repository itself when the cache fails (roles.cache.mirror_list). The same
    # Signed-By keyring checks what either serves.
    mirrors = cache.mirror_list(cache.values_of(), uris)
    mirror = cache.mirror_path(repo) if mirrors else ""
    source = deb822(f"mirror+file:{mirror}" if mirrors else uris, suites, components, keyring)
    path = f"{SOURCES}/{repo}.sources"
    # Decided while planning from one read of the key and one of the sources, not with _if (so
    # that a dry run's plan is exact), and an operation only for what changes: an operation
    # called reads its facts again when the run executes, even when it changes nothing.
    sources = host.get_fact(OtherSources, path=path,
                            uris=" ".join(dict.fromkeys([uris.split("://", 1)[-1], *replaces])),
                            **({"mirror": mirror} if mirror else {}))
    # The older entries go first: the update that brings curl and gpg reads them too.
    others_change = False
    for other, text in sources["others"].items():
        kept = without(other, text, (uris.split("://", 1)[-1], *replaces), path)
        others_change = others_change or kept != text
        if kept is None:
            server.shell(name=f"Remove {other} (replaced by {path})",
                         commands=[f"rm -f -- {shlex.quote(other)}"])
        elif kept != text:
            files.put(name=f"{other} without its {repo} entries (replaced by {path})",
                      src=StringIO(kept), dest=other, mode="644")
    tools = missing(["ca-certificates", "curl", "gpg"], dpkg)  # to fetch the key and check it
    if tools:
        update(name="Refresh package lists")
        ensure_packages(name=f"Install {' '.join(tools)} (to fetch and check the key)",
                        packages=tools)
    key_changes = fingerprint not in host.get_fact(KeyFingerprints, path=keyring)
    if key_changes:
        key(name=f"Key of the {repo} repository", url=key_url, dest=keyring,
            fingerprint=fingerprint)
    source_changes = sources["source"] != {"text": source, "mode": "644"}
    if mirrors and sources["mirror"] != mirrors:
        # Before the source that names it: apt must never read a source without its list.
        files.put(name=f"Mirror list of the {repo} repository (the fleet cache first)",
                  src=StringIO(mirrors), dest=mirror, mode="644")
        source_changes = True
    if source_changes:
        files.put(name=f"Source of the {repo} repository", src=StringIO(source), dest=path,
                  mode="644")
    install(packages, refresh=key_changes or source_changes or others_change, dpkg=dpkg,
            known=known)
