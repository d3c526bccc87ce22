"""
webui_extra_args read as the web UI reads them, before they reach it.

The launcher splits ``COMMANDLINE_ARGS`` as a shell would (``shlex.split``, in the web UI's
modules/paths_internal.py) and hands the words to an ``argparse`` parser (modules/cmd_args.py),
which takes ``--flag=value`` as ``--flag value`` and any unambiguous prefix of a flag for the
flag (``allow_abbrev``: ``--shar`` is ``--share``). So a check that looks at whole list entries
misses ``"--xformers --share"``, ``--shar`` and ``--share=1``. ``parse`` reads them the same way
and returns the words spelt out in full, or says what is wrong, naming flags but never values
(the value of ``--gradio-auth`` or ``--ngrok`` is a secret).

    >>> parse(["--xformers --opt-sdp"])
    (['--xformers', '--opt-sdp-attention'], [])
"""

from __future__ import annotations

import difflib
import re
import shlex
from functools import lru_cache
from pathlib import Path

FLAGS_FILE = Path(__file__).with_name("webui_flags.txt")

# Flags a setting owns (given here they would bypass that setting's checks) or that open the
# host beyond what the settings allow, with who owns them or why they are refused.
LISTEN = "webui_listen (with webui_bind_address): the LAN, behind a login"
OWNED = {
    "--listen": LISTEN,
    "--server-name": LISTEN,
    "--share": LISTEN + "; a public gradio.live tunnel is not offered",
    "--ngrok": LISTEN + "; a public ngrok tunnel is not offered",
    "--ngrok-region": LISTEN + "; a public ngrok tunnel is not offered",
    "--ngrok-options": LISTEN + "; a public ngrok tunnel is not offered",
    "--port": "webui_port",
    "--gradio-auth": "webui_auth_file or webui_auth_env",
    "--gradio-auth-path": "webui_auth_file or webui_auth_env",
    "--api-auth": "webui_auth_file or webui_auth_env",
    "--api": "webui_api",
    "--nowebui": "webui_api",
    "--enable-insecure-extension-access": "webui_allow_insecure_extensions",
    "--allow-code": "webui_allow_code",
    "--lowvram": "webui_vram",
    "--medvram": "webui_vram",
    "--data-dir": "webui_dir (the role keeps the web UI's data there)",
    "--gradio-allowed-path": "no setting: it serves files from any path to whoever reaches "
                             "the web UI",
    "--cors-allow-origins": "no setting: it lets other web sites call the API from a "
                            "visitor's browser",
    "--cors-allow-origins-regex": "no setting: it lets other web sites call the API from a "
                                  "visitor's browser",
    "--api-server-stop": "no setting: it lets API callers stop and restart the web UI",
    "--disable-safe-unpickle": "no setting: it lets any .ckpt model run code on the host",
    "-h": "no setting: the web UI prints its help and exits",
    "--help": "no setting: the web UI prints its help and exits",
    "--dump-sysinfo": "no setting: the web UI writes a file and exits",
}

# argparse reads "-1" as a value, not a flag, when no flag looks like a negative number
# (Lib/argparse.py 3.10, _negative_number_matcher and _parse_optional).
NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


@lru_cache(maxsize=None)
def known() -> dict[str, str]:
    """{flag: "0" | "1" | "+"}: how many values each flag of the pinned web UI takes."""
    flags = {}
    for line in FLAGS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            flag, values = line.split()
            flags[flag] = values
    return flags


def resolve(name: str) -> tuple[str | None, str]:
    """
    (flag, "") for a flag as argparse resolves it, else (None, why). An exact name wins; a
    ``--`` prefix of exactly one flag is that flag (Lib/argparse.py 3.10, _get_option_tuples).
    """
    flags = known()
    if name in flags:
        return name, ""
    if name.startswith("--") and len(name) > 2:
        matches = [flag for flag in flags if flag.startswith(name)]
        if len(matches) == 1:
            return matches[0], ""
        if matches:
            return None, f"is ambiguous: it could be {', '.join(matches)}"
    close = difflib.get_close_matches(name, list(flags), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return None, f"is not a flag of the pinned web UI, which would not start{hint}"


def parse(entries) -> tuple[list[str], list[str]]:
    """
    (words, problems): ``entries`` split and read as the web UI reads them; each word a flag
    spelt in full (``--flag=value`` as ``--flag value``) or its value.
    """
    words: list[str] = []
    problems: list[str] = []
    tokens: list[str] = []
    for number, entry in enumerate(entries, 1):
        try:
            tokens += shlex.split(entry)
        except ValueError:
            problems.append(f"entry {number} has a quote that is not closed")
    position = 0
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if not token.startswith("-") or token == "-" or NEGATIVE_NUMBER.match(token):
            problems.append(f"word {position} is a value with no flag before it that takes one "
                            "(the web UI stops on unrecognized arguments)")
            continue
        name, eq, attached = token.partition("=") if token.startswith("--") else (token, "", "")
        flag, why = resolve(name)
        shown = name if flag is None or flag == name else f"{name} (read as {flag})"
        if flag is None:
            problems.append(f"{shown} {why}")
            while position < len(tokens) and not tokens[position].startswith("-"):
                position += 1  # its values: one problem is enough
            continue
        takes = known()[flag]
        values: list[str] = [attached] if eq else []
        while takes != "0" and position < len(tokens) and (not values or takes == "+"):
            following = tokens[position]
            if following.startswith("-") and not NEGATIVE_NUMBER.match(following):
                break
            values.append(following)
            position += 1
        if flag in OWNED:
            problems.append(f"{shown} is set through {OWNED[flag]}")
        elif takes == "0" and eq:
            problems.append(f"{shown} takes no value")
        elif takes != "0" and not values:
            problems.append(f"{shown} needs a value")
        else:
            words += [flag, *values]
    return words, problems
