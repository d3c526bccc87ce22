"""Settings of the nvidia role: each one a user may set, with its default and what it does."""

from roles.settings import Setting, boolean, fingerprint, image_reference, matches, url

# "NVIDIA CORPORATION (Open Source Projects) <cudatools@nvidia.com>", the key at
# https://nvidia.github.io/libnvidia-container/gpgkey that signs the toolkit's repository.
NVIDIA_KEY_FINGERPRINT = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"
NVIDIA_REPO_URL = "https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH)"
NVIDIA_KEY_URL = "https://nvidia.github.io/libnvidia-container/gpgkey"

SETTINGS = [
    Setting("nvidia_driver_package", "",
            matches(r"[a-z0-9][a-z0-9+.-]*", "a Debian package name", optional=True),
            "driver package installed when `nvidia-smi` does not answer (e.g. `nvidia-driver-535` "
            "on Ubuntu, `nvidia-driver` on Debian with non-free); empty: such a host stops the "
            "run, naming this setting"),
    Setting("nvidia_repo_url", NVIDIA_REPO_URL, url,
            "the NVIDIA Container Toolkit's flat apt repository; `$(ARCH)` becomes the host's "
            "architecture (amd64, arm64); a mirror's URL works"),
    Setting("nvidia_key_url", NVIDIA_KEY_URL, url, "where the repository's signing key is fetched"),
    Setting("nvidia_key_fingerprint", NVIDIA_KEY_FINGERPRINT, fingerprint,
            "fingerprint the signing key must have, or it is not trusted"),
    Setting("nvidia_allow_reboot", False, boolean,
            "reboot a host whose driver was just installed, then go on; false: the run ends "
            "naming the hosts to reboot"),
    Setting("nvidia_verify", True, boolean,
            "after a change, run `nvidia-smi -L` in a container started with `--gpus all` and "
            "fail the host, saying what is missing, if it sees no GPU"),
    Setting("nvidia_verify_image", "ubuntu:22.04",
            image_reference,
            "image of that check (the toolkit mounts nvidia-smi into it); pulled when missing"),
]
