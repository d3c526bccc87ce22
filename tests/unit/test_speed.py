"""roles/speed.py: the one patch of pyinfra's behaviour, its guard, and whether it is still needed."""

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
