"""Helpers for outputs as a host printed them or as someone pasted them."""

from __future__ import annotations

import re


def unquote(line: str) -> str:
    """A pasted line without what Markdown or a mail quote added: ``> `` prefixes, backticks."""
    line = re.sub(r"^\s*(?:>\s?)+", "", line.rstrip())
    return line.replace("`", "")



def to_int(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
