"""The web UI image's Dockerfile against what the web UI v1.10.1's launcher reads and fetches."""

import re

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from roles.webui import CONSTRAINTS, render
from roles.webui.formats import FormatError
from roles.webui.settings import SETTINGS
from tests.unit.test_webui import values

# modules/launch_utils.py of v1.10.1, prepare_environment(): every variable it reads for a
# repository or a package it fetches, with the release's default (the URL of the one Stability-AI
# deleted included), typed here from the upstream file, not taken from the role.
LAUNCHER = {
    "STABLE_DIFFUSION_REPO": "https://github.com/Stability-AI/stablediffusion.git",
    "STABLE_DIFFUSION_XL_REPO": "https://github.com/Stability-AI/generative-models.git",
    "K_DIFFUSION_REPO": "https://github.com/crowsonkb/k-diffusion.git",
    "BLIP_REPO": "https://github.com/salesforce/BLIP.git",
    "ASSETS_REPO": "https://github.com/AUTOMATIC1111/stable-diffusion-webui-assets.git",
    "STABLE_DIFFUSION_COMMIT_HASH": "cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf",
    "STABLE_DIFFUSION_XL_COMMIT_HASH": "45c443b316737a4ab6e40413d7794a7f5657c19f",
    "K_DIFFUSION_COMMIT_HASH": "ab527a9a6d347f364e3d185ba6d714e22d80cb3c",
    "BLIP_COMMIT_HASH": "48211a1594f1321b00f14c9f7a5b4813144b2fb9",
    "ASSETS_COMMIT_HASH": "6f7db241d2f8ba7457bac5ca9753331f0c266917",
    "CLIP_PACKAGE": "https://github.com/openai/CLIP/archive/"
                    "d50d76daa670286dd6cacf3bcd80b5e4823fc8e1.zip",
    "OPENCLIP_PACKAGE": "https://github.com/mlfoundations/open_clip/archive/"
                        "bb6e834e9c70d9c27d0dc3ecedeebeaeb1ffad6b.zip",
}
# requirements_versions.txt of v1.10.1: what the launcher pip-installs with these pins.
REQUIREMENTS = """setuptools==69.5.1 GitPython==3.1.32 Pillow==9.5.0 accelerate==0.21.0
blendmodes==2022 clean-fid==0.1.35 diskcache==5.6.3 einops==0.4.1 facexlib==0.3.0
fastapi==0.94.0 gradio==3.41.2 httpcore==0.15 inflection==0.5.1 jsonmerge==1.8.0 kornia==0.6.7
lark==1.1.2 numpy==1.26.2 omegaconf==2.2.3 open-clip-torch==2.20.0 piexif==1.1.3
protobuf==3.20.0 psutil==5.9.5 pytorch_lightning==1.9.4 resize-right==0.0.2 safetensors==0.4.2
scikit-image==0.21.0 spandrel==0.3.4 spandrel-extra-arches==0.1.1 tomesd==0.1.3
torchdiffeq==0.2.3 torchsde==0.2.6 transformers==4.30.2 httpx==0.24.1
pillow-avif-plugin==1.4.3""".split()


def env_lines(dockerfile: str) -> dict:
    return dict(re.findall(r"^ENV ([A-Z_]+)=(\S+)$", dockerfile, re.M))


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints() -> dict:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[normal(requirement.name)] = spec.version
    return pins


@pytest.mark.parametrize("backend", ["cpu", "rocm", "cuda"])
def test_every_launcher_source_is_set_in_the_dockerfile(backend):
    env = env_lines(render(values(), backend)[f"Dockerfile.{backend}"])
    assert set(LAUNCHER) <= set(env)
    # The release's own, but for the repository Stability-AI deleted (issues 17204, 17213).
    changed = {name for name in LAUNCHER if env[name] != LAUNCHER[name]}
    assert changed == {"STABLE_DIFFUSION_REPO"}
    assert env["STABLE_DIFFUSION_REPO"] == "https://github.com/w-e-w/stablediffusion.git"


def test_a_mirror_is_one_setting():
    mirror = "https://git.lan.example/mirror/k-diffusion.git"
    commit = "0" * 40
    rendered = render(values(webui_k_diffusion_repo=mirror, webui_blip_commit=commit), "cpu")
    env = env_lines(rendered["Dockerfile.cpu"])
    assert env["K_DIFFUSION_REPO"] == mirror and env["BLIP_COMMIT_HASH"] == commit


def check(name):
    return next(s for s in SETTINGS if s.name == name).check


@pytest.mark.parametrize("name,value", [
    ("webui_blip_commit", "48211a1"),                      # a short id: the launcher checks out
    ("webui_blip_commit", "48211A1594F1321B00F14C9F7A5B4813144B2FB9"),  # what rev-parse prints
    ("webui_blip_commit", "main"),
    ("webui_blip_repo", "https://github.com/x/$HOME.git"),  # Docker's ENV would expand it
    ("webui_blip_repo", "https://github.com/x/a b.git"),
    ("webui_blip_repo", "ext::sh -c touch% /tmp/pwned"),
    ("webui_blip_repo", "file:///etc"),
    ("webui_clip_package", "ftp://mirror/clip.zip"),
    ("webui_clip_package", "https://mirror/clip.zip\nRUN rm -rf /"),
    ("webui_clip_package", "-e https://mirror/clip.zip"),
])
def test_build_sources_of_the_wrong_shape_are_refused(name, value):
    assert check(name)(value)


def test_the_dockerfile_refuses_what_its_env_cannot_carry():
    with pytest.raises(FormatError):
        render({**values(), "webui_blip_repo": "https://x/$HOME"}, "cpu")


@pytest.mark.parametrize("backend", ["cpu", "rocm", "cuda"])
def test_every_pip_run_of_the_build_has_the_constraints(backend):
    rendered = render(values(), backend)
    dockerfile = rendered[f"Dockerfile.{backend}"]
    assert rendered["constraints.txt"] == CONSTRAINTS.read_text()
    assert "COPY constraints.txt /sdinfra/constraints.txt" in dockerfile
    runs = re.findall(r"^RUN ((?:.*\\\n)*.*)$", dockerfile, re.M)
    run = next(block for block in runs if "launch.py" in block)
    steps = [step.strip(" \\\n") for step in run.split("&&")]
    # Exported first in the RUN that installs pip, torch and the launcher's packages: pip reads
    # it, and so do the pip runs it starts for isolated builds (CLIP's setup.py).
    assert steps[0] == "export PIP_CONSTRAINT=/sdinfra/constraints.txt"
    assert steps[1].startswith("python -m pip install") and "--upgrade" not in steps[1]
    assert steps[2:] == ["python -m $TORCH_COMMAND",
                         "python launch.py --skip-torch-cuda-test --exit"]
    assert dockerfile.count("python -m pip") == 1
    assert not re.search(r"^ENV PIP_CONSTRAINT", dockerfile, re.M)  # run time is the user's


def test_constraints_pin_the_release_and_the_build_tooling():
    pins = constraints()
    for line in REQUIREMENTS:
        name, version = line.split("==")
        assert Version(pins[normal(name)]) == Version(version), name
    # CLIP's setup.py imports pkg_resources: setuptools 82 removed it.
    assert Version(pins["setuptools"]) < Version("82")
    assert "pip" in pins and "wheel" in pins
    # What the launcher installs beside the requirements: CLIP's and open_clip's dependencies.
    assert {"ftfy", "regex", "tqdm", "open-clip-torch", "sentencepiece", "timm"} <= set(pins)
    # torch and torchvision are the torch command's (webui_torch_command may choose another).
    assert "torch" not in pins and "torchvision" not in pins


# --- the first start without network -------------------------------------------------------

# FrozenCLIPEmbedder's default `version` (repositories/stable-diffusion-stability-ai,
# ldm/modules/encoders/modules.py; generative-models' sgm/modules/encoders/modules.py): the
# Hugging Face repository an SD 1.x and an SDXL model load ask for by name.
CLIP_NAME = "openai/clip-vit-large-patch14"


def test_the_build_fetches_what_the_first_model_load_asks_hugging_face_for():
    revision = "8d052a0f05efbaefbc9e8786ba291cfdf93e5bff"
    dockerfile = render(values(webui_clip_revision=revision), "cpu")["Dockerfile.cpu"]
    run = next(block for block in re.findall(r"^RUN ((?:.*\\\n)*.*)$", dockerfile, re.M)
               if "CLIPTokenizer" in block)
    code = run.replace("\\\n", "")
    assert "export HF_HOME=/sdinfra/hf-cache" in code and f"CLIP_REVISION={revision}" in code
    assert f"'{CLIP_NAME}'" in code
    # The tokenizer's files and the text encoder's config.json (the weights come from the
    # checkpoint: sd_disable_initialization.py keeps CLIPTextModel from fetching its own).
    assert "CLIPTokenizer.from_pretrained(name, revision=revision)" in code
    assert "CLIPTextConfig.from_pretrained(name, revision=revision)" in code
    # The web UI asks for the name alone: the cache's refs/main must name the revision.
    cache = "/sdinfra/hf-cache/hub/models--openai--clip-vit-large-patch14"
    assert f'printf %s "$CLIP_REVISION" > {cache}/refs/main' in code


def test_the_cache_the_image_brings_lands_where_the_web_ui_looks():
    rendered = render(values(), "cpu")
    env = dict(line.split("=", 1) for line in rendered["webui.env"].splitlines()
               if line and not line.startswith("#"))
    assert env["HF_HOME"] == "'/data/cache/huggingface'"  # in the mounted data directory
    assert "HF_HUB_OFFLINE" not in env  # asked only with webui_hf_offline
    assert 'seed /sdinfra/hf-cache "${HF_HOME:-/data/cache/huggingface}"' in rendered["start.sh"]
    assert "seed /webui/models /data/models" in rendered["start.sh"]
    offline = render(values(webui_hf_offline=True), "cpu")["webui.env"]
    assert "HF_HUB_OFFLINE='1'" in offline and "TRANSFORMERS_OFFLINE='1'" in offline


def test_start_sh_seeds_files_and_links_never_over_what_is_there(tmp_path):
    import subprocess

    start = render(values(), "cpu")["start.sh"]
    seed = start[start.index("seed() {"):start.index("\n}\n") + 3]
    image, data = tmp_path / "image", tmp_path / "data"
    blob = image / "hub/models--x/blobs/abc"
    blob.parent.mkdir(parents=True)
    blob.write_text("tokenizer")
    link = image / "hub/models--x/snapshots/rev/vocab.json"
    link.parent.mkdir(parents=True)
    link.symlink_to("../../blobs/abc")
    (image / "VAE-approx").mkdir()
    (image / "VAE-approx/model.pt").write_text("from the image")
    (data / "VAE-approx").mkdir(parents=True)
    (data / "VAE-approx/model.pt").write_text("the user's")
    result = subprocess.run(["sh", "-c", seed + f'seed "{image}" "{data}"'],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""
    copied = data / "hub/models--x/snapshots/rev/vocab.json"
    assert copied.is_symlink() and copied.read_text() == "tokenizer"
    assert (data / "VAE-approx/model.pt").read_text() == "the user's"


def sent_to_the_daemon(dockerignore: str, paths: list[str]) -> list[str]:
    """The paths of the build context Docker sends, read as moby/patternmatcher reads a
    .dockerignore (patternmatcher.go MatchesOrParentMatches: patterns in order, the last one
    that matches the path or one of its parent directories wins, ``!`` re-includes; a pattern's
    ``*`` is filepath.Match's, within one path element)."""
    import fnmatch

    patterns = [line.strip() for line in dockerignore.splitlines()
                if line.strip() and not line.startswith("#")]
    sent = []
    for path in paths:
        parts = path.split("/")
        excluded = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            elements = pattern.lstrip("!").split("/")
            if any(len(elements) == n and all(fnmatch.fnmatchcase(p, e) for p, e in
                                                zip(parts[:n], elements))
                   for n in range(1, len(parts) + 1)):
                excluded = not negated
        if not excluded:
            sent.append(path)
    return sent


@pytest.mark.parametrize("backend", ["cpu", "rocm", "cuda"])
def test_the_build_context_is_what_the_dockerfile_copies_not_the_models_or_the_login(backend):
    files = render(values(), backend, auth=True)
    copied = {words[1] for line in files[f"Dockerfile.{backend}"].splitlines()
              if (words := line.split()) and words[0] in ("COPY", "ADD")}
    webui_dir = [*files, "models/Stable-diffusion/sd15.safetensors", "outputs/txt2img/1.png",
                 "data/config.json", "secrets/webui-auth", ".sdinfra/previous/webui.env"]
    assert sent_to_the_daemon(files[".dockerignore"], webui_dir) == sorted(copied) == [
        "constraints.txt"]
