"""
The formats the webui role writes values into, each owned here: Compose's env file, the web UI's
COMMANDLINE_ARGS, the compose file's scalars and shell words in the Dockerfile (image references
are checked by roles.settings.image_reference).

A value either passes the strict shape of the place it lands or is encoded for it by one writer;
a value neither can carry is refused (``FormatError``), and the settings check calls the same
functions, so a user hears of it before any host is changed.

    env_file({"COMMANDLINE_ARGS": commandline(["--ckpt", "a b.ckpt"])})
    # COMMANDLINE_ARGS='--ckpt "a b.ckpt"'
"""

from __future__ import annotations

import re
import shlex

import jinja2


class FormatError(ValueError):
    """A value that the format it lands in cannot carry; says why, never shows the value."""


# --- Compose's env_file ---------------------------------------------------------------------
#
# Each value is written single-quoted, the one form both Compose readers take literally:
# - Compose v2 (compose-go, dotenv/parser.go extractVarValue): a single-quoted value is taken
#   as it is, no escapes and no ${VAR} interpolation (double-quoted and bare values are
#   interpolated; a bare value also loses a " #..." tail as a comment and its trailing spaces).
# - docker-compose 1.26-1.29 (python-dotenv's parser, via compose/config/environment.py
#   env_vars_from_file): a single-quoted value is literal except \\' and \\\\.
# So a value may hold no single quote (it would end the value), no backslash (the readers
# disagree on it) and no line break or other control character (it would start a new key).
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_UNSAFE = re.compile(r"['\\\x00-\x1f\x7f]")


def env_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be an env file value, or None."""
    if not isinstance(value, str):
        return "is not text"
    if ENV_UNSAFE.search(value):
        return ("holds a single quote, a backslash, a line break or another control character, "
                "which Compose's env file cannot carry")
    return None


def env_file(pairs: dict[str, str], header: str = "") -> str:
    """The env file holding ``pairs``, in order; FormatError when a key or value cannot be."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in pairs.items():
        if not ENV_KEY.fullmatch(key):
            raise FormatError(f"{key!r} is not an environment variable name")
        problem = env_value_problem(str(value))
        if problem:
            raise FormatError(f"the value of {key} {problem}")
        lines.append(f"{key}='{value}'")
    return "\n".join(lines) + "\n"


# --- COMMANDLINE_ARGS -----------------------------------------------------------------------
#
# The launcher splits it with shlex.split (the web UI's modules/paths_internal.py, v1.10.1), so
# a word with a space is double-quoted; no word holds a " (it would need a backslash, which the
# env file cannot carry) nor anything env_value_problem refuses.
WORD_UNSAFE = re.compile(r"[\"'\\\x00-\x1f\x7f]")


def word_problem(word: str) -> str | None:
    if WORD_UNSAFE.search(word):
        return ("holds a quote, a backslash or a line break, which COMMANDLINE_ARGS in the env "
                "file cannot carry")
    return None


def commandline(words: list[str]) -> str:
    """Words joined so that shlex.split gives them back."""
    out = []
    for word in words:
        problem = word_problem(word)
        if problem:
            raise FormatError(f"a launch flag's word {problem}")
        out.append(word if word and not re.search(r"\s", word) else f'"{word}"')
    return " ".join(out)


# --- shell words ----------------------------------------------------------------------------


def shell_word(value) -> str:
    """A value as one shell word (shlex.quote); FormatError on a line break, which would end a
    Dockerfile instruction whatever the quoting."""
    value = str(value)
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise FormatError("a value for the Dockerfile holds a line break or control character")
    return shlex.quote(value)


# webui_torch_command: `pip install` and plain words. It is expanded unquoted (python -m
# $TORCH_COMMAND: split into words, never parsed for ; | & or redirections) after Docker read
# it from ENV "..." (where $, " and \ would be Docker's), so none of those, no glob characters
# and no line break.
TORCH_COMMAND = re.compile(r"pip install( [A-Za-z0-9._+=<>~!,:/@\[\]%-]+)+")


def torch_command_problem(value) -> str | None:
    if not isinstance(value, str) or not TORCH_COMMAND.fullmatch(value):
        return ("`pip install` then words of letters, digits and ._+=<>~!,:/@[]%- separated "
                "by single spaces (no quotes, $, \\, ; or line breaks)")
    return None


def _torch_command(value):
    problem = torch_command_problem(value)
    if problem:
        raise FormatError(f"the torch command is not {problem}")
    return value


# --- Dockerfile ENV values ------------------------------------------------------------------
#
# ENV KEY=value: Docker's own parser reads quotes, backslashes and $VAR in it (not a shell's), so
# a value from a setting lands there only when it holds none of them: the characters of a URL
# without $, quotes, backslash, spaces or control characters, nor a leading '-'.
ENV_WORD = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%][A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]*")


def env_word_problem(value) -> str | None:
    if not isinstance(value, str) or not ENV_WORD.fullmatch(value):
        return ("a value for the Dockerfile's ENV: letters, digits and the characters of a URL "
                "(no $, quotes, backslashes, spaces or line breaks)")
    return None


def _env_word(value):
    problem = env_word_problem(value)
    if problem:
        raise FormatError(f"a build source is not {problem}")
    return value


def templates(folder) -> jinja2.Environment:
    """Jinja for the role's templates: ``tojson`` for compose values (JSON is YAML, and a
    line break stays inside the quotes), ``sh`` for Dockerfile words that reach a shell."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters["sh"] = shell_word
    environment.filters["torch_command"] = _torch_command
    environment.filters["env_word"] = _env_word
    return environment
