"""Settings of the docker role: each one a user may set, with its default and what it does."""

from roles.settings import Setting, fingerprint, one_of, unix_names, url

DOCKER_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"  # Docker Release (CE deb)

SETTINGS = [
    Setting("docker_source", "docker", one_of("docker", "distro"),
            "`docker`: Docker's own repository (docker-ce); `distro`: the distribution's docker.io"),
    Setting("docker_repo_url", "https://download.docker.com/linux", url,
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
