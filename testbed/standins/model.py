"""The model the deploy downloads: a few KB of float32 in the safetensors format, with its
checksums file."""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path

from testbed.standins.common import sha256_file


@dataclasses.dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str
    checksums: Path  # "<sha256>  <name>" file next to it


def build_model(dest_dir: os.PathLike | str, name: str = "standin.safetensors") -> ModelFile:
    """A 4 KiB float32 tensor in safetensors format, with a checksums.sha256 file."""
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    n = 32 * 32
    data = struct.pack(f"<{n}f", *(((i * 37) % 101) / 101.0 - 0.5 for i in range(n)))
    header = {
        "__metadata__": {"format": "pt", "sdinfra": "stand-in model, TEST ONLY, not a checkpoint"},
        "standin.weight": {"dtype": "F32", "shape": [32, 32], "data_offsets": [0, len(data)]},
    }
    hb = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    hb += b" " * (-len(hb) % 8)
    path = dest / name
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    digest = sha256_file(path)
    sums = dest / "checksums.sha256"
    sums.write_text(f"{digest}  {name}\n")
    return ModelFile(path=path, sha256=digest, checksums=sums)


def read_safetensors_header(path: os.PathLike | str) -> dict:
    """Parse and check a safetensors file's header (used by the tests)."""
    raw = Path(path).read_bytes()
    (hlen,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + hlen])
    body = len(raw) - 8 - hlen
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    if end != body:
        raise ValueError(f"tensor data ends at {end}, file body is {body} bytes")
    return header
