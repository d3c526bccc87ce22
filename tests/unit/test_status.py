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
