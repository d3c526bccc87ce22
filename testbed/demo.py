"""
`make demo`: sdinfra's main job on a throwaway local fleet.

    python -m testbed.demo up      # boot 3 Debian 12 hosts, run deploy/site.py over SSH
    python -m testbed.demo down    # tear the fleet down

The hosts are real systemd machines (systemd-nspawn) with real SSH, apt and Docker; the deploy
is the one you would run on your own hosts. What AMD, NVIDIA and Docker Hub would serve cannot be
downloaded here, so local stand-ins are served from this machine instead (the demo says which).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from testbed import standins
from testbed.fleet import Fleet, FleetError
from testbed.hosts import NAMES, PYINFRA, REPO, prepare

WORKDIR = REPO / ".fleet" / "demo"

STAND_INS = """\
Local stand-ins in this demo (everything else is the real deploy):
  - rocm1: amdgpu-install .deb built here (its sha256 pinned like AMD's would be), with a
    rocminfo that reports an RX 460 (gfx803); /dev/kfd and /dev/dri are copies of /dev/null.
  - cuda1: an NVIDIA driver package whose nvidia-smi reports a GTX 950M, and the NVIDIA
    Container Toolkit from an apt repository signed with a throwaway key.
  - every host: Docker is Debian's docker.io (Docker's own repository is unreachable here);
    the web UI is a small stand-in image loaded from an archive, and the model a 4 KB file.
"""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def up() -> int:
    if os.geteuid() != 0:
        say("the demo fleet needs root (network namespaces, systemd-nspawn): run `make demo`")
        return 2
    say("--> sdinfra demo: booting a throwaway fleet of 3 Debian 12 hosts on this machine")
    built = standins.build_all(WORKDIR.parent / "standins")
    fleet = Fleet(WORKDIR, NAMES, down_at_exit=False)
    fleet.up(replace=True)
    with standins.serve(built.root, [h.gateway for h in fleet.hosts]) as server:
        prepare(fleet, built, server)
        say("\n" + STAND_INS)
        say(f"--> pyinfra {fleet.inventory_path} deploy/site.py\n")
        result = subprocess.run([PYINFRA, str(fleet.inventory_path), "deploy/site.py", "-y"],
                                cwd=REPO)
    first = fleet.hosts[0]
    login = (f"ssh -i {fleet.ssh_key} -o UserKnownHostsFile={fleet.known_hosts} "
             f"root@{first.address}")
    say(f"""
--> The fleet is up. Log in to a host:
    {login}
  Each web UI listens on its host's 127.0.0.1:7860 only; from this machine:
    {login} -N -L 7860:127.0.0.1:7860   # then open http://127.0.0.1:7860/
  Run the deploy again (it changes nothing the second time):
    sudo {PYINFRA} {fleet.inventory_path} deploy/site.py -y
  Tear it down:
    make demo-down
""")
    return result.returncode


def down() -> int:
    fleet = Fleet.load(WORKDIR)
    if not fleet.hosts:
        say(f"no demo fleet in {WORKDIR}")
        return 0
    fleet.down()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    try:
        return up() if args.action == "up" else down()
    except FleetError as error:
        say(f"demo: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
