"""
``python -m roles.rocm checksums RELEASE``: download the amdgpu-install packages of a ROCm release
on your own machine and print the setting that pins their sha256s.

    $ python -m roles.rocm checksums 5.3
    # amdgpu-install 5.3.50300-1, downloaded and hashed just now:
    #   focal  https://repo.radeon.com/amdgpu-install/5.3/ubuntu/focal/amdgpu-install_5.3.50300-1_all.deb
    #   jammy  https://repo.radeon.com/amdgpu-install/5.3/ubuntu/jammy/amdgpu-install_5.3.50300-1_all.deb
    # Paste into group_data/all.py (every host), after checking them as you see fit:
    rocm_installer_sha256s = {
        "5.3/focal": "...",
        "5.3/jammy": "...",
    }

``--repo`` points at a mirror (the ``rocm_repo_url`` setting), ``--url`` takes the
``rocm_installer_url`` template, ``--format yaml`` prints YAML for YAML inventories.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.error
import urllib.request

from roles.rocm import releases
from roles.rocm.settings import INSTALLER_URL, VENDOR_REPO

AR_MAGIC = b"!<arch>\n"


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def is_deb(data: bytes) -> bool:
    """A Debian package is an ar archive whose first member is ``debian-binary``."""
    return data.startswith(AR_MAGIC) and data[8:24].rstrip(b" /") == b"debian-binary"


def checksums(release: str, codenames: list[str], repo: str, template: str,
              version: str) -> list[tuple[str, str, str]]:
    """[(codename, url, sha256)]; raises SystemExit naming the URL on any failure."""
    found = []
    for codename in codenames:
        url = releases.installer_url(template, repo, release, codename, version)
        try:
            data = download(url)
        except (urllib.error.URLError, OSError) as error:
            raise SystemExit(f"could not download {url}: {error}") from None
        if not is_deb(data):
            raise SystemExit(f"{url} is not a Debian package ({len(data)} bytes, starting "
                             f"{data[:32]!r}): not hashing it")
        found.append((codename, url, hashlib.sha256(data).hexdigest()))
    return found


def render(release: str, version: str, found: list[tuple[str, str, str]], form: str) -> str:
    lines = [f"# amdgpu-install {version}, downloaded and hashed just now:"]
    lines += [f"#   {codename}  {url}" for codename, url, _ in found]
    if form == "yaml":
        lines.append("# Paste into your YAML inventory's data for every host:")
        lines.append("rocm_installer_sha256s:")
        lines += [f'  "{releases.checksum_key(release, c)}": "{digest}"'
                  for c, _, digest in found]
    else:
        lines.append("# Paste into group_data/all.py (every host), after checking them as you "
                     "see fit:")
        lines.append("rocm_installer_sha256s = {")
        lines += [f'    "{releases.checksum_key(release, c)}": "{digest}",'
                  for c, _, digest in found]
        lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m roles.rocm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sums = commands.add_parser("checksums", help="print the sha256s of a release's installers")
    sums.add_argument("release", help="ROCm release, as in rocm_release: 5.3, 5.4.3")
    sums.add_argument("--codenames", nargs="+",
                      help="Ubuntu codenames (default: those AMD supports for the release)")
    sums.add_argument("--repo", default=VENDOR_REPO, help="base URL, as in rocm_repo_url")
    sums.add_argument("--url", default=INSTALLER_URL,
                      help="URL template, as in rocm_installer_url")
    sums.add_argument("--installer-version", default="",
                      help="amdgpu-install version (default: derived from the release)")
    sums.add_argument("--format", choices=("python", "yaml"), default="python")
    args = parser.parse_args(argv)

    release = releases.parse_release(args.release)
    if release is None:
        parser.error(f"not a ROCm release: {args.release!r} (like 5.3 or 5.4.3)")
    version = args.installer_version or releases.installer_version(args.release)
    codenames = args.codenames or list(releases.supported_codenames(release))
    if not codenames:
        parser.error(f"no Ubuntu release is known for ROCm {args.release}: give --codenames")
    found = checksums(args.release, codenames, args.repo, args.url, version)
    sys.stdout.write(render(args.release, version, found, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
