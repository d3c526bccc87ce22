"""
Answers kept between runs (roles.shell.kept): the real shell (dash) runs the commands against
stand-in tools that log each run, with KEEP_DIR and the watched paths in the test's folder.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import time

import pytest

from roles import shell
from roles.apt import LIST, DpkgPackages
from roles.preflight import HardwareFacts, split_sections

# The module (roles.preflight's own name "command" is its function).
preflight_command = importlib.import_module("roles.preflight.command")


@pytest.fixture
def keep(tmp_path, monkeypatch):
    """KEEP_DIR under a folder this user owns (as /run is root's), and a watched file."""
    (tmp_path / "run").mkdir()
    folder = tmp_path / "run" / "sdinfra"
    monkeypatch.setattr(shell, "KEEP_DIR", str(folder))
    watched = tmp_path / "status"
    watched.write_text("")
    os.utime(watched, (time.time() - 60, time.time() - 60))
    monkeypatch.setattr(shell, "DPKG_WATCH", (str(watched),))
    monkeypatch.setattr("roles.apt.DPKG_WATCH", (str(watched),))
    monkeypatch.setattr(preflight_command, "KEEP_WATCH", (str(watched),))
    return folder, watched


def tool(tmp_path, name: str, script: str):
    """A stand-in ``name`` on the test's PATH that logs each run to ``runs``, then runs
    ``script``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\necho {name} >> {tmp_path}/runs\n{script}\n")
    (bin_dir / name).chmod(0o755)


def run(tmp_path, command: str) -> str:
    done = subprocess.run(["dash", "-c", command], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{tmp_path}/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def runs(tmp_path) -> list[str]:
    log = tmp_path / "runs"
    found = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return found


def newer(path) -> None:
    os.utime(path, (time.time(), time.time()))


# --- kept, by itself ---------------------------------------------------------------------------

MISS = ('answer=$(ask); printf \'%s\\n\' "$answer"; [ -n "$kf" ] && [ "$answer" != failed ] && '
        'printf \'%s\\n\' "$kk" "$answer" > "$kf" && kw=1; true')


def test_an_answer_is_kept_until_a_watched_file_changes(tmp_path, keep):
    folder, watched = keep
    tool(tmp_path, "ask", "echo 'the answer'")
    command = shell.kept("t", "key $PATH", (str(watched),), MISS)
    assert run(tmp_path, command) == "the answer\n" and runs(tmp_path) == ["ask"]
    assert run(tmp_path, command) == "the answer\n" and runs(tmp_path) == []
    assert (folder / "t").read_text().splitlines() == [f"key {tmp_path}/bin:/usr/sbin:/usr/bin:"
                                                       "/sbin:/bin", "the answer"]
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    # The watched file changed after the answer was kept (both dated back: the next kept file
    # dates from 2 s before its run, and a change in those 2 s is asked again).
    os.utime(folder / "t", (time.time() - 100, time.time() - 100))
    os.utime(watched, (time.time() - 50, time.time() - 50))
    assert run(tmp_path, command) == "the answer\n" and runs(tmp_path) == ["ask"]
    assert run(tmp_path, command) == "the answer\n" and runs(tmp_path) == []
    assert sorted(os.listdir(folder)) == ["t"]  # no stamp or new file left
    newer(watched)  # a change in the last 2 s: asked again, until 2 s have passed
    assert run(tmp_path, command) == "the answer\n" and runs(tmp_path) == ["ask"]


def test_the_kept_file_dates_from_before_the_answer_was_asked(tmp_path, keep):
    # A change while the tool ran (dpkg finishing as dpkg-query reads) must be newer than the
    # kept file, also where the shell compares whole seconds: the file is dated 2 s before.
    folder, watched = keep
    tool(tmp_path, "ask", "sleep 1; echo 'the answer'")
    before = time.time()
    run(tmp_path, shell.kept("t", "key", (str(watched),), MISS))
    assert (folder / "t").stat().st_mtime <= before - 1


def test_another_key_asks_again_and_keeps_the_new_answer(tmp_path, keep):
    _, watched = keep
    tool(tmp_path, "ask", "echo \"answer for $WHICH\"")
    one = shell.kept("t", "key one", (str(watched),), MISS)
    two = shell.kept("t", "key two", (str(watched),), MISS)
    assert run(tmp_path, "export WHICH=1; " + one) == "answer for 1\n"
    assert run(tmp_path, "export WHICH=2; " + two) == "answer for 2\n"
    assert runs(tmp_path) == ["ask"] * 2
    assert run(tmp_path, "export WHICH=3; " + two) == "answer for 2\n" and runs(tmp_path) == []


def test_an_answer_the_miss_does_not_keep_is_asked_each_run(tmp_path, keep):
    folder, watched = keep
    tool(tmp_path, "ask", "echo failed")
    command = shell.kept("t", "key", (str(watched),), MISS)
    for _ in range(2):
        assert run(tmp_path, command) == "failed\n" and runs(tmp_path) == ["ask"]
    assert os.listdir(folder) == []


def test_nothing_is_kept_or_read_by_who_does_not_own_the_folders_parent(tmp_path, keep):
    folder, watched = keep
    tool(tmp_path, "ask", "echo 'the answer'")
    command = shell.kept("t", "key", (str(watched),), MISS)
    run(tmp_path, command)
    runs(tmp_path)
    parent = folder.parent
    if os.geteuid() == 0:  # root owns everything it may write: give /run to somebody else
        os.chown(parent, 65534, 65534)
    else:
        pytest.skip("needs root to hand the folder's parent to another user")
    assert run(tmp_path, command) == "the answer\n" and runs(tmp_path) == ["ask"]


def test_a_kept_file_of_another_user_or_a_linked_folder_is_not_read(tmp_path, keep):
    folder, watched = keep
    tool(tmp_path, "ask", "echo 'the answer'")
    command = shell.kept("t", "key", (str(watched),), MISS)
    folder.mkdir(mode=0o700)
    (folder / "t").write_text("key\nplanted\n")
    if os.geteuid() == 0:
        os.chown(folder / "t", 65534, 65534)
        assert run(tmp_path, command) == "the answer\n" and runs(tmp_path) == ["ask"]
        assert (folder / "t").read_text() == "key\nthe answer\n"  # replaced by its own
    # A folder that is a link (to one holding a planted answer) is neither read nor written.
    shutil.rmtree(folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / "t").write_text("key\nplanted\n")
    folder.symlink_to(elsewhere)
    for _ in range(2):
        assert run(tmp_path, command) == "the answer\n" and runs(tmp_path) == ["ask"]
    assert (elsewhere / "t").read_text() == "key\nplanted\n"


def test_two_runs_at_once_each_print_their_whole_answer(tmp_path, keep):
    # Two runs on one host at once, both asking: each writes a new file of its own (named for
    # its shell's pid) and renames it whole; neither prints nor keeps the other's half.
    folder, watched = keep
    tool(tmp_path, "ask", "echo 'the first half'; sleep 0.5; echo 'the second half'")
    # As the preflight's: the tool writes to the new file while it runs, then it is printed.
    command = shell.kept("t", "key", (str(watched),),
                         "if [ -n \"$kf\" ] && { echo \"$kk\"; ask; } > \"$kf\"; then kw=1; "
                         "{ read -r h; cat; } < \"$kf\"; else ask; fi")
    env = {"PATH": f"{tmp_path}/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    both = []
    for _ in range(2):  # the second starts as the first's tool runs, and ends after it
        both.append(subprocess.Popen(["dash", "-c", command], stdout=subprocess.PIPE,
                                     text=True, env=env))
        time.sleep(0.25)
    for done in both:
        assert done.communicate(timeout=30)[0] == "the first half\nthe second half\n"
    assert (folder / "t").read_text() == "key\nthe first half\nthe second half\n"
    assert os.listdir(folder) == ["t"]


def test_keep_dir_none_is_the_miss_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(shell, "KEEP_DIR", None)
    tool(tmp_path, "ask", "echo 'the answer'")
    command = shell.kept("t", "key", ("/nonexistent",), MISS)
    for _ in range(2):
        assert run(tmp_path, command) == "the answer\n" and runs(tmp_path) == ["ask"]


# --- dpkg-query ------------------------------------------------------------------------------


def test_dpkg_fields_are_kept_until_dpkgs_status_changes(tmp_path, keep):
    _, status = keep
    tool(tmp_path, "dpkg-query", "echo 'Package: rocm-core'; echo 'Status: install ok installed'"
                                 "; echo 'Package: rocminfo' >&2; exit 1")
    command = shell.kept_dpkg(f"{shell.DPKG_FIELDS} rocm-core rocminfo")
    answer = "Package: rocm-core\nStatus: install ok installed\n"
    assert run(tmp_path, command) == answer and runs(tmp_path) == ["dpkg-query"]
    assert run(tmp_path, command) == answer and runs(tmp_path) == []
    newer(status)
    assert run(tmp_path, command) == answer and runs(tmp_path) == ["dpkg-query"]


def test_a_dpkg_query_that_could_not_write_is_not_kept(tmp_path, keep):
    # dpkg-query exits 2 when it cannot write its answer (a full /run): asked again, printed
    # whole, and nothing is kept.
    folder, _ = keep
    tool(tmp_path, "dpkg-query", "echo 'Package: dpkg'; exit 2")
    command = shell.kept_dpkg(f"{shell.DPKG_FIELDS} dpkg")
    assert run(tmp_path, command) == "Package: dpkg\n"
    assert runs(tmp_path) == ["dpkg-query", "dpkg-query"] and os.listdir(folder) == []


def test_the_package_list_is_kept_only_when_no_dpkg_run_was_left_unfinished(tmp_path, keep):
    _, status = keep
    (tmp_path / "listing").write_text("ii  curl 7.88.1-10\n")
    tool(tmp_path, "dpkg-query", f"cat {tmp_path}/listing")
    command = DpkgPackages().command()
    assert f"l=$({LIST})" in command
    fact = DpkgPackages()
    first = fact.process(run(tmp_path, command).splitlines())
    assert runs(tmp_path) == ["dpkg-query"]
    assert fact.process(run(tmp_path, command).splitlines()) == first and runs(tmp_path) == []
    assert first["packages"] == {"curl": {"7.88.1-10"}}
    # dpkg left a package half way: the status changed, and the answer is not kept.
    (tmp_path / "listing").write_text("ii  curl 7.88.1-10\niU  runc 1.1.5\n")
    newer(status)
    for _ in range(2):
        out = run(tmp_path, command)
        assert fact.process(out.splitlines())["interrupted"], out
        assert runs(tmp_path) == ["dpkg-query"]


# --- the preflight ---------------------------------------------------------------------------

SMI = "index, name, memory.total [MiB], driver_version, pci.bus_id\n0, NVIDIA GeForce GTX 950M"


def test_the_preflight_keeps_what_a_boot_fixes_and_reads_the_rest_each_run(tmp_path, keep):
    _, watched = keep
    tool(tmp_path, "nvidia-smi", f"printf '%s\\n' '{SMI}'")
    tool(tmp_path, "lspci", "echo '01:00.0 VGA compatible controller [0300]: NVIDIA [10de:139b]'")
    tool(tmp_path, "mokutil", "echo 'SecureBoot disabled'")
    command = HardwareFacts().command()
    uncached = split_sections(run(tmp_path, preflight_command.command()))
    runs(tmp_path)
    first = split_sections(run(tmp_path, command))
    assert sorted(runs(tmp_path)) == ["lspci", "lspci", "nvidia-smi"]
    second = split_sections(run(tmp_path, command))
    assert runs(tmp_path) == []
    assert set(first) == set(second) == {*preflight_command.SECTIONS, preflight_command.KEPT}
    # The kept sections as they were asked, and as the command prints them uncached.
    for name in ("lspci-nn", "cpuinfo", "nvidia-smi", "uname", "rocminfo", "dmesg"):
        assert first[name] == second[name] == uncached[name], name
    assert "GTX 950M" in second["nvidia-smi"]
    # Memory and disks are read each run: a kept MemAvailable would lie.
    assert "MemAvailable:" in second["meminfo"] and "#! df stack" in second["df"]
    newer(watched)
    split_sections(run(tmp_path, command))
    assert sorted(runs(tmp_path)) == ["lspci", "lspci", "nvidia-smi"]


@pytest.mark.parametrize("failing", [
    ("nvidia-smi", "echo 'NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
                   "driver.'; exit 9"),
    ("rocminfo", "echo 'ROCk module is NOT loaded, possibly no GPU devices'; exit 1"),
])
def test_a_failed_gpu_tool_is_asked_again_next_run(tmp_path, keep, failing):
    name, script = failing
    tool(tmp_path, name, script)
    command = HardwareFacts().command()
    for _ in range(2):
        sections = split_sections(run(tmp_path, command))
        assert name in runs(tmp_path)
        assert os.listdir(keep[0]) == []
    assert "NOT loaded" in sections["rocminfo"] or "failed" in sections["nvidia-smi"]
