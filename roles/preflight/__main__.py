"""
``python -m roles.preflight explain DIR [--json]``: the preflight report from captured outputs.

DIR holds any of lspci-nn.txt, lspci-vvv.txt, cpuinfo.txt, meminfo.txt, dmesg.txt,
rocminfo.txt, nvidia-smi.txt, os-release.txt (and optionally uname.txt, df.txt, drm-vram.txt);
each is optional, a missing file means unknown. ``--json`` prints the decision as JSON with the
keys backend, reasons, env, webui_args, warnings, gpu.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .decide import DEFAULT_ROCM_RELEASE, decide
from .facts import SECTIONS, parse
from .report import report


def load_dir(directory: str | Path) -> dict[str, str]:
    """{section: text} from DIR/<section>.txt files; raises FileNotFoundError for a bad DIR."""
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"no such directory: {directory}")
    sections = {}
    for name in SECTIONS:
        file = path / f"{name}.txt"
        if file.is_file():
            sections[name] = file.read_text(encoding="utf-8", errors="replace")
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m roles.preflight",
        description="Hardware preflight: which backend a host runs, from captured outputs.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser("explain", help="report on a folder of captured outputs")
    explain.add_argument("dir", help="folder with lspci-nn.txt, cpuinfo.txt, ... (all optional)")
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.add_argument("--accelerator", default="auto", choices=("auto", "rocm", "cuda", "cpu"),
                         help="the accelerator setting to apply (default: auto)")
    explain.add_argument("--rocm-release", default=DEFAULT_ROCM_RELEASE,
                         help=f"ROCm release to judge AMD GPUs against "
                              f"(default: {DEFAULT_ROCM_RELEASE})")
    explain.add_argument("--cuda-build", default="auto", choices=("auto", "cu121", "cu118"),
                         help="the cuda_torch_build setting to apply (default: auto)")
    explain.add_argument("--name", default=None, help="host name shown in the report")
    args = parser.parse_args(argv)

    try:
        sections = load_dir(args.dir)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as error:
        print(f"preflight: {error}", file=sys.stderr)
        return 2
    if not sections:
        print(f"preflight: {args.dir} holds none of: "
              + ", ".join(f"{name}.txt" for name in SECTIONS), file=sys.stderr)
        return 2
    facts = parse(sections)
    decision = decide(facts, requested=args.accelerator, rocm_release=args.rocm_release,
                      cuda_build=args.cuda_build)
    if args.json:
        print(json.dumps(decision.to_json(), indent=2))
    else:
        print(report(args.name or Path(args.dir).resolve().name, decision, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
