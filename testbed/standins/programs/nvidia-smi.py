#!/usr/bin/python3
"""sdinfra STAND-IN for nvidia-smi (TEST ONLY): prints what the GPU named in NAME would show."""
import sys
import time

# The GPU and driver it reports: set by testbed/standins/nvidia.py (build_nvidia_driver_deb) for
# each package it builds; these are its defaults.
NAME = "NVIDIA GeForce GTX 950M"
MEMORY_MIB = 2048
DRIVER = "525.147.05"
CUDA = "12.0"
COMPUTE_CAP = "5.0"
BROKEN = False  # a driver installed but not loaded

GPU = {
    "name": NAME,
    "memory_mib": MEMORY_MIB,
    "driver": DRIVER,
    "cuda": CUDA,
    "bus_id": "00000000:01:00.0",
    "uuid": "GPU-5dd1f2a8-3f4b-7c2e-9d61-0a2b4c6d8e10",
    "compute_cap": COMPUTE_CAP,
    "used_mib": 4,
    "temp": 41,
}


def fields():
    g = GPU
    return {
        "name": (g["name"], None), "gpu_name": (g["name"], None),
        "driver_version": (g["driver"], None),
        "count": ("1", None), "index": ("0", None),
        "pci.bus_id": (g["bus_id"], None), "gpu_bus_id": (g["bus_id"], None),
        "uuid": (g["uuid"], None), "gpu_uuid": (g["uuid"], None),
        "compute_cap": (g["compute_cap"], None),
        "memory.total": (str(g["memory_mib"]), "MiB"),
        "memory.used": (str(g["used_mib"]), "MiB"),
        "memory.free": (str(g["memory_mib"] - g["used_mib"]), "MiB"),
        "temperature.gpu": (str(g["temp"]), None),
        "utilization.gpu": ("0", "%"), "utilization.memory": ("0", "%"),
        "power.draw": ("[N/A]", None), "power.limit": ("[N/A]", None),
        "persistence_mode": ("Disabled", None), "pstate": ("P8", None),
    }


def query(spec, fmt):
    opts = [o.strip() for o in fmt.split(",")] if fmt else []
    if "csv" not in opts:
        sys.stdout.write("sdinfra stand-in nvidia-smi: --query-gpu needs --format=csv\n")
        return 2
    known = fields()
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for n in names:
        if n not in known:
            sys.stdout.write('Field "%s" is not a valid field to query.\n\n' % n)
            return 2
    nounits = "nounits" in opts
    if "noheader" not in opts:
        hdr = []
        for n in names:
            unit = known[n][1]
            hdr.append("%s [%s]" % (n, unit) if unit and not nounits else n)
        sys.stdout.write(", ".join(hdr) + "\n")
    vals = []
    for n in names:
        v, unit = known[n]
        vals.append(v if (unit is None or nounits) else "%s %s" % (v, unit))
    sys.stdout.write(", ".join(vals) + "\n")
    return 0


def table():
    g = GPU
    name = g["name"] if len(g["name"]) <= 18 else g["name"][:15] + "..."
    used = "%dMiB" % g["used_mib"]
    total = "%dMiB" % g["memory_mib"]
    sep = "+-------------------------------+----------------------+----------------------+"
    top = "+" + "-" * 77 + "+"

    def row(*cols):
        return "|" + "|".join(cols) + "|"

    def wide(text):
        return "|" + text.ljust(77) + "|"

    lines = [
        time.strftime("%a %b %d %H:%M:%S %Y").ljust(31),
        top,
        wide(" NVIDIA-SMI %-12s Driver Version: %-12s CUDA Version: %s"
             % (g["driver"], g["driver"], g["cuda"])),
        "|" + "-" * 31 + "+" + "-" * 22 + "+" + "-" * 22 + "+",
        row(" GPU  Name        Persistence-M", " Bus-Id        Disp.A ", " Volatile Uncorr. ECC "),
        row(" Fan  Temp  Perf  Pwr:Usage/Cap", "         Memory-Usage ", " GPU-Util  Compute M. "),
        row(" " * 31, " " * 22, "               MIG M. "),
        "|" + "=" * 31 + "+" + "=" * 22 + "+" + "=" * 22 + "|",
        row("   0  %-18s  Off  " % name, " %s Off " % g["bus_id"], "                  N/A "),
        row(" N/A   %2dC    P8    N/A /  N/A " % g["temp"],
            " %9s / %8s " % (used, total), "      0%      Default "),
        row(" " * 31, " " * 22, "                  N/A "),
        sep,
        " " * 79,
        top,
        wide(" Processes:"),
        wide("  GPU   GI   CI        PID   Type   Process name                  GPU Memory"),
        wide("        ID   ID                                                   Usage"),
        "|" + "=" * 77 + "|",
        wide("  No running processes found"),
        top,
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def main(argv):
    if BROKEN:
        sys.stdout.write(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running.\n\n")
        return 9
    spec = fmt = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--query-gpu="):
            spec = a.split("=", 1)[1]
        elif a == "--query-gpu" and i + 1 < len(argv):
            i += 1
            spec = argv[i]
        elif a.startswith("--format="):
            fmt = a.split("=", 1)[1]
        elif a == "--format" and i + 1 < len(argv):
            i += 1
            fmt = argv[i]
        elif a in ("-L", "--list-gpus"):
            sys.stdout.write("GPU 0: %s (UUID: %s)\n" % (GPU["name"], GPU["uuid"]))
            return 0
        elif a in ("-h", "--help"):
            sys.stdout.write("sdinfra stand-in nvidia-smi: supports no option, -L, "
                             "--query-gpu=FIELDS --format=csv[,noheader][,nounits]\n")
            return 0
        i += 1
    if spec is not None:
        return query(spec, fmt)
    return table()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
