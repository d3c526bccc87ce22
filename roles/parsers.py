"""
The readers of what hosts print, one per format, for every role: the sections of a fact that
reads several things in one command (``sections``), os-release(5), ``dpkg -s`` stanzas. Plain
functions over text (or lines), tested against real outputs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import shlex

# How a fact's command says what comes next: a line "### NAME" opens the section NAME (the
# preflight's offline captures are files NAME.txt); inside a section, a line "#! ..." is a
# note of the command about its own run ("#! missing lspci"), not the output of what it ran.
MARKER = "### "
NOTE = "#! "
_NAME = re.compile(r"[a-z0-9-]+")


def parts(output: list[str] | str, names=None) -> list[tuple[str, list[str]]]:
    """
    ``[(NAME, lines), ...]`` of the output cut at its ``### NAME`` lines, in their order (a
    name may come again: one part per file of a list); lines before the first are dropped.
    ``names``: the only names that open a part, so that a line of a file the command shows whole
    (``### notes`` in someone's config) stays that file's line.
    """
    found: list[tuple[str, list[str]]] = []
    for line in lines_of(output):
        name = line[len(MARKER):].strip() if line.startswith(MARKER) else None
        if name is not None and _NAME.fullmatch(name) and (names is None or name in names):
            found.append((name, []))
        elif found:
            found[-1][1].append(line)
    return found


def sections(output: list[str] | str, names=None) -> dict[str, list[str]]:
    """``{NAME: lines}`` of ``parts`` (a name printed twice: its last part)."""
    return dict(parts(output, names))


def split_notes(lines: list[str] | str) -> tuple[list[str], list[str]]:
    """A section's (output lines, the command's notes without their ``#! ``)."""
    body, notes = [], []
    for line in lines_of(lines):
        if line.startswith(NOTE):
            notes.append(line[len(NOTE):].strip())
        else:
            body.append(line)
    return body, notes


def lines_of(output: list[str] | str) -> list[str]:
    return output.splitlines() if isinstance(output, str) else list(output)


def os_release(output: list[str] | str) -> dict[str, str]:
    """
    KEY=value lines of os-release(5), shell-quoted values unquoted, as pyinfra reads them
    (``{"ID": "ubuntu", "VERSION_ID": "22.04", ...}``); comments, notes and lines that are not
    assignments are skipped.
    """
    values = {}
    for line in lines_of(output):
        name, sep, value = line.strip().partition("=")
        if not sep or not name.isidentifier() or name.startswith("#"):
            continue
        try:
            words = shlex.split(value, comments=False)
        except ValueError:
            continue
        values[name.upper()] = " ".join(words)
    return values


def dpkg_status(output: list[str] | str) -> dict[str, str]:
    """``dpkg -s`` stanzas (or roles.shell.DPKG_FIELDS's) → {package: version} for the
    packages that are installed."""
    lines = lines_of(output)
    found, package, status, version = {}, None, "", None

    def flush():
        if package and version and status.split()[-1:] == ["installed"]:
            found[package] = version

    for line in lines + [""]:
        if not line.strip():
            flush()
            package, status, version = None, "", None
        elif line.startswith("Package:"):
            package = line.split(":", 1)[1].strip()
        elif line.startswith("Status:"):
            status = line.split(":", 1)[1].strip()
        elif line.startswith("Version:"):
            version = line.split(":", 1)[1].strip()
    return found


def architecture(output: list[str] | str, package: str) -> str:
    """The Architecture field of ``package``'s stanza in ``dpkg -s`` stanzas (or
    roles.shell.DPKG_FIELDS's), "" when there is none."""
    current = None
    for line in lines_of(output):
        if line.startswith("Package:"):
            current = line.split(":", 1)[1].strip()
        elif line.startswith("Architecture:") and current == package:
            return line.split(":", 1)[1].strip()
    return ""


# OpenPGP (RFC 4880): what roles.shell.SHOW_KEY prints of a key file, read as gpg --show-keys
# reads it, for the fingerprints of its primary keys.
ARMOR_BEGIN = "-----BEGIN PGP "
PUBLIC_KEY = 6  # the packet tag of a primary public key (a subkey's is 14), RFC 4880 5.5.1.1


def key_fingerprints(output: list[str] | str) -> list[str]:
    """
    The v4 fingerprints (upper-case hex) of the primary keys in an OpenPGP key file as
    ``SHOW_KEY`` prints it: armored (RFC 4880 6.2) as it is, binary in base64; what ``gpg
    --show-keys --with-colons`` gives as each ``pub`` record's ``fpr``, without gpg on the host.
    Empty for no file, or one that is not a key file as a whole (a bad armor checksum, a
    truncated packet: gpg fails on it too).
    """
    lines = [line.strip() for line in lines_of(output)]
    try:
        if not any(line.startswith(ARMOR_BEGIN) for line in lines):
            data = base64.b64decode("".join(lines), validate=True)
            # Armor the shell took for binary: its lines end in CR (a key saved on Windows).
            if not data.lstrip().startswith(ARMOR_BEGIN.encode()):
                return _fingerprints(data)
            lines = [line.strip() for line in data.decode("ascii").splitlines()]
        return _fingerprints(b"".join(_dearmor(lines)))
    except (ValueError, IndexError, binascii.Error):
        return []


def _fingerprints(data: bytes) -> list[str]:
    """The v4 fingerprints of the primary keys among the packets of ``data`` (RFC 4880 12.2:
    SHA-1 over 0x99, the packet body's length in two octets, the body)."""
    return [hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest().upper()
            for tag, body in _packets(data) if tag == PUBLIC_KEY and body[:1] == b"\x04"]


def _dearmor(lines: list[str]):
    """The binary data of each armored block (RFC 4880 6.2): after its BEGIN line and its
    armor headers ("Key: value", up to a blank line), base64 up to the "=" checksum line
    (the CRC-24 of the data, checked as gpg does) or the END line."""
    block = None
    for line in lines:
        if line.startswith(ARMOR_BEGIN):
            block, headers, checksum = [], True, None
        elif block is None:
            continue
        elif line.startswith("-----END PGP "):
            data = base64.b64decode("".join(block), validate=True)
            if checksum is not None and base64.b64decode(checksum) != _crc24(data):
                raise ValueError("armor checksum")
            yield data
            block = None
        elif headers and (":" in line or not line):
            headers = bool(line)
        elif line.startswith("=") and len(line) == 5:
            headers, checksum = False, line[1:]
        else:
            headers = False
            block.append(line)
    if block is not None:
        raise ValueError("armor without its END line")


def _crc24(data: bytes) -> bytes:
    """RFC 4880 6.1's CRC-24 of ``data``, as its three octets."""
    crc = 0xB704CE
    for octet in data:
        crc ^= octet << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return (crc & 0xFFFFFF).to_bytes(3, "big")


def _packets(data: bytes):
    """(tag, body) of each OpenPGP packet in ``data`` (RFC 4880 4.2): old-format headers
    (tag in bits 5-2, a 1-, 2- or 4-octet length, or to the end of the data) and new-format
    ones (tag in bits 5-0, a 1-, 2- or 5-octet length)."""
    at = 0
    while at < len(data):
        header = data[at]
        at += 1
        if not header & 0x80:
            raise ValueError("no packet header")
        if not header & 0x40:  # old format
            tag, kind = (header >> 2) & 0x0F, header & 0x03
            if kind == 3:
                length = len(data) - at
            else:
                size = (1, 2, 4)[kind]
                length = int.from_bytes(data[at:at + size], "big")
                at += size
            body, at = data[at:at + length], at + length
        else:  # new format
            tag, first = header & 0x3F, data[at]
            if first < 192:
                length, at = first, at + 1
            elif first < 224:
                length, at = ((first - 192) << 8) + data[at + 1] + 192, at + 2
            elif first == 255:
                length, at = int.from_bytes(data[at + 1:at + 5], "big"), at + 5
            else:  # partial body lengths: for data packets only (RFC 4880 4.2.2.4); gpg too
                raise ValueError("partial body length in a key file")
            body, at = data[at:at + length], at + length
        if at > len(data):
            raise ValueError("truncated packet")
        yield tag, body
