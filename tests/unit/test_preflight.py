"""
Hardware preflight (roles/preflight): parsing real captured outputs, the backend decision, the
report, the `explain` command line, and the deploy against pyinfra's @fake connector.

The fixture cases under tests/fixtures/preflight/<case>/ hold real outputs (see each SOURCE file)
and an expected.json with the decision they must produce.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from roles import preflight
from roles.preflight import decide, facts as facts_module, parse, split_sections
from roles.preflight.__main__ import load_dir, main
from roles.preflight.decide import rocm_status
from tests.unit.fakehost import REPO, FakeHost, plan

CASES = REPO / "tests" / "fixtures" / "preflight"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "expected.json").is_file())
SEED = CASES / "seed-server-rx460-x5670"


def facts_of(case: str) -> dict:
    return parse(load_dir(CASES / case))


def check(decision, expected: dict) -> None:
    """The decision matches an expected.json entry (exact where given, substrings for texts)."""
    assert decision.backend == expected["backend"], decision.reasons
    for key in ("env", "webui_args", "cpu_threads", "torch_build"):
        if key in expected:
            assert getattr(decision, key) == expected[key], (key, decision.reasons)
    if "gpu" in expected:
        if expected["gpu"] is None:
            assert decision.gpu is None
        else:
            assert decision.gpu is not None
            for key, value in expected["gpu"].items():
                assert decision.gpu[key] == value, (key, decision.gpu)
    reasons, warnings = "\n".join(decision.reasons), "\n".join(decision.warnings)
    for text in expected.get("reasons_contain", []):
        assert text in reasons, (text, reasons)
    for text in expected.get("reasons_lack", []):
        assert text not in reasons, (text, reasons)
    for text in expected.get("warnings_contain", []):
        assert text in warnings, (text, warnings)
    for text in expected.get("warnings_lack", []):
        assert text not in warnings, (text, warnings)


# --- the fixture cases ---------------------------------------------------------------------------


def test_there_are_enough_cases():
    assert len(CASE_NAMES) >= 40
    for name in CASE_NAMES:
        assert (CASES / name / "SOURCE").is_file(), f"{name} has no SOURCE"
        source = (CASES / name / "SOURCE").read_text()
        # Where it came from: a public URL, the search index's id of a public file, the
        # seed story, or the project's own machine.
        assert re.search(r"https://|index\s+id\s+\d+|shared/seed|this project was developed on",
                         source), name


@pytest.mark.parametrize("case", CASE_NAMES)
def test_case_decision(case):
    expected = json.loads((CASES / case / "expected.json").read_text())
    check(decide(facts_of(case)), expected)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_case_variants(case):
    expected = json.loads((CASES / case / "expected.json").read_text())
    for variant in expected.get("variants", []):
        decision = decide(facts_of(case), requested=variant.get("accelerator", "auto"),
                          rocm_release=variant.get("rocm_release", "5.3"),
                          cuda_build=variant.get("cuda_build", "auto"))
        check(decision, variant)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_case_report_renders(case):
    found = facts_of(case)
    decision = decide(found)
    text = preflight.report(case, decision, found)
    assert text.startswith(f"Hardware preflight: {case}")
    assert f"Backend: {decision.backend}" in text
    for reason in decision.reasons:
        assert reason in text


# --- the seed story --------------------------------------------------------------------------


def test_seed_server_is_none_for_both_reasons():
    found = facts_of(SEED.name)
    gpu = found["gpus"][0]
    assert gpu["pci_id"] == "1002:67ef"  # lspci without -nn: the ID comes from the kfd line
    assert gpu["atomics_reqen"] is False
    assert found["kfd"]["rejected"] == ["1002:67ef"]
    assert found["rocminfo"]["cpu_agents"] == 2 and found["rocminfo"]["gpu_agents"] == []
    assert found["cpu"]["flags"]["avx"] is False
    assert (found["cpu"]["sockets"], found["cpu"]["cores"], found["cpu"]["threads"]) == (2, 12, 24)
    decision = decide(found)
    assert decision.backend == "none" and not decision.deployable
    atomics = [r for r in decision.reasons if "PCI rejects atomics" in r]
    avx = [r for r in decision.reasons if "lacks AVX" in r]
    assert atomics and avx
    assert "gfx803" in atomics[0] and "08:00.0" in atomics[0]


def test_atomics_without_dmesg_warn_instead_of_deciding():
    sections = load_dir(SEED)
    del sections["dmesg"]
    del sections["rocminfo"]
    found = parse(sections)
    decision = decide(found, requested="rocm")
    assert decision.gpu["pcie_atomics"] == "unknown"
    assert not any("PCI rejects atomics" in r for r in decision.reasons)
    assert any("could not be confirmed" in w and "ReqEn-" in w for w in decision.warnings)


def test_dmesg_not_readable_is_a_fact_not_an_error():
    sections = load_dir(SEED)
    sections["dmesg"] = "#! unavailable dmesg"
    found = parse(sections)
    assert found["kfd"]["readable"] is False
    assert "dmesg not readable" in preflight.report("h", decide(found), found)


def test_older_kernel_atomics_message():
    # kfd's message before the "amdgpu:" prefix and the version numbers (ROCm issue thread, 2019).
    found = parse({"dmesg": "[    1.114805] kfd kfd: skipped device 1002:67ef, PCI rejects atomics",
                   "lspci-nn": "01:00.0 VGA compatible controller [0300]: Advanced Micro Devices, "
                               "Inc. [AMD/ATI] Baffin [Radeon RX 460/560D / Pro 450/455/460/555/"
                               "555X/560/560X] [1002:67ef] (rev e5)"})
    assert found["kfd"]["rejected"] == ["1002:67ef"]
    decision = decide(found, requested="rocm")
    assert decision.gpu["pcie_atomics"] == "rejected"


# --- what users paste: filtered, cut, re-wrapped ---------------------------------------------

RX6700XT = CASES / "rx6700xt-ryzen3700x" / "rocminfo.txt"


def test_rocminfo_filtered_by_grep_still_lists_the_gpu():
    # What `rocminfo | grep -E "Name|Marketing Name"` prints on that host: the real filter
    # applied to its real output.
    text = RX6700XT.read_text()
    filtered = "\n".join(line for line in text.splitlines()
                          if re.search(r"Name|Marketing Name", line))
    info = facts_module.parse_rocminfo(filtered)
    assert [a["name"] for a in info["gpu_agents"]] == ["gfx1031"]
    assert info["gpu_agents"][0]["marketing_name"] == "AMD Radeon RX 6700 XT"
    assert info["complete"] is False
    decision = decide(parse({"rocminfo": filtered}))
    assert decision.backend == "rocm" and decision.gpu["target"] == "gfx1031"


def test_rocminfo_without_agent_headers_keeps_agents_apart():
    # A paste whose "Agent N" headers and ******* separators were lost.
    text = "\n".join(line for line in RX6700XT.read_text().splitlines()
                     if not re.fullmatch(r"\s*(Agent \d+|\*+)\s*", line))
    info = facts_module.parse_rocminfo(text)
    assert [a["type"] for a in info["agents"]] == ["CPU", "GPU"]
    assert info["gpu_agents"][0]["chip_id"] == "73df"


def test_rocminfo_grep_gfx_alone_is_a_gpu_agent():
    # `rocminfo | grep gfx`: the agent's Name and its ISA name.
    text = "\n".join(line for line in RX6700XT.read_text().splitlines() if "gfx" in line)
    info = facts_module.parse_rocminfo(text)
    assert [a["name"] for a in info["gpu_agents"]] == ["gfx1031"]
    isa_only = "\n".join(line for line in text.splitlines() if "amdgcn" in line)
    assert [a["name"] for a in facts_module.parse_rocminfo(isa_only)["gpu_agents"]] == ["gfx1031"]


def test_a_cut_rocminfo_never_says_cpu_agents_only():
    # The seed's rocminfo, cut before its end: no GPU agent in the part kept proves nothing.
    whole = (SEED / "rocminfo.txt").read_text()
    cut = whole[:whole.index("Agent 2")]
    for text, claimed in ((whole, True), (cut, False)):
        sections = load_dir(SEED)
        sections["rocminfo"] = text
        del sections["dmesg"]
        found = parse(sections)
        assert found["rocminfo"]["complete"] is claimed
        decision = decide(found, requested="rocm")
        reasons = "\n".join(decision.reasons + decision.warnings)
        assert ("rocminfo lists CPU agents only" in reasons) is claimed
        assert ("CPU agents only" in preflight.report("h", decision, found)) is claimed


def test_lspci_lines_indented_or_rewrapped_by_a_paste():
    line = (CASES / "rtx2060-lspci-only" / "lspci-nn.txt").read_text().splitlines()[0]
    assert facts_module.parse_lspci(line)[0]["device_id"] == "1f08"
    indented = facts_module.parse_lspci("    " + line)
    assert indented[0]["device_id"] == "1f08" and indented[0]["slot"] == "01:00.0"
    import textwrap
    wrapped = "\n".join(textwrap.wrap(line, 60))
    assert wrapped.count("\n") >= 1
    devices = facts_module.parse_lspci(wrapped)
    assert [(d["slot"], d["vendor_id"], d["device_id"]) for d in devices] == \
        [("01:00.0", "10de", "1f08")]


def test_the_kernel_log_alone_names_the_card_and_the_reason():
    found = facts_of("rx580-x58-kfd-line-only")
    assert [(g["pci_id"], g["slot"], g["sources"]) for g in found["gpus"]] == \
        [("1002:67df", None, ["dmesg"])]
    # amdgpu's modesetting line names the chip; a later kfd line for the same ID is one GPU.
    text = (CASES / "rx580-dmesg-modesetting" / "dmesg.txt").read_text()
    found = parse({"dmesg": text + "\n[    7.0] kfd kfd: amdgpu: skipped device 1002:67df, "
                                   "PCI rejects atomics 730<0"})
    assert [(g["pci_id"], g["chip"]) for g in found["gpus"]] == [("1002:67df", "POLARIS10")]
    assert decide(found, requested="rocm").gpu["pcie_atomics"] == "rejected"


def test_rocminfo_chip_id_and_lspci_are_one_gpu():
    sections = {"rocminfo": RX6700XT.read_text(),
                "lspci-nn": "28:00.0 VGA compatible controller [0300]: Advanced Micro Devices, "
                            "Inc. [AMD/ATI] Navi 22 [Radeon RX 6700/6700 XT/6750 XT / 6800M/"
                            "6850M XT] [1002:73df] (rev c1)"}
    found = parse(sections)
    assert len(found["gpus"]) == 1
    assert found["gpus"][0]["sources"] == ["lspci-nn", "rocminfo"]


# --- explicit settings -----------------------------------------------------------------------


def test_explicit_accelerator_wins_with_a_warning():
    found = facts_of("xeon-e5-2680v3-cpu-server")
    decision = decide(found, requested="cuda")
    assert decision.backend == "cuda"
    assert "accelerator: cuda is set for this host (auto would pick cpu)" in decision.reasons
    assert any("no NVIDIA GPU was found" in w for w in decision.warnings)
    decision = decide(facts_of("rx6700xt-ryzen3700x"), requested="cpu")
    assert decision.backend == "cpu" and decision.gpu is None


def test_unknown_accelerator_is_refused():
    with pytest.raises(ValueError):
        decide(parse({}), requested="tpu")


# --- missing tools -----------------------------------------------------------------------------


def test_nothing_known_is_not_an_error():
    found = parse({})
    assert found["gpus"] == [] and found["cpu"]["flags"]["avx"] is None
    decision = decide(found)
    assert decision.backend == "cpu"
    assert any("CPU flags unknown" in w for w in decision.warnings)
    assert any("lspci not available" in w for w in decision.warnings)
    assert preflight.HardwareFacts.default()["sections"]["lspci-nn"] == "absent"


def test_missing_tool_notes():
    output = "\n".join(["### lspci-nn", "#! missing lspci", "### rocminfo", "#! missing rocminfo",
                        "### nvidia-smi", "#! missing nvidia-smi", "### dmesg",
                        "#! unavailable dmesg"])
    found = parse(split_sections(output))
    assert found["sections"]["lspci-nn"] == "missing"
    assert found["sections"]["meminfo"] == "absent"
    assert found["rocminfo"]["present"] is False and found["nvidia_smi"]["present"] is False
    assert found["kfd"]["readable"] is False


# --- parsers on their own --------------------------------------------------------------------


def test_proc_cpuinfo_topology():
    text = (CASES / "debian12-vm-live" / "cpuinfo.txt").read_text()
    cpu = facts_module.parse_cpu(text)
    assert (cpu["threads"], cpu["cores"], cpu["sockets"]) == (2, 2, 1)
    assert cpu["flags"]["avx"] is True and cpu["arch"] == "x86_64"


def test_nvidia_smi_csv_and_table():
    # The query the live command adds after the table (format of nvidia-smi --query-gpu).
    text = "\n".join([
        (CASES / "seed-laptop-gtx950m" / "nvidia-smi.txt").read_text(),
        "index, name, memory.total [MiB], driver_version, pci.bus_id",
        "0, GeForce GTX 950M, 2004 MiB, 418.67, 00000000:01:00.0",
    ])
    smi = facts_module.parse_nvidia_smi(text)
    assert smi["driver"] == "418.67" and smi["cuda"] == "10.0"
    assert smi["gpus"] == [{"index": 0, "name": "GeForce GTX 950M", "memory_mib": 2004,
                            "bus_id": "01:00.0"}]


def test_low_ram_and_disk_warnings():
    # meminfo line as captured on an 8 GB machine; df rows as the live command prints them.
    found = parse({
        "cpuinfo": (CASES / "xeon-e5-2680v3-cpu-server" / "cpuinfo.txt").read_text(),
        "meminfo": "MemTotal:        8048992 kB\nMemAvailable:    5631108 kB",
        "df": "#! df stack /opt\n/dev/sda1  30830592 20000000 9258496  69% /\n"
              "#! df docker /var/lib\n/dev/sda1  30830592 20000000 9258496  69% /",
    })
    assert found["memory"]["total_gb"] == 7.7
    assert found["disk"]["stack"]["free_gb"] == 8.8 and found["disk"]["stack"]["path"] == "/opt"
    decision = decide(found)
    warnings = "\n".join(decision.warnings)
    assert "RAM 7.7 GB is under 16 GB" in warnings
    assert "free disk 8.8 GB on / (stack and Docker data) is under 18 GB" in warnings
    assert "RAM" not in "\n".join(decide(found, min_ram_gb=4).warnings)


def test_df_longest_mount_prefix_without_notes():
    df = ("Filesystem     1024-blocks      Used Available Capacity Mounted on\n"
          "/dev/sda1         30830592  20000000   9258496      69% /\n"
          "/dev/sdb1        976284628 100000000 876284628      11% /var/lib/docker\n")
    disk = facts_module.parse_df(df)
    assert disk["docker"]["mount"] == "/var/lib/docker" and disk["stack"]["mount"] == "/"


def test_one_df_for_both_paths():
    # The live command: each label's nearest existing directory, one df for both, each row to
    # its label, on different mounts and on the same one.
    def disk(stack: str, docker: str) -> dict:
        command = facts_module.command(stack_dir=stack, docker_dir=docker)
        proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
        sections = split_sections(proc.stdout)
        assert sections["df"].count("#! df ") == 2 and command.count("df -Pk") == 1
        return parse(sections, stack_dir=stack, docker_dir=docker)["disk"]

    found = disk("/nonexistent/sdinfra/stack", "/proc/sdinfra-none/docker")
    assert (found["stack"]["path"], found["stack"]["mount"]) == ("/", "/")
    assert (found["docker"]["path"], found["docker"]["mount"]) == ("/proc", "/proc")
    found = disk("/proc/sdinfra-none/stack", "/nonexistent/sdinfra/docker")
    assert (found["stack"]["mount"], found["docker"]["mount"]) == ("/proc", "/")
    found = disk("/nonexistent/a", "/nonexistent/b")
    assert found["stack"] == found["docker"] and found["stack"]["path"] == "/"


def test_df_rows_follow_their_notes_in_order():
    header = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n"
    root = "/dev/sda1         30830592  20000000   9258496      69% /\n"
    data = "/dev/sdb1        976284628 100000000 876284628      11% /data\n"
    both = "#! df stack /opt\n#! df docker /data\n" + header
    disk = facts_module.parse_df(both + root + data)
    assert (disk["stack"]["mount"], disk["stack"]["path"]) == ("/", "/opt")
    assert (disk["docker"]["mount"], disk["docker"]["path"]) == ("/data", "/data")
    # The same mount twice (both paths on /).
    disk = facts_module.parse_df("#! df stack /opt\n#! df docker /var/lib\n" + header + root
                                 + root)
    assert (disk["docker"]["mount"], disk["docker"]["path"]) == ("/", "/var/lib")
    # df printed no row for one path: which row is whose is not known, so each directory gets
    # the mount that is the longest prefix of it, not the other's row.
    disk = facts_module.parse_df(both + data, docker_dir="/data/docker")
    assert disk["stack"] is None
    assert (disk["docker"]["mount"], disk["docker"]["path"]) == ("/data", "/data/docker")
    # The earlier layout, a note before each df's own rows (the fixtures' df.txt), still reads.
    disk = facts_module.parse_df("#! df stack /opt\n" + header + data + "#! df docker /var\n"
                                 + header + root)
    assert (disk["stack"]["mount"], disk["docker"]["mount"]) == ("/data", "/")


def test_override_target_names():
    from roles.preflight.decide import override_target
    assert override_target("10.3.0") == "gfx1030"
    assert override_target("9.0.0") == "gfx900"
    assert override_target("11.0.0") == "gfx1100"


def test_gpus_yml_covers_the_issue_list():
    data = preflight.load_gpus()
    for pci_id in ("1002:67ef", "1002:67df", "1002:7300", "1002:687f", "1002:66af", "1002:731f",
                   "1002:73df", "1002:73bf", "1002:744c", "1002:1636", "1002:1638", "10de:139a",
                   "10de:1c03", "10de:1b81", "10de:1b80", "10de:1f08", "10de:2503", "10de:2504",
                   "10de:2487", "10de:2206", "10de:2684"):
        entry = data["devices"][pci_id]
        family = data["families"][entry["family"]]
        assert family["vendor"] == ("amd" if pci_id.startswith("1002") else "nvidia")
        if family["vendor"] == "amd":
            assert rocm_status(family, data)[0] != "unknown"
        else:
            assert family["compute_capability"] > 0
    for key, family in data["families"].items():
        assert family.get("source") and (family.get("chips") or family.get("products")), key


# --- the fact's one command -------------------------------------------------------------------


def test_the_fact_is_one_command_with_every_section():
    command = preflight.HardwareFacts().command()
    assert isinstance(command, str) and "\n" not in command
    for name in facts_module.SECTIONS:  # meminfo's marker comes from cpuinfo's awk
        assert f"sec {name};" in command or f'print "### {name}"' in command, name
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    sections = split_sections(proc.stdout)
    assert set(sections) == set(facts_module.SECTIONS)
    found = preflight.HardwareFacts().process(proc.stdout.splitlines())
    assert found["cpu"]["threads"] and found["memory"]["total_gb"]


@pytest.mark.parametrize("rows,kept,cut", [(2, 3, False), (16, 17, False), (400, 50, True)])
def test_nvidia_smi_output_is_bounded_without_a_process_when_short(tmp_path, rows, kept, cut):
    # A stand-in nvidia-smi printing its csv header and a row per GPU, exiting 0; and a `head`
    # that leaves a mark: a normal answer is printed whole by the shell, a flood cut to 50 lines.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    row = "{}, NVIDIA GeForce RTX 3060, 12288 MiB, 535.104.05, 00000000:{:02X}:00.0"
    (tmp_path / "smi.txt").write_text(
        "index, name, memory.total [MiB], driver_version, pci.bus_id\n"
        + "".join(row.format(i, i % 256) + "\n" for i in range(rows)))
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\ncat {tmp_path}/smi.txt\n")
    (bin_dir / "head").write_text(f'#!/bin/sh\ntouch {tmp_path}/head\nexec /usr/bin/head "$@"\n')
    for name in ("nvidia-smi", "head"):
        (bin_dir / name).chmod(0o755)
    proc = subprocess.run(["sh", "-c", facts_module.command()], capture_output=True, text=True,
                          timeout=60, env={"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"})
    body, notes = facts_module.split_notes(split_sections(proc.stdout)["nvidia-smi"])
    assert body == (tmp_path / "smi.txt").read_text().splitlines()[:kept]
    assert notes == ["exit 0"]
    assert (tmp_path / "head").exists() is cut
    smi = parse(split_sections(proc.stdout))["nvidia_smi"]
    assert len(smi["gpus"]) == kept - 1 and smi["driver"] == "535.104.05"


def test_the_command_quotes_odd_stack_paths():
    command = facts_module.command(stack_dir="/srv/my stack's dir")
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    found = parse(split_sections(proc.stdout))
    assert found["disk"]["stack"]["path"] == "/srv" or found["disk"]["stack"]["path"] == "/"



def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


FAKE_HOST = pytest.mark.skipif(
    not Path("/sys/bus/pci/devices").is_dir() or Path("/dev/kfd").exists()
    or Path("/opt/rocm/bin/rocminfo").exists() or not _can_unshare(),
    reason="needs a PCI list, no /dev/kfd or /opt/rocm, and unshare")


def on_fake_host(tmp_path: Path, devices: list[tuple[str, str]], rocminfo: str | None = None,
                 rocminfo_rc: int = 0, dmesg: str = "") -> tuple[dict[str, str], bool]:
    """
    The real command in a mount namespace whose PCI list is ``devices`` ((vendor, class) pairs),
    with stand-ins that print ``rocminfo`` (not installed when None) and exit ``rocminfo_rc``,
    print the kernel log ``dmesg`` and leave a mark when it runs, and a mokutil (Secure Boot is
    asked where an AMD GPU may be). Returns the sections and whether dmesg ran.
    """
    pci = tmp_path / "pci"
    pci.mkdir()
    for i, (vendor, cls) in enumerate(devices):
        (pci / f"0000:{i:02x}:00.0").mkdir()
        (pci / f"0000:{i:02x}:00.0" / "vendor").write_text(vendor + "\n")
        (pci / f"0000:{i:02x}:00.0" / "class").write_text(cls + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "dmesg.txt").write_text(dmesg)
    programs = {"dmesg": f"touch {tmp_path}/read\ncat {tmp_path}/dmesg.txt\n",
                "mokutil": "echo 'SecureBoot disabled'\n"}
    if rocminfo is not None:
        (tmp_path / "rocminfo.txt").write_text(rocminfo)
        programs["rocminfo"] = f"cat {tmp_path}/rocminfo.txt\nexit {rocminfo_rc}\n"
    for name, body in programs.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "run.sh"
    script.write_text(f"mount --bind {pci} /sys/bus/pci/devices && exec sh -c "
                      + shlex.quote(facts_module.command()) + "\n")
    proc = subprocess.run(["unshare", "-rm", "sh", str(script)], capture_output=True, text=True,
                          timeout=60, env={"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return split_sections(proc.stdout), (tmp_path / "read").exists()


INTEL_BRIDGE, AMD_VGA, AMD_AUDIO = ("0x8086", "0x060400"), ("0x1002", "0x030000"), \
    ("0x1002", "0x040300")
NVIDIA_VGA = ("0x10de", "0x030000")
KFD_ADDED = "[    2.5] kfd kfd: amdgpu: added device 1002:73df\n"


@FAKE_HOST
@pytest.mark.parametrize("devices,reads_the_log", [([INTEL_BRIDGE, NVIDIA_VGA], False),
                                                   ([INTEL_BRIDGE, AMD_VGA], True)])
def test_the_kernel_log_is_read_only_where_an_amd_gpu_can_be(tmp_path, devices, reads_the_log):
    sections, read = on_fake_host(tmp_path, devices, dmesg=KFD_ADDED)
    assert read == reads_the_log
    kfd = parse(sections)["kfd"]
    assert kfd["added"] == (["1002:73df"] if reads_the_log else [])
    # Secure Boot is asked where an AMD GPU may be, nowhere else.
    assert sections["secureboot"].strip() == ("SecureBoot disabled" if reads_the_log else "")


def _gpu_agents(text: str) -> int:
    return len(facts_module.parse_rocminfo(text)["gpu_agents"])


ROCMINFO_1_GPU = (CASES / "rx580-gfx803-rocminfo" / "rocminfo.txt").read_text()
ROCMINFO_2_GPUS = (CASES / "rx7900xtx-rx6900xt-rocminfo" / "rocminfo.txt").read_text()
ROCMINFO_CPU_ONLY = (SEED / "rocminfo.txt").read_text()
ROCMINFO_FAILED = (CASES / "rx7600xt-rocminfo-out-of-resources" / "rocminfo.txt").read_text()


@FAKE_HOST
@pytest.mark.parametrize("devices,rocminfo,rc,skips", [
    # rocminfo lists a GPU agent for the one AMD GPU (its HDMI audio is no GPU): not read.
    ([INTEL_BRIDGE, AMD_VGA, AMD_AUDIO], ROCMINFO_1_GPU, 0, True),
    ([AMD_VGA, AMD_VGA, NVIDIA_VGA], ROCMINFO_2_GPUS, 0, True),
    # A second AMD GPU without an agent: kfd may have skipped it (its verdict is in the log).
    ([AMD_VGA, AMD_VGA], ROCMINFO_1_GPU, 0, False),
    # No rocminfo, a failed one, one that lists CPU agents only: the log is read.
    ([AMD_VGA], None, 0, False),
    ([AMD_VGA], ROCMINFO_FAILED, 1, False),
    ([AMD_VGA], ROCMINFO_CPU_ONLY, 0, False),
    ([AMD_VGA], "", 1, False),
])
def test_the_kernel_log_is_skipped_only_when_rocminfo_lists_every_amd_gpu(
        tmp_path, devices, rocminfo, rc, skips):
    sections, read = on_fake_host(tmp_path, devices, rocminfo, rc, dmesg=KFD_ADDED)
    assert read is not skips
    found = parse(sections)
    assert found["sections"]["dmesg"] == ("skipped" if skips else "present")
    assert (found["kfd"]["added"] == []) is skips
    # The skip is said in the raw output and in the report; $amd still asks Secure Boot.
    assert (facts_module.SKIPPED_NOTE in sections["dmesg"]) is skips
    report = preflight.report("h", decide(found), found)
    assert ("dmesg not read: rocminfo lists a GPU agent for each AMD GPU" in report) is skips
    assert sections["secureboot"].strip() == "SecureBoot disabled"
    # rocminfo's section is what it printed, read before the kernel log and printed after it.
    if rocminfo is None:
        assert found["sections"]["rocminfo"] == "missing"
    else:
        assert sections["rocminfo"].strip() == rocminfo.strip()
        assert found["rocminfo"]["gpu_agents"] == \
            facts_module.parse_rocminfo(rocminfo)["gpu_agents"]
    assert list(split_sections("\n".join(f"### {n}\n{t}" for n, t in sections.items()))) == \
        list(sections)


# Hosts made of real captures: each case's kernel log and rocminfo (tests/fixtures/preflight),
# and three hosts whose log and rocminfo come from two captures of the same hardware.
def _composed_hosts() -> list[tuple[str, dict[str, str]]]:
    hosts = []
    for case in CASE_NAMES:
        sections = load_dir(CASES / case)
        if "dmesg" in sections or "rocminfo" in sections:
            hosts.append((case, sections))
    modesetting = (CASES / "rx580-dmesg-modesetting" / "dmesg.txt").read_text()
    hosts.append(("converged-rx580", {"dmesg": modesetting, "rocminfo": ROCMINFO_1_GPU}))
    hosts.append(("rx570x2-one-agent", {
        "dmesg": (CASES / "rx570x2-kfd-added-and-skipped" / "dmesg.txt").read_text(),
        "rocminfo": ROCMINFO_1_GPU,
        "lspci-nn": "01:00.0 VGA compatible controller [0300]: Advanced Micro Devices, Inc. "
                    "[AMD/ATI] Ellesmere [Radeon RX 470/480/570/570X/580/580X/590] [1002:67df]\n"
                    "02:00.0 VGA compatible controller [0300]: Advanced Micro Devices, Inc. "
                    "[AMD/ATI] Ellesmere [Radeon RX 470/480/570/570X/580/580X/590] [1002:67df]"}))
    hosts.append(("converged-rx7900xtx-rx6900xt", {
        "dmesg": "[    3.1] kfd kfd: amdgpu: added device 1002:744c\n"
                 "[    3.9] kfd kfd: amdgpu: added device 1002:73bf\n"
                 "[    2.2] amdgpu 0000:06:00.0: amdgpu: 24560M of VRAM memory ready\n"
                 "[    2.8] amdgpu 0000:0b:00.0: amdgpu: 16368M of VRAM memory ready",
        "rocminfo": ROCMINFO_2_GPUS}))
    return hosts


@FAKE_HOST
@pytest.mark.parametrize("name,sections", _composed_hosts(), ids=[h[0] for h in
                                                                   _composed_hosts()])
def test_skipping_the_kernel_log_changes_no_decision(tmp_path, name, sections):
    # The host: the AMD GPUs its captures know (one at least: these are AMD hosts), on the PCI
    # list; rocminfo and dmesg print what was captured. Where the command skips the log, the
    # facts it gives decide as the captured log did: for every accelerator setting, the same
    # decision to the letter.
    known = parse(sections)
    amd = len([g for g in known["gpus"] if g["vendor_id"] == "1002" and
               (g["class_id"] or "03").startswith("03")]) or 1
    rocminfo = sections["rocminfo"] if known["sections"]["rocminfo"] == "present" else None
    ran, read = on_fake_host(tmp_path, [INTEL_BRIDGE] + [AMD_VGA] * amd, rocminfo,
                             dmesg=sections.get("dmesg", ""))
    agents = _gpu_agents(rocminfo or "")
    assert read is not (agents > 0 and agents >= amd), (agents, amd)
    if read:
        if name == "rx570x2-one-agent":
            # Why an agent for each AMD GPU, not one agent: here the log's verdict on the second
            # card decides (kfd skipped it, so ROCm sees one GPU and the plan sets no
            # ROCR_VISIBLE_DEVICES; without the log it would).
            without = parse({**sections, "dmesg": f"#! {facts_module.SKIPPED_NOTE}"})
            assert decide(without, requested="rocm").to_json() != \
                decide(known, requested="rocm").to_json()
        return
    skipped = {**sections, "dmesg": ran["dmesg"], "rocminfo": ran["rocminfo"]}
    after = parse(skipped)
    assert after["sections"]["dmesg"] == "skipped"
    for accelerator in ("auto", "rocm", "cpu"):
        assert decide(after, requested=accelerator).to_json() == \
            decide(known, requested=accelerator).to_json(), accelerator
    # The report says the same, but for the kernel's own lines, which the note replaces.
    def lines(found):
        return [line for line in preflight.report(name, decide(found), found).splitlines()
                if not line.startswith("  Kernel") and not line.startswith("  GPU")]
    assert lines(after) == lines(known)
    assert [g["pci_id"] for g in after["gpus"]] == [g["pci_id"] for g in known["gpus"]]


def test_a_pasted_skip_note_reads_as_skipped(tmp_path):
    (tmp_path / "dmesg.txt").write_text(f"#! {facts_module.SKIPPED_NOTE}\n")
    (tmp_path / "rocminfo.txt").write_text(RX6700XT.read_text())
    assert main(["explain", str(tmp_path)]) == 0
    found = parse(load_dir(tmp_path))
    assert found["sections"]["dmesg"] == "skipped" and found["kfd"]["readable"] is None
    assert decide(found).gpu["target"] == "gfx1031"


# --- explain ------------------------------------------------------------------------------------


def run_explain(*args: str):
    return subprocess.run([sys.executable, "-m", "roles.preflight", "explain", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_explain_json_keys():
    proc = run_explain(str(SEED), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == ["backend", "reasons", "env", "webui_args", "warnings", "gpu",
                         "cpu_threads", "torch_build"]
    assert out["backend"] == "none" and out["gpu"] is None
    assert isinstance(out["reasons"], list) and isinstance(out["env"], dict)
    laptop = json.loads(run_explain(str(CASES / "seed-laptop-gtx950m"), "--json").stdout)
    assert laptop["webui_args"] == ["--lowvram"] and laptop["gpu"]["vendor"] == "nvidia"


def test_explain_text_and_accelerator():
    proc = run_explain(str(SEED), "--accelerator", "rocm")
    assert proc.returncode == 0
    assert "Backend: rocm (accelerator: rocm set)" in proc.stdout
    assert "Web UI args: --precision full --no-half --lowvram" in proc.stdout
    # OpenCL's switch, not HIP's: nothing the container runs reads it.
    assert "ROC_ENABLE_PRE_VEGA" not in proc.stdout


def test_explain_bad_dir(tmp_path, capsys):
    proc = run_explain(str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert "no such directory" in proc.stderr and "Traceback" not in proc.stderr
    assert main(["explain", str(tmp_path)]) == 2  # exists but holds no capture
    assert "holds none of" in capsys.readouterr().err


# --- the deploy against pyinfra's @fake connector ---------------------------------------------


def live_output(case: Path) -> list[str]:
    """What the fact's command would print on the host the case was captured from."""
    lines = []
    for name, text in load_dir(case).items():
        lines.append(f"### {name}")
        lines.extend(text.splitlines())
    return lines


def test_deploy_plans_nothing_and_asks_one_command():
    seed = FakeHost("seed").respond("sec lspci-nn;", live_output(SEED))
    laptop = FakeHost("laptop").respond("sec lspci-nn;", live_output(CASES / "seed-laptop-gtx950m"))
    pinned = FakeHost("pinned").set(accelerator="rocm") \
        .respond("sec lspci-nn;", live_output(SEED))
    result = plan("deploy/preflight.py", [seed, laptop, pinned])
    assert result.returncode == 0, result.output[-3000:]
    assert result.changed_hosts() == set()
    for op in result.ops:
        assert op["hosts_with_change"] == []
    for name in ("seed", "laptop", "pinned"):
        asked = result.commands[name]
        assert len(asked) == 1 and "sec lspci-nn;" in asked[0], asked
    def said(host: str, text: str) -> bool:  # pyinfra pads host prefixes to one width
        return re.search(rf"\[@fake/{host}\]\s+{re.escape(text)}", result.output) is not None

    assert said("seed", "Backend: none - not deployed")
    assert said("seed", "- no ROCm on Radeon RX 460/560")
    assert "PCI rejects atomics" in result.output
    assert said("laptop", "Backend: cuda")
    assert said("laptop", "Web UI args: --lowvram")
    assert said("pinned", "Backend: rocm (accelerator: rocm set)")


def test_deploy_refuses_bad_settings_before_any_command():
    host = FakeHost("typo").set(accelerator="tpu").respond("sec lspci-nn;", live_output(SEED))
    result = plan("deploy/preflight.py", [host])
    assert result.returncode != 0
    assert "accelerator = 'tpu'" in result.output
    assert result.commands["typo"] == []


def test_os_release_read_by_the_preflight_gives_the_distribution_as_pyinfra_would():
    from roles import distro, parsers

    text = ('NAME="Linux Mint"\nVERSION="21.2 (Victoria)"\nID=linuxmint\nID_LIKE="ubuntu debian"\n'
            "VERSION_ID='21.2'\nVERSION_CODENAME=victoria\nUBUNTU_CODENAME=jammy\n# a comment\n"
            "not a line\n")
    values = parsers.os_release(text)
    assert values["NAME"] == "Linux Mint" and values["ID_LIKE"] == "ubuntu debian"
    assert values["VERSION_ID"] == "21.2" and "not a line" not in str(values)
    found = distro.from_meta(values)
    assert (found.family, found.ubuntu_codename, found.codename) == ("ubuntu", "jammy", "victoria")


@pytest.mark.parametrize("text", [
    'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n',
    # Blanks, a backslash, an empty line, a last line without its newline: kept as they are.
    '  PRETTY_NAME="A \\\\ B"  \n\nID=x\nVERSION_CODENAME=last',
])
def test_os_release_is_printed_by_the_shell_as_it_is(tmp_path, text):
    # The real command with the file at a test path, in dash (sh) and bash.
    path = tmp_path / "os-release"
    path.write_text(text)
    command = facts_module.command().replace("/etc/os-release", str(path))
    for shell in ("sh", "bash"):
        proc = subprocess.run([shell, "-c", command], capture_output=True, text=True, timeout=60)
        sections = split_sections(proc.stdout)
        assert sections["os-release"].splitlines() == text.splitlines()
        assert "uname" in sections  # the next marker is a line of its own
        assert parse(sections)["os"]["id"] == ("debian" if "debian" in text else "x")
    path.unlink()
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert split_sections(proc.stdout)["os-release"] == f"#! missing {path}"
    assert parse(split_sections(proc.stdout))["sections"]["os-release"] == "missing"


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
@pytest.mark.parametrize("backend", ["cpu", "rocm", "cuda"])
def test_the_build_known_before_the_hardware_is_the_one_decided(case, backend):
    # roles.targets reads the stack's state with the preflight for the image of this build;
    # what it calls certain must be what decide() gives whatever the hardware.
    decided = decide(parse(load_dir(CASES / case)), requested=backend).torch_build
    build, certain = preflight.build_without_hardware(backend)
    if certain:
        assert build == decided
    else:
        assert backend == "cuda" and decided in (build, *preflight.load_gpus()["torch"]["cuda"])
