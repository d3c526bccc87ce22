#!/usr/bin/python3
"""sdinfra STAND-IN for NVIDIA's nvidia-ctk (TEST ONLY; no GPU support whatsoever).

Implements `nvidia-ctk runtime configure --runtime=docker` the way nvidia-ctk 1.14.3 does:
load the daemon config (missing file = {}), set runtimes.<name> = {"args": [], "path": PATH},
optionally default-runtime, write it back with Go's json.MarshalIndent(cfg, "", "    ")
formatting (keys sorted, 4-space indent, no trailing newline).
"""
import json
import os
import sys

# The version it says it is: set by testbed/standins/nvidia.py for each package it builds.
VERSION = "1.14.3"
COMMIT = "sdinfra-standin"


def log(level, msg):
    sys.stderr.write("%s[0000] %s\n" % (level, msg))


def go_json(obj):
    text = json.dumps(obj, indent=4, sort_keys=True, ensure_ascii=False, separators=(",", ": "))
    # Go's encoder escapes these for HTML safety
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def usage(out=sys.stdout):
    out.write(
        "NAME:\n   NVIDIA Container Toolkit CLI - Tools to configure the NVIDIA Container Toolkit\n\n"
        "USAGE:\n   nvidia-ctk [global options] command [command options] [arguments...]\n\n"
        "VERSION:\n   %s\n\nCOMMANDS:\n   runtime  A collection of runtime-related utilities for "
        "the NVIDIA Container Toolkit\n\n(sdinfra stand-in: only `runtime configure` is implemented)\n"
        % VERSION)


def parse_flags(args, spec):
    """urfave/cli style flags: -f, --f, --f=v, --f v; booleans take no value."""
    opts = {}
    rest = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest.extend(args[i + 1:])
            break
        if a.startswith("-") and a != "-":
            name, eq, val = a.lstrip("-").partition("=")
            if name not in spec:
                raise SystemExit("flag provided but not defined: -%s" % name)
            key, kind = spec[name]
            if kind == "bool":
                opts[key] = (val.lower() in ("", "true", "1")) if eq else True
            else:
                if not eq:
                    i += 1
                    if i >= len(args):
                        raise SystemExit("flag needs an argument: -%s" % name)
                    val = args[i]
                opts[key] = val
        else:
            rest.append(a)
        i += 1
    return opts, rest


def runtime_configure(args):
    spec = {
        "runtime": ("runtime", "str"),
        "config": ("config", "str"),
        "dry-run": ("dry_run", "bool"),
        "nvidia-runtime-name": ("name", "str"), "runtime-name": ("name", "str"),
        "nvidia-runtime-path": ("path", "str"), "runtime-path": ("path", "str"),
        "nvidia-set-as-default": ("default", "bool"), "set-as-default": ("default", "bool"),
        "cdi.enabled": ("cdi", "bool"), "cdi-enabled": ("cdi", "bool"),
    }
    try:
        opts, _ = parse_flags(args, spec)
    except SystemExit as e:
        log("ERRO", str(e))
        return 1
    runtime = opts.get("runtime", "docker")
    if runtime != "docker":
        log("ERRO", "unrecognized runtime '%s' (sdinfra stand-in implements docker only)" % runtime)
        return 1
    path = opts.get("config", "/etc/docker/daemon.json")
    name = opts.get("name", "nvidia")
    rt_path = opts.get("path", "nvidia-container-runtime")
    log("INFO", "Loading docker config from %s" % path)
    if os.path.isdir(path):
        log("ERRO", "unable to load config for runtime docker: config file is a directory")
        return 1
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
        except ValueError as e:
            log("ERRO", "unable to load config for runtime docker: %s" % e)
            return 1
        if not isinstance(cfg, dict):
            log("ERRO", "unable to load config for runtime docker: not a JSON object")
            return 1
        log("INFO", "Successfully loaded config")
    else:
        log("INFO", "Config file does not exist; creating new one")
        cfg = {}
    runtimes = cfg.get("runtimes")
    if not isinstance(runtimes, dict):
        runtimes = {}
    runtimes[name] = {"args": [], "path": rt_path}
    cfg["runtimes"] = runtimes
    if opts.get("default"):
        cfg["default-runtime"] = name
    if opts.get("cdi"):
        features = cfg.get("features") if isinstance(cfg.get("features"), dict) else {}
        features["cdi"] = True
        cfg["features"] = features
    out = go_json(cfg)
    if opts.get("dry_run"):
        sys.stdout.write(out + "\n")
        return 0
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, mode=0o755, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(out)
    log("INFO", "Wrote updated config to %s" % path)
    log("INFO", "It is recommended that docker daemon be restarted.")
    return 0


def main(argv):
    if not argv or argv[0] in ("-h", "--help", "help"):
        usage()
        return 0
    if argv[0] in ("-v", "--version", "version"):
        sys.stdout.write("NVIDIA Container Toolkit CLI version %s\ncommit: %s\n" % (VERSION, COMMIT))
        return 0
    # global flags before the command (e.g. --debug) are accepted and ignored
    while argv and argv[0].startswith("-"):
        argv = argv[1:]
    if len(argv) >= 2 and argv[0] == "runtime" and argv[1] == "configure":
        return runtime_configure(argv[2:])
    log("ERRO", "sdinfra stand-in nvidia-ctk: unsupported command: %s" % " ".join(argv))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
