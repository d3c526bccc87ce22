"""
The wait for Docker to say the project's service is healthy, as shell run on the host
(``health_wait``, and ``wait_function`` that the upgrade's switch runs too), printing the
summary's status; the container's log lines with the login masked when it is not.
"""

from __future__ import annotations

import shlex

from roles.webui.render import PROJECT, STATE_DIR

# The container's log lines never show the login: each user:password line of the secret
# files f and g, and each password alone, becomes *** (literal matches: index, not a regular
# expression).
MASK_SECRET = (
    'BEGIN { fs[1] = f; fs[2] = g; for (x = 1; x <= 2; x++) if (fs[x] != "") '
    'while ((getline l < fs[x]) > 0) { '
    'n = index(l, ":"); if (n) { k++; s[k] = l; k++; s[k] = substr(l, n + 1) } } } '
    '{ for (i = 1; i <= k; i++) if (length(s[i])) while ((j = index($0, s[i])) > 0) '
    '$0 = substr($0, 1, j - 1) "***" substr($0, j + length(s[i])); print }'
)


def wait_function(directory: str, every: int = 5) -> str:
    """
    Shell: ``sdinfra_wait SERVICE TIMEOUT`` waits until Docker reports the project's
    ``SERVICE`` container healthy, at most TIMEOUT seconds, saying how it goes every ``every``
    seconds: 0 when healthy; 1 when it exited, restarts or turned unhealthy (``$why`` says
    which); 2 when Docker still says starting after TIMEOUT s (``$s``: the seconds waited).
    ``sdinfra_logs`` prints the last log lines of the container waited for, each behind
    roles.summary.LOG_LINES, the login masked. Seconds are counted on the clock
    (roles.shell.CENTISECONDS), not as loops: each loop's docker inspect takes a while too, and
    a 30 s bound took 33 s on a quiet test host, more on a loaded one.
    """
    from roles.shell import CENTISECONDS
    from roles.summary import LOG_LINES

    labels = f"--filter label=com.docker.compose.project={PROJECT}"
    inspect = ("'{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none"
               "{{end}} {{.RestartCount}} {{.State.ExitCode}}'")
    # The login now, and the one kept for a rollback (a login changed in the same run).
    secret = (f"f={shlex.quote(directory + '/secrets/webui-auth')} -v "
              f"g={shlex.quote(directory + '/' + STATE_DIR + '/previous/secrets/webui-auth')}")
    return "\n".join([
        CENTISECONDS,
        "sdinfra_wait() {",
        "  t0=$(sdinfra_cs); n=0",
        f"  svc=$1 limit=$2 s=0 why=; c=$(docker ps -aq {labels} "
        "--filter label=com.docker.compose.service=$svc | head -n 1)",
        '  [ -n "$c" ] || { why="no container for $svc"; return 1; }',
        "  while :; do",
        f"    set -- $(docker inspect -f {inspect} \"$c\" 2>/dev/null) none none 0 0",
        '    state=$1 health=$2 restarts=$3 code=$4',
        '    case "$state/$health" in',
        "      running/healthy|running/none) return 0 ;;",
        "      running/unhealthy) why=\"Docker's healthcheck (/internal/ping) fails\" ;;",
        '      restarting/*) why="restarting: exited with code $code, restarted $restarts times" ;;',
        '      exited/*|dead/*) why="exited with code $code" ;;',
        "    esac",
        # Running again after a restart: Docker has reset the exit code to 0 by then.
        '    [ -z "$why" ] && [ "$restarts" -gt 0 ] 2>/dev/null && why="restart loop: '
        '$([ "$code" = 0 ] || echo "exited with code $code, ")restarted $restarts times"',
        '    [ -n "$why" ] && return 1',
        '    [ $s -ge "$limit" ] && return 2',
        f"    [ $s -ge $n ] && {{ n=$((s - s % {every} + {every})); echo \"waiting for $svc to "
        "turn healthy: $state, $health, $s s\"; }",
        # A loaded host wakes late: a whole second slept from 29.4 s woke past 31 s, and the
        # summary said 31 of a 30 s bound. The last sleep is only what is left (coreutils'
        # sleep takes fractions; the 0 pads 5 cs to 0.05).
        "    l=$(( limit * 100 - $(sdinfra_cs) + t0 ))",
        '    if [ $l -ge 100 ]; then sleep 1; elif [ $l -gt 0 ]; then '
        '[ $l -lt 10 ] && l=0$l; sleep 0.$l; fi',
        "    s=$(( ($(sdinfra_cs) - t0) / 100 ))",
        "  done",
        "}",
        "sdinfra_logs() {",
        f"  docker logs --tail 15 \"$c\" 2>&1 | awk -v {secret} {shlex.quote(MASK_SECRET)} "
        f"| sed 's/^/{LOG_LINES}/' >&2",
        "}",
    ])


def said(status: str) -> str:
    """Shell words printing the summary's ``status`` (up to its first ``{``) behind HEALTH."""
    from roles.summary import HEALTH, STATUSES

    return shlex.quote(HEALTH + STATUSES[status].split("{")[0])


def health_wait(directory: str, service: str, timeout: int, every: int = 5) -> str:
    """
    Shell: wait until Docker reports the project's ``service`` container healthy, at most
    ``timeout`` seconds, saying how it goes every ``every`` seconds. Prints the summary's status
    behind roles.summary.HEALTH: ``healthy``, or ``starting (waited N s)`` when the bound is
    reached while Docker still says starting (exit 0: slow, not broken); or, exiting 1, when
    it exited, restarts or turned unhealthy, ``unhealthy: WHY`` and the container's last log
    lines (behind roles.summary.LOG_LINES, the login masked).
    """
    return "\n".join([
        wait_function(directory, every),
        f"sdinfra_wait {shlex.quote(service)} {int(timeout)}; r=$?",
        f"[ $r -eq 0 ] && {{ echo {said('healthy')}; exit 0; }}",
        f"[ $r -eq 2 ] && {{ echo {said('starting')}\"$s s)\"; exit 0; }}",
        f"sdinfra_logs; echo {said('unhealthy')}\"$why\" >&2; exit 1",
    ])
