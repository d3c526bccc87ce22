"""Settings of the webui role: each one a user may set, with its default and what it does."""

import os
import re

from roles.settings import (SHA256, Setting, boolean, git_url, image_reference, integer, ipv4,
                            list_of, matches, one_of, project_dir, url)
from roles.webui import flags
from roles.webui.formats import env_word_problem, torch_command_problem, word_problem

# AUTOMATIC1111's latest release when this was written; a tag or a full commit, never a branch.
WEBUI_VERSION = "v1.10.1"
VERSION = r"v\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?|[0-9a-f]{40}"
# Linux's largest NR_CPUS (x86_64 Kconfig: 8192 with MAXSMP): no host has more threads.
MAX_CPU_THREADS = 8192


def login_problems(raw: str, api: bool) -> list[str]:
    """Why the login text cannot be read by the web UI (see parse_logins); never a value."""
    return parse_logins(raw, api)[1]


def parse_logins(raw: str, api: bool) -> tuple[list[str], list[str]]:
    """
    (logins, problems) of a login file's text: one ``user:password`` a line, blank lines and
    ``#`` lines skipped. Problems name the line and the rule, never its text. The rules are
    the web UI's readers at v1.10.1: --gradio-auth-path splits each line at commas, then each
    login at its first colon (webui.py, get_gradio_auth_creds); --api-auth splits at commas,
    then each login at every colon into exactly two (modules/api/api.py, Api.__init__:
    ``user, password = auth.split(":")``), and reaches the web UI through COMMANDLINE_ARGS,
    which the launcher splits as a shell would (shlex).
    """
    logins, problems = [], []
    for number, line in enumerate(raw.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, password = line.partition(":")
        if not colon:
            rule = "is not user:password (no colon)"
        elif not user:
            rule = "has an empty user"
        elif not password:
            rule = "has an empty password"
        elif re.search(r"\s", line):
            rule = "holds whitespace (the web UI would split the login there)"
        elif re.search(r"[\x00-\x1f\x7f]", line):
            rule = "holds a control character"
        elif "," in line:
            rule = "holds a comma (the web UI reads a comma as the end of a login)"
        elif api and ":" in password:
            rule = ("has a colon in the password: with webui_api the API splits each login "
                    "at every colon and would not start")
        elif api and re.search(r"[\"'\\]", line):
            rule = ("holds a quote or backslash: with webui_api the login passes through "
                    "COMMANDLINE_ARGS, which the launcher splits as a shell would")
        else:
            logins.append(line)
            continue
        problems.append(f"line {number} {rule}")
    if not logins and not problems:
        problems.append("holds no user:password line")
    return logins, problems


COMMIT = r"[0-9a-f]{40}"

# What the web UI's launcher fetches at v1.10.1 (modules/launch_utils.py, prepare_environment:
# `os.environ.get(NAME, default)`), by the variable it reads: the setting that sets it and its
# default. The defaults are the release's own, but for STABLE_DIFFUSION_REPO: Stability-AI
# deleted github.com/Stability-AI/stablediffusion, and the web UI's maintainers point to the
# w-e-w fork, which holds the same commit (AUTOMATIC1111/stable-diffusion-webui issues 17204,
# 17213). A repository that vanishes next is one setting: a mirror holding the same commit.
LAUNCHER_SOURCES = [
    # (variable, setting, default, what)
    ("STABLE_DIFFUSION_REPO", "webui_stable_diffusion_repo",
     "https://github.com/w-e-w/stablediffusion.git",
     "git repository of Stability-AI's stablediffusion code (SD 1.x/2.x) the launcher clones"),
    ("STABLE_DIFFUSION_COMMIT_HASH", "webui_stable_diffusion_commit",
     "cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf", "its commit"),
    ("STABLE_DIFFUSION_XL_REPO", "webui_stable_diffusion_xl_repo",
     "https://github.com/Stability-AI/generative-models.git",
     "git repository of Stability-AI's generative-models (SDXL) the launcher clones"),
    ("STABLE_DIFFUSION_XL_COMMIT_HASH", "webui_stable_diffusion_xl_commit",
     "45c443b316737a4ab6e40413d7794a7f5657c19f", "its commit"),
    ("K_DIFFUSION_REPO", "webui_k_diffusion_repo", "https://github.com/crowsonkb/k-diffusion.git",
     "git repository of k-diffusion (samplers) the launcher clones"),
    ("K_DIFFUSION_COMMIT_HASH", "webui_k_diffusion_commit",
     "ab527a9a6d347f364e3d185ba6d714e22d80cb3c", "its commit"),
    ("BLIP_REPO", "webui_blip_repo", "https://github.com/salesforce/BLIP.git",
     "git repository of BLIP (the interrogator) the launcher clones"),
    ("BLIP_COMMIT_HASH", "webui_blip_commit", "48211a1594f1321b00f14c9f7a5b4813144b2fb9",
     "its commit"),
    ("ASSETS_REPO", "webui_assets_repo",
     "https://github.com/AUTOMATIC1111/stable-diffusion-webui-assets.git",
     "git repository of the web UI's assets (fonts, scripts) the launcher clones"),
    ("ASSETS_COMMIT_HASH", "webui_assets_commit", "6f7db241d2f8ba7457bac5ca9753331f0c266917",
     "its commit"),
    ("CLIP_PACKAGE", "webui_clip_package",
     "https://github.com/openai/CLIP/archive/d50d76daa670286dd6cacf3bcd80b5e4823fc8e1.zip",
     "pip requirement (an archive URL) for openai's CLIP, built from source"),
    ("OPENCLIP_PACKAGE", "webui_openclip_package",
     "https://github.com/mlfoundations/open_clip/archive/"
     "bb6e834e9c70d9c27d0dc3ecedeebeaeb1ffad6b.zip",
     "pip requirement (an archive URL) for open_clip"),
]


def build_source(kind):
    """A settings check for a LAUNCHER_SOURCES value: a git remote, a 40-hex commit or an
    http(s) archive URL, and a word the Dockerfile's ENV takes as it is."""
    base = {"repo": git_url, "commit": matches(COMMIT, "a full commit id (40 lower-case hex "
                                                       "digits)"), "package": url}[kind]
    return lambda value: base(value) or env_word_problem(value)


def extra_args(value):
    """A settings check: a list of strings (what the flags mean is check()'s, below)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return "a list of strings, like ['--xformers']"
    return None


def controller_file(value):
    if value == "" or (isinstance(value, str) and os.path.isabs(value) and "\n" not in value):
        return None
    return "an absolute path on the controller (or empty)"


def optional(check):
    return lambda value: None if value in (None, "") else check(value)


def model_entry(value):
    if not isinstance(value, dict) or set(value) - {"name", "url", "src", "sha256"}:
        return "a mapping with name, sha256 and one of url or src"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(value.get("name", ""))):
        return "a mapping whose name is a plain file name"
    if ("url" in value) == ("src" in value):
        return "a mapping with exactly one of url (download) or src (file on the controller)"
    if "url" in value and url(value["url"]):
        return f"a mapping whose url is {url(value['url'])}"
    if "src" in value and controller_file(value["src"]):
        return "a mapping whose src is an absolute path on the controller"
    if not re.fullmatch(SHA256, str(value.get("sha256", ""))):
        return "a mapping with the file's sha256 (64 lower-case hex digits)"
    return None


SETTINGS = [
    Setting("webui_dir", "/opt/stable-diffusion", project_dir,
            "project directory of the compose stack on the host"),
    Setting("webui_version", WEBUI_VERSION, matches(VERSION, "a release tag like v1.10.1 or a "
                                                    "40-hex commit (never a branch)"),
            "AUTOMATIC1111 release tag or commit the image is built from"),
    Setting("webui_repo_url", "https://github.com/AUTOMATIC1111/stable-diffusion-webui.git",
            git_url,
            "git repository the web UI is cloned from (a mirror works)"),
    Setting("webui_port", 7860, integer(1, 65535), "host port the web UI is published on"),
    Setting("webui_listen", False, boolean,
            "publish beyond 127.0.0.1 (the LAN); needs a login (webui_auth_file or webui_auth_env)"),
    Setting("webui_bind_address", "0.0.0.0",
            ipv4,
            "with webui_listen, the host address to publish on (one LAN interface, or all)"),
    Setting("webui_auth_file", "", controller_file,
            "file on the controller with `user:password` lines for the login; never in inventory",
            secret=True),
    Setting("webui_auth_env", "", matches(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable "
                                          "name", optional=True),
            "environment variable on the controller holding `user:password` for the login",
            secret=True),
    Setting("webui_api", False, boolean, "enable the HTTP API (`--api`, with `--api-auth` when a "
            "login is set)"),
    Setting("webui_allow_insecure_extensions", False, boolean,
            "allow installing extensions from the UI (runs code from the network); warns"),
    Setting("webui_allow_code", False, boolean,
            "allow the UI to run custom Python code (`--allow-code`); warns"),
    Setting("webui_vram", "", one_of("", "low", "med"),
            "`low` adds --lowvram (about 2 GB VRAM), `med` adds --medvram (4-6 GB)"),
    Setting("webui_extra_args", [], extra_args,
            "more web UI flags, read as the web UI reads them (split like a shell); flags a "
            "setting owns or that expose the host are refused", secret=True),
    Setting("webui_cpu_threads", 0, integer(0, MAX_CPU_THREADS), "CPU threads for the cpu "
            "backend; 0 = the preflight's choice (one per physical core)"),
    Setting("webui_start_timeout", 900, integer(30, 86400),
            "seconds a started container may take to turn healthy (a CPU host loading a 7 GB "
            "checkpoint takes minutes) before the run reports it; an upgrade's new container "
            "is rolled back after it"),
    Setting("webui_timezone", "Etc/UTC", matches(r"[A-Za-z_]+(/[A-Za-z0-9_+-]+)*", "a tz name"),
            "TZ of the container"),
    Setting("webui_models", [], list_of(model_entry, "{name, url|src, sha256} mappings"),
            "checkpoints to put into models/Stable-diffusion, each verified by sha256"),
    Setting("webui_torch_command", "", optional(torch_command_problem),
            "pip command for torch; empty = the pinned build matching the backend"),
    *[Setting(name, default, build_source(name.rsplit("_", 1)[1]),
              f"{what} (`{variable}`)")
      for variable, name, default, what in LAUNCHER_SOURCES],
    Setting("webui_clip_revision", "32bd64288804d66eefd0ccbe215aa642df71cc41",
            matches(COMMIT, "a full commit id (40 lower-case hex digits)"),
            "revision of openai/clip-vit-large-patch14 on Hugging Face whose tokenizer and "
            "config the build puts into the image (the first model load needs them)"),
    Setting("webui_hf_offline", False, boolean,
            "the web UI asks Hugging Face nothing (HF_HUB_OFFLINE): for hosts without "
            "internet, which otherwise retry each cached file ~20 s at start; what the image "
            "did not bring (other models' files) then fails"),
    Setting("webui_image", "", lambda v: image_reference(v, optional=True),
            "use this prebuilt image instead of building (your registry, or webui_image_archive)"),
    Setting("webui_image_archive", "", controller_file,
            "`docker save` archive on the controller, loaded on each host (no registry needed)"),
]


def check(host, values):
    found = []
    login = values["webui_auth_file"] or values["webui_auth_env"]
    if values["webui_listen"] and not login:
        found.append("webui_listen = True needs a login: set webui_auth_file or webui_auth_env "
                     "(the web UI would be open to the whole LAN)")
    if values["webui_auth_file"] and values["webui_auth_env"]:
        found.append("webui_auth_file and webui_auth_env are both set: set one")
    # Neither the path nor the variable's name is printed: a password typed there by mistake
    # would be.
    raw = None
    if values["webui_auth_file"]:
        try:
            with open(values["webui_auth_file"], encoding="utf-8") as handle:
                raw = handle.read()
        except (OSError, UnicodeDecodeError):
            found.append("webui_auth_file: no readable UTF-8 file there on the controller")
    elif values["webui_auth_env"]:
        raw = os.environ.get(values["webui_auth_env"])
        if not raw:
            found.append("webui_auth_env: that environment variable is not set on the "
                         "controller")
    if raw:
        where = "webui_auth_file" if values["webui_auth_file"] else "webui_auth_env's variable"
        found += [f"{where}: {problem}" for problem in login_problems(raw, values["webui_api"])]
    if values["webui_image_archive"]:
        if not values["webui_image"]:
            found.append("webui_image_archive needs webui_image: the image name:tag in the archive")
        if not os.path.isfile(values["webui_image_archive"]):
            found.append(f"webui_image_archive = {values['webui_image_archive']!r}: no such file "
                         "on the controller")
    words, problems = flags.parse(values["webui_extra_args"])
    found += [f"webui_extra_args: {problem}" for problem in problems]
    for number, word in enumerate(words, 1):
        problem = word_problem(word)
        if problem:
            found.append(f"webui_extra_args: word {number} {problem}")
    for model in values["webui_models"]:
        if "src" in model and not os.path.isfile(model["src"]):
            found.append(f"webui_models: {model['name']}: src {model['src']!r} is no file on "
                         "the controller")
    return found
