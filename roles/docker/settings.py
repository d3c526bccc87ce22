"""Settings of the docker role: each one a user may set, with its default and what it does."""

import json

from roles.settings import Setting, fingerprint, one_of, unix_names, url

DOCKER_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"  # Docker Release (CE deb)
DOCKER_REPO = "https://download.docker.com/linux"

SETTINGS = [
    Setting("docker_source", "docker", one_of("docker", "distro"),
            "`docker`: Docker's own repository (docker-ce); `distro`: the distribution's docker.io"),
    Setting("docker_repo_url", DOCKER_REPO, url,
            "base URL of Docker's apt repository (`/ubuntu` or `/debian` is appended); a mirror's URL works"),
    Setting("docker_key_fingerprint", DOCKER_KEY_FINGERPRINT, fingerprint,
            "fingerprint the repository key (`<repo>/<distro>/gpg`) must have, or it is not trusted"),
    Setting("docker_users", [], unix_names,
            "existing users who join the `docker` group (root-equivalent on that host)"),
    Setting("docker_daemon_options",
            {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"}},
            lambda v: None if isinstance(v, dict) else "a mapping of daemon.json keys",
            "keys merged into /etc/docker/daemon.json; keys written by others (nvidia) are kept"),
]


# daemon.json keys that the packaged docker.service already gives as flags: dockerd refuses to
# start when a directive is both a flag and in the file (moby daemon/config/config.go,
# findConfigurationConflicts), so Docker would not come back after the role restarts it.
# docker-ce's unit: ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock
# Debian/Ubuntu docker.io's unit: ExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS
FLAG_KEYS = {
    "hosts": "docker.service starts dockerd with -H fd://",
    "containerd": "docker-ce's docker.service starts dockerd with --containerd",
}


def check(host, values) -> list[str]:
    """Rules of daemon.json: Docker's API never opened without TLS, no key the unit sets."""
    options = values["docker_daemon_options"]
    found = []
    try:
        json.dumps(options, allow_nan=False)
    except (TypeError, ValueError):
        found.append("docker_daemon_options: allowed is JSON data only (strings, numbers, "
                     "true/false, lists, mappings with string keys)")
        return found
    hosts = options.get("hosts") or []
    hosts = [hosts] if isinstance(hosts, str) else hosts
    tcp = [h for h in hosts if isinstance(h, str) and h.startswith("tcp://")]
    if tcp and options.get("tlsverify") is not True:
        found.append("docker_daemon_options: hosts with tcp:// and no tlsverify: true opens "
                     "Docker's API, root on this host, to anyone who reaches the port")
    for key, why in FLAG_KEYS.items():
        if key in options:
            found.append(f"docker_daemon_options: {key} cannot be set in daemon.json: {why}, "
                         "and dockerd refuses to start with a directive given twice")
    return found
