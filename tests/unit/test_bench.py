"""bench/fleet.py's counts read from the hosts."""

from bench.fleet import KEYS, image_builds

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def test_image_builds_counts_distinct_web_ui_image_ids_across_hosts():
    images = {
        # the builder: its build, and the registry's name it pushed (the same id)
        "cpu1": ("", f"{A} 10.77.9.2:5000/sdinfra/webui:cpu-v1.10.1-0123456789ab\n"
                     f"{A} sdinfra/webui:cpu-v1.10.1-0123456789ab\n"
                     f"{B} python:3.10-slim-bookworm\n"),
        "cpu2": ("", f"{A} sdinfra/webui:cpu-v1.10.1-0123456789ab\n"),  # pulled: the same id
    }
    assert image_builds(images) == 1
    images["cpu2"] = ("", f"{B} sdinfra/webui:cpu-v1.10.1-0123456789ab\n")  # built again
    assert image_builds(images) == 2
    assert image_builds({"cpu1": ("", f"{A} sdinfra/webui-standin:test\n")}) == 0


def test_json_objects_hold_the_issue_s_keys():
    assert KEYS[-2:] == ("internet_bytes", "image_builds")


def test_hosts_cycle_the_backends_asked_for():
    from bench.fleet import names_for

    assert names_for(4) == ["cpu1", "rocm1", "cuda1", "cpu2"]
    assert names_for(3, ("cpu", "rocm")) == ["cpu1", "rocm1", "cpu2"]
