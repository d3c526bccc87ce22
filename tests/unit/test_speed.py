"""roles/speed.py: the one patch of pyinfra's behaviour, its guard, and whether it is still needed."""

import os
import typing

import pytest

import roles  # noqa: F401 - applies the patch, as any deploy does
from roles import speed
from pyinfra.api import arguments, facts


def test_global_arguments_are_worked_out_once_and_are_the_same():
    assert arguments.all_global_arguments.sdinfra_cached
    assert facts.all_global_arguments is arguments.all_global_arguments
    expected = list(typing.get_type_hints(arguments.AllArguments).items())
    assert arguments.all_global_arguments() == expected
    arguments.all_global_arguments().clear()  # a caller's change does not reach the next one
    assert arguments.all_global_arguments() == expected


def test_upstream_still_recomputes_the_answer_on_every_call(monkeypatch):
    # When this fails, pyinfra caches the answer itself: remove roles/speed.py's patch.
    original = arguments.all_global_arguments.__wrapped__
    calls = []
    real = typing.get_type_hints

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(arguments, "get_type_hints", counting)
    original()
    original()
    assert len(calls) == 2


@pytest.mark.parametrize("version, applies", [
    ("3.10.0", True), ("3.10.2", True), ("3.10.0.dev1", True),
    ("3.9.2", False), ("3.11.0", False), ("4.0", False), ("nonsense", False),
])
def test_the_patch_applies_only_to_releases_it_was_checked_against(version, applies):
    assert speed.applies(version) is applies


def test_an_unchecked_pyinfra_is_left_as_it_is(monkeypatch):
    monkeypatch.setattr(speed, "applies", lambda version=None: False)
    sentinel = object()
    monkeypatch.setattr(arguments, "all_global_arguments", sentinel)
    assert speed.apply() is False
    assert arguments.all_global_arguments is sentinel


def _package(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("X = 1\n")
    (package / "sub" / "mod.py").write_text("Y = 2\n")
    return package


def test_own_modules_are_compiled_when_only_pyinfra_forbids_it(tmp_path, monkeypatch):
    # pyinfra's CLI sets the flag for the whole process; the shell asked for nothing.
    monkeypatch.setattr("sys.dont_write_bytecode", True)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    package = _package(tmp_path)
    assert speed.keep_bytecode(package)
    compiled = sorted(p.relative_to(package).parts[0] for p in package.rglob("*.pyc"))
    assert compiled == ["__pycache__", "sub"]
    # A module changed since: compiled again, not left stale.
    stale = next((package / "sub" / "__pycache__").glob("mod.*.pyc"))
    before = stale.read_bytes()
    changed = package / "sub" / "mod.py"
    changed.write_text("Y = 3\n")
    os.utime(changed, (changed.stat().st_atime, changed.stat().st_mtime + 10))  # a later edit
    assert speed.keep_bytecode(package)
    assert stale.read_bytes() != before


@pytest.mark.parametrize("flag, env", [(False, None), (True, "1")])
def test_nothing_is_written_when_python_writes_itself_or_the_shell_forbids_it(
        tmp_path, monkeypatch, flag, env):
    monkeypatch.setattr("sys.dont_write_bytecode", flag)
    if env is None:
        monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    else:
        monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", env)
    package = _package(tmp_path)
    assert not speed.keep_bytecode(package)
    assert not list(package.rglob("*.pyc"))


def test_a_folder_that_cannot_be_written_only_costs_speed(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.dont_write_bytecode", True)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    package = _package(tmp_path)
    (package / "__pycache__").write_text("not a folder")  # compileall cannot write there
    assert speed.keep_bytecode(package) is False


# --- settings read once per host and run (roles.settings.read) ---------------------------------

def _pyinfra_host(data: dict):
    from pyinfra.api import Config, Inventory, State

    inventory = Inventory((["h"], data))
    State(inventory, Config())
    return inventory.get_host("h")


def test_a_hosts_settings_are_looked_up_once_and_stay_its_own(monkeypatch):
    from roles.settings import Setting, read

    declared = [Setting("users", ["nobody"], None, ""), Setting("port", 7860, None, "")]
    host = _pyinfra_host({"users": ["alice"]})
    looked = []
    real = type(host.data).get
    monkeypatch.setattr(type(host.data), "get",
                        lambda self, key, default=None: looked.append(key) or real(self, key,
                                                                                    default))
    first = read(host, declared)
    assert first == {"users": ["alice"], "port": 7860}
    first["users"].append("mallory")  # a caller's change reaches no later read
    assert read(host, declared) == {"users": ["alice"], "port": 7860}
    assert looked == ["users", "port"]


def test_what_a_run_sets_on_a_host_or_a_deploy_gives_it_is_read_anew():
    from roles.settings import Setting, read

    declared = [Setting("port", 7860, None, "")]
    host = _pyinfra_host({"port": 1})
    assert read(host, declared) == {"port": 1}
    host.data.port = 2  # pyinfra's way to set a host's data during a run
    assert read(host, declared) == {"port": 2}
    other = _pyinfra_host({})
    with other.deploy("with data", None, {"port": 3}):  # @deploy(data_defaults=...)
        assert read(other, declared) == {"port": 3}
    assert read(other, declared) == {"port": 7860}


def test_pyinfras_current_host_is_read_through_to_its_own_settings():
    from pyinfra import host as current
    from pyinfra.context import ctx_host

    from roles.settings import Setting, read

    declared = [Setting("port", 7860, None, "")]
    one, two = _pyinfra_host({"port": 1}), _pyinfra_host({"port": 2})
    for real, port in ((one, 1), (two, 2), (one, 1)):
        with ctx_host.use(real):
            assert read(current, declared) == {"port": port}
    assert "_sdinfra_data_seen" in vars(one) and "_sdinfra_data_seen" in vars(two)
