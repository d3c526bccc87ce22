"""
Fleet speed: how long deploy/site.py takes on a converged fleet, against what pyinfra needs at
least to reach the same hosts.

    sudo .venv/bin/python -m bench.fleet [--sizes 1,3,6] [--repeat 3] [--json] [--dir DIR]
                                          [--cache] [--backends cpu,rocm,cuda]

For each size N it boots a fleet of N disposable Debian 12 hosts with the test harness
(testbed/fleet.py; hosts cycle through the backends: cpu1, rocm1, cuda1, cpu2, rocm2, cuda2, ...,
or those of ``--backends``), prepares them as the end-to-end suite does (testbed/hosts.py
``prepare``: an admin user, stand-in GPU device nodes on rocm hosts, the stand-in NVIDIA
driver on cuda hosts, settings pointing at the stand-in vendor downloads served on each host's
gateway). Its hosts build the web UI image as real hosts do, from the stand-in "internet"
(testbed/standins/image_build.py: a base image from a Docker Hub mirror, the web UI's tree, a
torch wheel of a few hundred MB).
With ``--cache`` the fleet has a cache (roles.cache): its first host, cpu1, is also the cache
host (``cache_serve``: Debian's docker-registry and apt-cacher-ng), and every host has
``cache_host`` set: apt goes through the cache, and each image is built by one host and pulled
by the others. It measures:

* ``cold_s``: the first run of ``pyinfra INVENTORY deploy/site.py -y`` (installs everything);
* ``floor_s``: ``pyinfra INVENTORY exec -y -- true``, pyinfra connecting to the same hosts and
  running one trivial command: the least any run can cost (median of ``--repeat`` runs);
* ``nochange_s``: deploy/site.py again on the converged fleet (median of ``--repeat`` runs,
  interleaved with the floor runs so that both see the same machine load);
* ``ratio``: nochange_s / floor_s;
* ``internet_bytes``: the body bytes the stand-in server sent during the cold run (the
  internet's share of it: vendor packages, models, the image build's downloads);
* ``image_builds``: how many images were built for the fleet in the cold run: the distinct
  image ids the hosts' web UI images have (each build records a random id in its image, a pull
  keeps the builder's); the torch wheel downloads are shown beside it in the table;
* ``commands_per_host``: remote commands a no-change run sends to a host (the most any host of
  the fleet gets), counted from one more no-change run with ``--debug``: pyinfra's SSH connector
  logs ``Running command on HOST: ...`` once for each command it executes.

Every no-change run must change nothing: no operation reports a change or an error, nothing is
downloaded from the stand-in server, no image is built or loaded (the image ids on each host stay
the same) and no container is recreated or restarted (ids and ``.State.StartedAt`` stay the
same). When any of these fails the benchmark says which and exits 1.

Output: a table (on stdout; on stderr with ``--json``, which prints on stdout a list with one
object per size holding exactly ``hosts``, ``cold_s``, ``nochange_s``, ``floor_s``, ``ratio``,
``commands_per_host``, ``internet_bytes`` and ``image_builds``). Progress goes to stderr.
Needs root, like the fleet itself; every
fleet booted here is torn down before the next one boots, also on errors and Ctrl-C.

Traffic: only to loopback and the fleet hosts' own veth addresses (the hosts reach the Debian
mirror through the harness's NAT, as in the end-to-end suite).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
DEPLOY = "deploy/site.py"
BACKENDS = ("cpu", "rocm", "cuda")
KEYS = ("hosts", "cold_s", "nochange_s", "floor_s", "ratio", "commands_per_host",
        "internet_bytes", "image_builds")
# The targets, reported with the figures.
MAX_RATIO_AT_3 = 3.0
MAX_COMMANDS = 40
MAX_GROWTH_1_TO_6 = 1.5
# What pyinfra's SSH connector logs (at debug level) for each command it runs on a host.
COMMAND_LINE = re.compile(r"Running command on (\S+): \(pty=")
UPLOAD_LINE = re.compile(r"Attempting upload of .* to ")
# Containers of the compose project the webui role manages, with what shows a restart.
CONTAINERS = ("docker ps -aq --filter label=com.docker.compose.project=sdinfra | sort | "
              "xargs -r docker inspect -f '{{.Name}} {{.Id}} {{.State.StartedAt}}'")
IMAGES = "docker image ls --all --no-trunc --format '{{.ID}} {{.Repository}}:{{.Tag}}' | sort"
# The web UI images a host has (built here or pulled: a registry's name before sdinfra/webui).
WEBUI_IMAGE = re.compile(r"^(sha256:[0-9a-f]{64}) (?:\S+/)?sdinfra/webui:\S+$", re.M)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def names_for(count: int, backends=BACKENDS) -> list[str]:
    """cpu1, rocm1, cuda1, cpu2, rocm2, cuda2, ... : ``count`` hosts cycling the backends."""
    n = len(backends)
    return [f"{backends[i % n]}{i // n + 1}" for i in range(count)]


@dataclass
class Run:
    seconds: float
    returncode: int
    stdout: str
    stderr: str


def pyinfra(inventory: Path, *args: str, timeout: float = 1800) -> Run:
    started = time.perf_counter()
    # As a user's pyinfra runs, whatever the shell that started the bench says: pyinfra's own
    # modules were compiled when pip installed it, sdinfra's by its first run (roles/speed.py
    # keep_bytecode, which PYTHONDONTWRITEBYTECODE would turn off: every run would compile
    # sdinfra's ~60 modules again, ~0.05 s the floor never pays).
    env = {**os.environ, "PYINFRA_PROGRESS": "off"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run([PYINFRA, str(inventory), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)
    return Run(time.perf_counter() - started, proc.returncode, proc.stdout, proc.stderr)


def commands_per_host(debug_output: str, names: list[str]) -> dict[str, int]:
    """Remote commands per host, from a ``--debug`` run's output."""
    counts = dict.fromkeys(names, 0)
    for line in debug_output.splitlines():
        found = COMMAND_LINE.search(line)
        if found and found.group(1) in counts:
            counts[found.group(1)] += 1
    return counts


def changes_in(json_output: str) -> list[str]:
    """Operations that changed or failed a host, from ``--json`` output."""
    found = []
    for op in json.loads(json_output)["results"]["operations"]:
        for key in ("success", "error"):
            for host in op[key]:
                found.append(f"{op['name']} ({'changed' if key == 'success' else 'failed'} "
                             f"on {host})")
    return found


@dataclass
class Result:
    hosts: int
    cold_s: float
    nochange_s: float
    floor_s: float
    commands: dict[str, int]
    internet_bytes: int = 0
    image_builds: int = 0
    wheel_downloads: int = 0
    checks: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    nochange_runs: list[float] = field(default_factory=list)
    floor_runs: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.nochange_s / self.floor_s

    def as_json(self) -> dict:
        row = {"hosts": self.hosts, "cold_s": round(self.cold_s, 2),
               "nochange_s": round(self.nochange_s, 3), "floor_s": round(self.floor_s, 3),
               "ratio": round(self.ratio, 2), "commands_per_host": max(self.commands.values()),
               "internet_bytes": self.internet_bytes, "image_builds": self.image_builds}
        assert tuple(row) == KEYS
        return row


def snapshot(fleet, names: list[str]) -> dict[str, tuple[str, str]]:
    """Per host: (containers with ids and start times, image ids)."""
    from testbed.hosts import ssh

    return {name: (ssh(fleet, name, CONTAINERS), ssh(fleet, name, IMAGES)) for name in names}


def image_builds(images: dict[str, tuple[str, str]]) -> int:
    """Distinct web UI image ids across the hosts (``snapshot``'s image lists)."""
    return len({m for _, listing in images.values() for m in WEBUI_IMAGE.findall(listing)})


def with_cache(fleet, names: list[str]) -> None:
    """The fleet's first host is its cache host; every host uses it (roles.cache)."""
    from testbed.hosts import write_settings

    data = json.loads(fleet.host_data_path.read_text())
    cache = fleet.host(names[0]).address
    for name in names:
        data[name]["cache_host"] = cache
    data[names[0]].update(cache_serve=True,
                          cache_allow=[f"{fleet.host(n).address}/32" for n in names])
    write_settings(fleet, data)


def measure(count: int, stand_ins, build, workdir: Path, repeat: int, cache: bool,
            backends=BACKENDS) -> Result:
    from roles.cache.settings import DEFAULT_PORTS
    from testbed import standins
    from testbed.fleet import Fleet
    from testbed.hosts import prepare

    names = names_for(count, backends)
    # With a cache, the hosts reach its registry, apt cache and models on each other.
    fleet = Fleet(workdir / f"fleet-{count}", names,
                  **({"peer_ports": DEFAULT_PORTS} if cache else {}))
    try:
        log(f"{count} host(s): booting {', '.join(names)}")
        fleet.up()
        inventory = fleet.inventory_path
        addresses = [h.gateway for h in fleet.hosts] + ["127.0.0.1"]
        with standins.serve(stand_ins.root, addresses) as server:
            prepare(fleet, stand_ins, server, names, build=build)
            if cache:
                with_cache(fleet, names)
            server.clear()  # the preparation's downloads are not the deploy's

            log(f"{count} host(s): cold run of {DEPLOY}")
            cold = pyinfra(inventory, DEPLOY, "-y")
            if cold.returncode != 0:
                raise BenchError(f"{count} host(s): the cold run of {DEPLOY} failed "
                                 f"(exit {cold.returncode}):\n{cold.stderr[-4000:]}")
            internet = server.bytes_served
            wheels = sum(1 for r in server.requests
                         if r.path in build.wheel_paths() and r.method == "GET"
                         and r.status == 200)
            log(f"{count} host(s): cold run {cold.seconds:.1f} s, {internet} bytes from the "
                f"stand-in internet, {wheels} torch wheel download(s)")

            before = snapshot(fleet, names)
            server.clear()
            floors, nochanges, problems = [], [], []
            for i in range(repeat):
                floor = pyinfra(inventory, "exec", "-y", "--", "true")
                if floor.returncode != 0:
                    raise BenchError(f"{count} host(s): `pyinfra exec -- true` failed:\n"
                                     f"{floor.stderr[-3000:]}")
                run = pyinfra(inventory, DEPLOY, "-y", "--json")
                if run.returncode != 0:
                    raise BenchError(f"{count} host(s): a no-change run of {DEPLOY} failed "
                                     f"(exit {run.returncode}):\n{run.stderr[-4000:]}")
                problems += changes_in(run.stdout)
                floors.append(floor.seconds)
                nochanges.append(run.seconds)
                log(f"{count} host(s): floor {floor.seconds:.2f} s, no-change "
                    f"{run.seconds:.2f} s")
            counted = pyinfra(inventory, DEPLOY, "-y", "--json", "--debug")
            if counted.returncode != 0:
                raise BenchError(f"{count} host(s): the counted no-change run failed:\n"
                                 f"{counted.stderr[-4000:]}")
            problems += changes_in(counted.stdout)
            commands = commands_per_host(counted.stderr, names)
            uploads = len(UPLOAD_LINE.findall(counted.stderr))
            downloads = server.paths()
            after = snapshot(fleet, names)

        restarted = [n for n in names if before[n][0] != after[n][0]]
        rebuilt = [n for n in names if before[n][1] != after[n][1]]
        missing = [n for n in names if not before[n][0].strip()]
        checks = {
            "no change": not problems and uploads == 0,
            "no download": not downloads,
            "no image built": not rebuilt,
            "no restart": not restarted and not missing,
        }
        messages = []
        if problems:
            messages.append("operations changed or failed hosts: " + "; ".join(problems))
        if uploads:
            messages.append(f"{uploads} file upload(s) during the counted no-change run")
        if downloads:
            messages.append("downloaded from the stand-in server: " + ", ".join(downloads))
        if rebuilt:
            messages.append("images built or loaded on " + ", ".join(rebuilt))
        if restarted:
            messages.append("containers recreated or restarted on " + ", ".join(restarted))
        if missing:
            messages.append("no web UI container at all on " + ", ".join(missing))
        return Result(count, cold.seconds, statistics.median(nochanges),
                      statistics.median(floors), commands, internet, image_builds(before),
                      wheels, checks,
                      [f"{count} host(s): {m}" for m in messages], nochanges, floors)
    finally:
        fleet.down()


class BenchError(RuntimeError):
    pass


def table(results: list[Result]) -> str:
    check_names = list(results[0].checks) if results else []
    head = (["hosts", "cold s", "no-change s", "floor s", "ratio", "cmds/host", "internet MB",
             "builds", "wheels"] + check_names)
    rows = []
    for r in results:
        rows.append([str(r.hosts), f"{r.cold_s:.1f}", f"{r.nochange_s:.2f}", f"{r.floor_s:.2f}",
                     f"{r.ratio:.2f}", str(max(r.commands.values())),
                     f"{r.internet_bytes / 1e6:.1f}", str(r.image_builds),
                     str(r.wheel_downloads)]
                    + ["yes" if r.checks[c] else "NO" for c in check_names])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(x.rjust(w) for x, w in zip(line, widths)) for line in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        per_host = ", ".join(f"{n} {c}" for n, c in r.commands.items())
        lines.append(f"{r.hosts} host(s): commands per host on a no-change run: {per_host}; "
                     f"runs (s): no-change {', '.join(f'{x:.2f}' for x in r.nochange_runs)}; "
                     f"floor {', '.join(f'{x:.2f}' for x in r.floor_runs)}")
    lines += targets(results)
    return "\n".join(lines)


def targets(results: list[Result]) -> list[str]:
    by_size = {r.hosts: r for r in results}
    lines = ["targets:"]
    if 3 in by_size:
        ratio = by_size[3].ratio
        lines.append(f"  no-change on 3 hosts <= {MAX_RATIO_AT_3:g} x floor: {ratio:.2f} "
                     f"({'met' if ratio <= MAX_RATIO_AT_3 else 'MISSED'})")
    most = max((max(r.commands.values()) for r in results), default=0)
    lines.append(f"  <= {MAX_COMMANDS} remote commands per host on a no-change run: {most} "
                 f"({'met' if most <= MAX_COMMANDS else 'MISSED'})")
    if 1 in by_size and 6 in by_size:
        growth = by_size[6].nochange_s / by_size[1].nochange_s
        lines.append(f"  no-change time from 1 to 6 hosts <= {MAX_GROWTH_1_TO_6:g} x: "
                     f"{growth:.2f} ({'met' if growth <= MAX_GROWTH_1_TO_6 else 'MISSED'})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split(
        "\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,3,6",
                        help="fleet sizes to measure, comma-separated (default 1,3,6)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="floor and no-change runs per size; the median is reported")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON on stdout (the table goes to stderr)")
    parser.add_argument("--cache", action="store_true",
                        help="the fleet has a cache: its first host serves the others "
                             "(cache_host, cache_serve)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="the backends the hosts cycle through (default cpu,rocm,cuda)")
    parser.add_argument("--dir", help="work directory (default: a new temporary one, removed "
                                      "at the end)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes takes whole numbers: {args.sizes!r}")
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if not backends or set(backends) - set(BACKENDS):
        parser.error(f"--backends takes some of {','.join(BACKENDS)}: {args.backends!r}")
    if not sizes or min(sizes) < 1 or args.repeat < 1:
        parser.error("give sizes of at least 1 host and --repeat of at least 1")
    if os.geteuid() != 0:
        print("bench: error: the fleet needs root (run with sudo)", file=sys.stderr)
        return 2

    from testbed import standins
    from testbed.fleet import FleetError
    from testbed.standins.image_build import build_sources

    workdir = Path(args.dir or tempfile.mkdtemp(prefix="sdinfra-bench-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    try:
        log(f"building the stand-ins in {workdir / 'standins'}")
        stand_ins = standins.build_all(workdir / "standins")
        build = build_sources(stand_ins.root)
        for count in sizes:
            results.append(measure(count, stand_ins, build, workdir, args.repeat, args.cache,
                                   backends))
    except (BenchError, FleetError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)

    out = sys.stderr if args.json else sys.stdout
    print(table(results), file=out, flush=True)
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=1))
    problems = [p for r in results for p in r.problems]
    if problems:
        print("bench: FAILED: a no-change run changed something:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
