"""deploy/status.py's reading of WebuiStatus's lines (the command itself runs in
tests/e2e/test_health.py against real containers)."""

from roles.status import WebuiStatus, summarize

RUNNING = ["now=1764586000", "service=cpu", "image=sdinfra/webui:cpu-v1.10.1",
           "image_id=sha256:ab12", "state=running", "health=healthy",
           "started=2025-12-01T10:40:00.123456789Z", "restarts=2", "ports=127.0.0.1:7860 ",
           "gpu=False", "model=a.safetensors", "model=b.ckpt", "du=12\t/opt/sd/models",
           "du=4\t/opt/sd/outputs", "free=1000"]


def test_a_running_container_is_reported_with_uptime_gpu_and_disk():
    found = summarize(WebuiStatus().process(RUNNING))
    assert found == {
        "backend": "cpu", "image": "sdinfra/webui:cpu-v1.10.1", "image_id": "sha256:ab12",
        "version": "v1.10.1", "state": "running", "health": "healthy", "uptime_s": 400,
        "restarts": 2, "models": ["a.safetensors", "b.ckpt"], "published": "127.0.0.1:7860",
        "gpu_visible": False, "models_bytes": 12288, "outputs_bytes": 4096,
        "free_bytes": 1024000}


def test_a_stopped_container_or_none_is_not_called_up():
    stopped = [line for line in RUNNING if not line.startswith(("gpu=", "state="))]
    found = summarize(WebuiStatus().process(stopped + ["state=exited"]))
    assert (found["state"], found["uptime_s"], found["gpu_visible"]) == ("exited", None, None)
    nothing = summarize(WebuiStatus().process(["now=1", "free=5"]))
    assert (nothing["state"], nothing["backend"], nothing["models"]) == ("no container", None, [])
    assert summarize(WebuiStatus().process(RUNNING[:-1] + ["gpu=True"]))["gpu_visible"] is True


def test_the_version_is_read_from_the_images_tag():
    from roles.status import version_of

    # A built image's tag: backend, release, the sha256 of the build's files (roles.webui.image_of).
    assert version_of("sdinfra/webui:cpu-v1.10.1-3f2a9c01d4e5") == "v1.10.1"
    assert version_of("sdinfra/webui:rocm-v1.10.0-RC-3f2a9c01d4e5") == "v1.10.0-RC"
    assert version_of("sdinfra/webui:cuda-" + "82a973c0" * 5 + "-3f2a9c01d4e5") == "82a973c0" * 5
    assert version_of("sdinfra/webui:cpu-v1.10.1") == "v1.10.1"  # tagged before the digest
    assert version_of("registry.lan:5000/sd/webui:v2") == "v2"  # prebuilt: its tag
    assert version_of("registry.lan:5000/sd/webui") is None
