"""Shell snippets that more than one role's facts use, with the parsers of what they print."""

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


# ``$R``: the rocminfo to run, empty when there is none. AMD's under /opt/rocm first: it is the
# release the rocm role installs and verifies (amdgpu-install puts it there, and ROCm 5.x adds
# nothing to PATH); a distribution's on PATH (Debian 12's /usr/bin/rocminfo, rocm_source:
# distro) where AMD's is not. The preflight and the rocm role locate it alike, so the rocm role
# can reuse the preflight's answer as the answer of the same program.
ROCMINFO = ('R=$(command -v rocminfo 2>/dev/null || true); '
            '[ -x /opt/rocm/bin/rocminfo ] && R=/opt/rocm/bin/rocminfo')

# ``sdinfra_cs`` prints the time since boot in hundredths of a second, for the apt lock wait and
# the web UI's start wait. Whole seconds (date +%s) made a wait of N s end after N-1 s when it
# began late in a second. The 1 before the fraction keeps "05" from reading as octal.
CENTISECONDS = ("sdinfra_cs() { read -r u _ < /proc/uptime; "
                "echo $(( ${u%.*} * 100 + 1${u#*.} - 100 )); }")
