"""Shell snippets that more than one role's facts use, with the parsers of what they print."""

import os
import shlex

# ``show PATH``: the file when it is readable, ending in a newline it may lack (nvidia-ctk
# writes none) so that the next section's marker starts a line of its own. Shell builtins only:
# a sed or cat per file is a process each, about a millisecond of the host's CPU on every run.
SHOW = ('show() { [ -r "$1" ] || return 0; while IFS= read -r l || [ -n "$l" ]; do '
        "printf '%s\\n' \"$l\"; done < \"$1\"; }")

# ``show_key PATH``: an OpenPGP key file as roles.parsers.key_fingerprints reads it, nothing when
# there is none. An armored key (what apt's keyrings here are: Docker's and NVIDIA's .asc) is
# text, shown by the shell itself; a binary one (gpg --export without --armor: its first line
# has bytes that are no printable text; an armored one with CR line ends too) in base64, the
# one case that costs a process. The fingerprints are worked out on the controller: gpg
# --show-keys piped to awk cost a container host 3.7 ms of CPU on every run.
SHOW_KEY = (f"{SHOW}; show_key() {{ [ -r \"$1\" ] || return 0; k=; IFS= read -r k < \"$1\"; "
            "case \"$k\" in *[![:print:]]*) base64 < \"$1\" ;; *) show \"$1\" ;; esac; }")

DOCKER_PID = "/var/run/docker.pid"  # dockerd's --pidfile default
# True when a live dockerd owns the pid file, seen without a process (docker or systemctl
# cost the host tens of milliseconds). dockerd writes its pid without a final newline: read
# fails, but sets p.
DOCKERD_RUNNING = (
    f"p=; c=; {{ {{ read -r p || [ -n \"$p\" ]; }} < {DOCKER_PID} "
    "&& read -r c < /proc/$p/comm; } 2>/dev/null && [ \"$c\" = dockerd ]"
)

# ``dpkg-query -W`` of named packages, printing of each the fields of ``dpkg -s`` that
# roles.parsers.dpkg_status reads, as dpkg -s prints them: ``${Status}`` and ``${Version}`` are
# dpkg -s's Status and Version fields (both write a package's fields with lib/dpkg/dump.c's
# writers: w_status, w_version). ``dpkg -s`` is dpkg starting dpkg-query -s: two programs and
# every field of each package (3.5 ms of a container host's CPU); this is one, its lines only.
# An unknown package is a message on stderr for either, dropped.
DPKG_FIELDS = ("dpkg-query -W -f='Package: ${Package}\\nStatus: ${Status}\\n"
               "Architecture: ${Architecture}\\nVersion: ${Version}\\n\\n'")


# The GPU device groups as getent prints them (NAME:PASSWORD:GID:MEMBERS); ``group_ids``
# reads its lines.
GPU_GROUPS = "getent group video render"


def group_ids(lines) -> dict[str, str]:
    """``GPU_GROUPS``'s lines (others are skipped): ``{"video": "44", "render": "110"}``."""
    found = {}
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) > 2 and fields[0] in ("video", "render"):
            found[fields[0]] = fields[2]
    return found


# ``$R``: the rocminfo to run, empty when there is none (found by the builtin command -v, no
# subshell). AMD's under /opt/rocm first: it is the release the rocm role installs and verifies
# (amdgpu-install puts it there, and ROCm 5.x adds nothing to PATH); a distribution's on PATH
# (Debian 12's /usr/bin/rocminfo, rocm_source: distro) where AMD's is not. The preflight and the
# rocm role locate it alike, so the rocm role can reuse the preflight's answer as the answer of
# the same program.
ROCMINFO = ('R=; command -v rocminfo >/dev/null 2>&1 && R=rocminfo; '
            '[ -x /opt/rocm/bin/rocminfo ] && R=/opt/rocm/bin/rocminfo')

# ``sdinfra_cs`` prints the time since boot in hundredths of a second, for the apt lock wait and
# the web UI's start wait. Whole seconds (date +%s) made a wait of N s end after N-1 s when it
# began late in a second. The 1 before the fraction keeps "05" from reading as octal.
CENTISECONDS = ("sdinfra_cs() { read -r u _ < /proc/uptime; "
                "echo $(( ${u%.*} * 100 + 1${u#*.} - 100 )); }")


# Where answers that only a boot or a change of the host can change are kept between runs
# (``kept``): a tmpfs, emptied at each boot, that only root can write. SDINFRA_KEEP_DIR set
# empty on the controller keeps nothing: the unit tests do, since their stand-in tools answer
# differently from one run to the next, and their deploys of @local must not write /run.
KEEP_DIR = os.environ.get("SDINFRA_KEEP_DIR", "/run/sdinfra") or None

# What changes dpkg-query's answers: dpkg's status file (rewritten by each run) and its journal
# (an entry for each package a run that has not finished yet has changed).
DPKG_WATCH = ("/var/lib/dpkg/status", "/var/lib/dpkg/updates")


def kept(name: str, key: str, watch: tuple[str, ...], miss: str) -> str:
    """
    Shell that prints an answer kept in KEEP_DIR/``name`` when it is fresh, else runs ``miss``.

    Fresh: the kept file's first line is ``key`` (shell words, expanded as in double quotes; give
    it what the answer depends on, such as the text of the command that made it), and none of
    ``watch`` is newer than the file (the shell's -nt: no process; a path that is not there is
    never newer). The file's time is that of a stamp made 2 s before ``miss`` ran, so a change
    while it ran is newer still (Ubuntu 20.04's dash compares whole seconds): it is asked again.

    ``miss`` prints the answer. Where it may be kept (the owner of KEEP_DIR's parent runs this:
    root, for /run), ``$kf`` names a new file: ``miss`` writes ``$kk`` (the key) and the answer
    there, and sets kw=1 when the file was written whole and the answer may be kept (not when
    a tool failed). Only files this user owns, in a folder only it can write, are read: nobody
    else's answers are taken for the host's. The new file and the stamp are named for this
    shell's pid: two runs on one host at once each write their own and rename it whole. Off
    (``miss`` alone) when KEEP_DIR is None.
    """
    if KEEP_DIR is None:
        return f"kf=; kk=; {miss}"
    folder = KEEP_DIR.rstrip("/")
    file = shlex.quote(f"{folder}/{name}")
    parent = shlex.quote(folder.rsplit("/", 1)[0] or "/")
    folder = shlex.quote(folder)
    stale = " || ".join(f"[ {shlex.quote(path)} -nt {file} ]" for path in watch) or "false"
    safe = f"[ -O {parent} ] && [ -O {folder} ] && ! [ -L {folder} ]"
    return "; ".join([
        f'kk="{key}"; kh=; kf=; kw=',
        f"if {safe} && [ -O {file} ] && ! {{ {stale}; }}; then "
        f'{{ IFS= read -r h && [ "$h" = "$kk" ] && kh=1 && cat; }} < {file}; fi',
        "if [ -z \"$kh\" ]; then "
        f"if [ -O {parent} ] && {{ [ -d {folder} ] || mkdir -m 0700 {folder}; }} 2>/dev/null "
        f"&& {safe} && touch -d '-2 seconds' {file}.t.$$ 2>/dev/null; then "
        f"kf={file}.new.$$; fi; "
        f"{miss}; "
        f"if [ -n \"$kf\" ]; then [ -n \"$kw\" ] && touch -r {file}.t.$$ \"$kf\" && "
        f"mv -f \"$kf\" {file}; rm -f {file}.t.$$ \"$kf\"; fi; fi",
    ])


def kept_dpkg(query: str) -> str:
    """
    Shell: the output of ``query`` (a dpkg-query of named packages, such as DPKG_FIELDS's; its
    errors dropped), kept (``kept``) until dpkg's status changes. dpkg-query, which reads all of
    dpkg's status file, cost a container host ~4 ms of CPU on every run, a real one with its
    ~2000 packages more; a converged host pays a cat. dpkg-query exits 1 for a package it does
    not know and 2 when it could not write: its answer is kept unless 2.
    """
    miss = ("r=2; [ -n \"$kf\" ] && { { echo \"$kk\"; " + query + "; } > \"$kf\" 2>/dev/null; "
            "r=$?; }; if [ $r -le 1 ]; then kw=1; { read -r h; cat; } < \"$kf\"; "
            f"else {query} 2>/dev/null; fi")
    name = f"dpkg-{digest(query)}"
    return kept(name, f"sdinfra-{name} $PATH", DPKG_WATCH, miss)


def digest(text: str) -> str:
    """A short name for ``text``: a kept answer's key says which command made it."""
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]
