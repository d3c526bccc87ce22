"""Settings of the webui role: each one a user may set, with its default and what it does."""

import os
import re

from roles.settings import (SHA256, Setting, absolute_path, boolean, integer, list_of, matches,
                            one_of, strings, text)

# AUTOMATIC1111's latest release when this was written; a tag or a full commit, never a branch.
WEBUI_VERSION = "v1.10.1"
VERSION = r"v\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?|[0-9a-f]{40}"

# Flags the settings own: given as extra flags they would bypass the checks made for them.
MANAGED_FLAGS = {
    "--listen": "webui_listen", "--share": "webui_listen", "--port": "webui_port",
    "--gradio-auth": "webui_auth_file or webui_auth_env",
    "--gradio-auth-path": "webui_auth_file or webui_auth_env",
    "--api-auth": "webui_auth_file or webui_auth_env", "--api": "webui_api",
    "--enable-insecure-extension-access": "webui_allow_insecure_extensions",
    "--allow-code": "webui_allow_code", "--lowvram": "webui_vram", "--medvram": "webui_vram",
}


def model_entry(value):
    if not isinstance(value, dict) or set(value) - {"name", "url", "src", "sha256"}:
        return "a mapping with name, sha256 and one of url or src"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(value.get("name", ""))):
        return "a mapping whose name is a plain file name"
    if ("url" in value) == ("src" in value):
        return "a mapping with exactly one of url (download) or src (file on the controller)"
    if not re.fullmatch(SHA256, str(value.get("sha256", ""))):
        return "a mapping with the file's sha256 (64 lower-case hex digits)"
    return None


SETTINGS = [
    Setting("webui_dir", "/opt/stable-diffusion", absolute_path,
            "project directory of the compose stack on the host"),
    Setting("webui_version", WEBUI_VERSION, matches(VERSION, "a release tag like v1.10.1 or a "
                                                    "40-hex commit (never a branch)"),
            "AUTOMATIC1111 release tag or commit the image is built from"),
    Setting("webui_repo_url", "https://github.com/AUTOMATIC1111/stable-diffusion-webui.git",
            matches(r"(https?|git|ssh)://\S+|git@\S+", "a git URL"),
            "git repository the web UI is cloned from (a mirror works)"),
    Setting("webui_port", 7860, integer(1, 65535), "host port the web UI is published on"),
    Setting("webui_listen", False, boolean,
            "publish beyond 127.0.0.1 (the LAN); needs a login (webui_auth_file or webui_auth_env)"),
    Setting("webui_bind_address", "0.0.0.0",
            matches(r"(\d{1,3}\.){3}\d{1,3}", "an IPv4 address"),
            "with webui_listen, the host address to publish on (one LAN interface, or all)"),
    Setting("webui_auth_file", "", lambda v: None if v == "" or (isinstance(v, str) and
            os.path.isabs(v)) else "an absolute path on the controller (or empty)",
            "file on the controller with `user:password` lines for the login; never in inventory"),
    Setting("webui_auth_env", "", matches(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable "
                                          "name", optional=True),
            "environment variable on the controller holding `user:password` for the login"),
    Setting("webui_api", False, boolean, "enable the HTTP API (`--api`, with `--api-auth` when a "
            "login is set)"),
    Setting("webui_allow_insecure_extensions", False, boolean,
            "allow installing extensions from the UI (runs code from the network); warns"),
    Setting("webui_allow_code", False, boolean,
            "allow the UI to run custom Python code (`--allow-code`); warns"),
    Setting("webui_vram", "", one_of("", "low", "med"),
            "`low` adds --lowvram (about 2 GB VRAM), `med` adds --medvram (4-6 GB)"),
    Setting("webui_extra_args", [], strings, "more web UI flags, appended as they are"),
    Setting("webui_cpu_threads", 0, integer(0), "CPU threads for the cpu backend; 0 = all of "
            "the host's"),
    Setting("webui_timezone", "Etc/UTC", matches(r"[A-Za-z_]+(/[A-Za-z0-9_+-]+)*", "a tz name"),
            "TZ of the container"),
    Setting("webui_models", [], list_of(model_entry, "{name, url|src, sha256} mappings"),
            "checkpoints to put into models/Stable-diffusion, each verified by sha256"),
    Setting("webui_torch_command", "", text(),
            "pip command for torch; empty = the pinned build matching the backend"),
    Setting("webui_image", "", text(),
            "use this prebuilt image instead of building (your registry, or webui_image_archive)"),
    Setting("webui_image_archive", "", lambda v: None if v == "" or (isinstance(v, str) and
            os.path.isabs(v)) else "an absolute path on the controller (or empty)",
            "`docker save` archive on the controller, loaded on each host (no registry needed)"),
]


def check(host, values):
    found = []
    if values["webui_listen"] and not (values["webui_auth_file"] or values["webui_auth_env"]):
        found.append("webui_listen = True needs a login: set webui_auth_file or webui_auth_env "
                     "(the web UI would be open to the whole LAN)")
    if values["webui_auth_file"] and not os.path.isfile(values["webui_auth_file"]):
        found.append(f"webui_auth_file = {values['webui_auth_file']!r}: no such file on the "
                     "controller")
    if values["webui_auth_env"] and not os.environ.get(values["webui_auth_env"]):
        found.append(f"webui_auth_env = {values['webui_auth_env']!r}: that environment variable "
                     "is not set on the controller")
    if values["webui_image_archive"]:
        if not values["webui_image"]:
            found.append("webui_image_archive needs webui_image: the image name:tag in the archive")
        if not os.path.isfile(values["webui_image_archive"]):
            found.append(f"webui_image_archive = {values['webui_image_archive']!r}: no such file "
                         "on the controller")
    for flag in values["webui_extra_args"]:
        owner = MANAGED_FLAGS.get(flag.split("=", 1)[0])
        if owner:
            found.append(f"webui_extra_args = {values['webui_extra_args']!r}: {flag} is set "
                         f"through {owner}")
    for model in values["webui_models"]:
        if "src" in model and not os.path.isfile(model["src"]):
            found.append(f"webui_models: {model['name']}: src {model['src']!r} is no file on "
                         "the controller")
    return found
