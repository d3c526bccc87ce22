"""
roles.rocm: AMD ROCm on the host, so that the web UI's rocm container can use the GPU.

What the seed did by hand (ROCm 5.3, Ubuntu 22.04), done so that a second run changes nothing:

1. The amdgpu-install package of ``rocm_release`` for the host's Ubuntu codename (read from the
   host; a derivative such as Mint 21 counts as its base, jammy), downloaded to a temporary name,
   checked against a pinned sha256 and only then installed. A host whose installer has no known
   sha256 stops the run before any change.
2. ``amdgpu-install -y --usecase=...`` (``--no-dkms`` unless the kernel module can be built and
   loaded on the running kernel: roles.rocm.driver, ``rocm_dkms``), only while that release is not
   installed; another installed release is left alone with a warning unless
   ``rocm_change_release`` says to replace it. Before anything is installed, a dpkg run left
   interrupted (a run killed in apt-get or amdgpu-install) is finished (``dpkg --configure
   -a``), and an amdgpu-install run that did not finish is run again.
3. The ``render`` group; ``rocm_users`` in ``render`` and ``video``; /etc/adduser.conf giving
   new users both (one ``EXTRA_GROUPS`` line); ``ROC_ENABLE_PRE_VEGA``/``HSA_OVERRIDE_GFX_VERSION``
   in /etc/environment.
4. A reboot when the kernel driver was just installed and ``rocm_allow_reboot`` is set; else the
   run ends naming the hosts that need one (and writes /var/run/reboot-required).
5. ``rocminfo`` must list a ``gfx`` agent; if it lists CPUs only the host fails with the
   kernel's reason (``PCI rejects atomics``: a gfx8 card on a platform without PCIe atomics).

With ``rocm_source: distro`` (Debian 12) steps 1-2 become the distribution's ``rocminfo`` and
``rocm-smi``; the kernel's own amdgpu driver serves the container.

.. code:: python

    from roles import preflight, rocm
    known = preflight.learn()    # roles.hostfacts: what this run learned about the host
    rocm.install(known)
    env = rocm.container_env()   # {"HSA_OVERRIDE_GFX_VERSION": "10.3.0"}: the settings' own

A converged host costs one remote command beside the preflight's: the ``RocmState`` fact.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from io import StringIO

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import files, server

from roles import apt, cache, distro, download, ssh, summary
from roles.hostfacts import HostFacts
from roles.rocm import configfiles, driver, releases
from roles.rocm.facts import (APT_LISTS, GPU_AGENT_ERE, INSTALL_RECORD, REBOOT_MARKER, RocmState,
                              atomics_rejected, gpu_agents, kernel_lines)
from roles.rocm.settings import SETTINGS, VENDOR_REPO
from roles.settings import host_error, read
from roles.shell import ROCMINFO

CACHE = "/var/cache/sdinfra/rocm"
DISTRO_PACKAGES = ["rocminfo", "rocm-smi"]
GPU_GROUPS = configfiles.GPU_GROUPS
KERNEL_PACKAGE = "amdgpu-dkms"


def container_env(values: dict | None = None) -> dict[str, str]:
    """
    Environment the rocm container needs on this host, from the settings.

    .. code:: python

        {"ROC_ENABLE_PRE_VEGA": "1", "HSA_OVERRIDE_GFX_VERSION": "10.3.0"}
    """
    values = values if values is not None else read(host, SETTINGS)
    env = {}
    if values["rocm_pre_vega"]:
        env["ROC_ENABLE_PRE_VEGA"] = "1"
    if values["rocm_hsa_override_gfx_version"]:
        env["HSA_OVERRIDE_GFX_VERSION"] = values["rocm_hsa_override_gfx_version"]
    return env


@dataclass
class InstallPlan:
    """What ``install`` does on one host, decided from its settings, distribution and state."""

    error: str = ""
    warnings: list = field(default_factory=list)
    codename: str = ""  # the Ubuntu codename whose installer the host gets
    version: str = ""  # amdgpu-install package version
    url: str = ""
    deb: str = ""  # where the installer is kept on the host
    sha256: str = ""
    installed: tuple | None = None  # the ROCm release on the host now
    uninstall: bool = False  # remove another release first
    install_installer: bool = False
    run_installer: bool = False
    kernel_driver: bool = False  # this run installs the amdgpu kernel module: reboot after
    distro_packages: list = field(default_factory=list)
    driver: driver.Driver | None = None  # DKMS module or the kernel's own amdgpu, and why


def plan_install(values: dict, os: distro.Distro, state: dict) -> InstallPlan:
    """Pure decision, tested directly: see tests/unit/test_rocm.py."""
    d = InstallPlan()
    unsupported = ""
    d.driver = driver.choose(values["rocm_dkms"], values["rocm_release"], state.get("uname"),
                             state.get("sb_state"), values["rocm_source"])
    if values["rocm_source"] == "distro":
        d.distro_packages = [p for p in DISTRO_PACKAGES if p not in state["packages"]]
        return d

    release_text = values["rocm_release"]
    wanted = releases.parse_release(release_text)
    d.version = values["rocm_installer_version"] or releases.installer_version(release_text)
    supported = releases.supported_codenames(wanted)
    d.codename = os.ubuntu_codename
    if d.codename not in supported:
        names = " and ".join(releases.UBUNTU_NAMES.get(c, c) for c in supported) or "no Ubuntu"
        fallback = values["rocm_ubuntu_codename"]
        if not values["rocm_allow_unsupported_distro"]:
            d.error = (
                f"{os.label} is not a distribution amdgpu-install {release_text} supports "
                f"({names}, or a derivative of them); set rocm_source: distro to use the "
                "distribution's rocminfo and rocm-smi with the kernel's amdgpu driver (enough for "
                "the web UI's container), or rocm_allow_unsupported_distro: true to install the "
                f"Ubuntu {fallback} package anyway"
            )
            return d
        unsupported = (f"the Ubuntu {fallback} amdgpu-install {d.version} on {os.label}, which "
                       f"AMD does not support for ROCm {release_text} "
                       "(rocm_allow_unsupported_distro)")
        d.codename = fallback

    d.url = releases.installer_url(values["rocm_installer_url"], values["rocm_repo_url"],
                                   release_text, d.codename, d.version)
    d.deb = f"{CACHE}/{d.codename}/amdgpu-install_{d.version}_all.deb"
    d.installed = (releases.release_of_rocm(state["rocm_version"])
                   or releases.release_of_rocm(state["packages"].get("rocm-core", "")))
    installer_pkg = state["packages"].get("amdgpu-install")
    dkms = d.driver.dkms
    record = state["record"]
    # rocm_dkms: auto keeps what an install chose for the kernel of its day; a forced value
    # that differs runs amdgpu-install again.
    forced = isinstance(values["rocm_dkms"], bool)

    if d.installed is not None and d.installed != wanted:
        older = "older" if d.installed < wanted else "newer"
        if not values["rocm_change_release"]:
            d.warnings.append(
                f"ROCm {releases.show(d.installed)} is installed, {older} than rocm_release "
                f"{release_text}: left as it is; set rocm_change_release: true to remove "
                f"{releases.show(d.installed)} and install {release_text}"
            )
            return d
        if not installer_pkg:
            d.error = (
                f"ROCm {releases.show(d.installed)} is installed, but not by amdgpu-install (no "
                f"amdgpu-install package), so it cannot be removed for {release_text}: remove it "
                "by hand, or set rocm_change_release: false to keep it"
            )
            return d
        d.warnings.append(f"ROCm {releases.show(d.installed)} is removed and {release_text} "
                          "installed (rocm_change_release)")
        d.uninstall = True
        d.install_installer = installer_pkg != d.version
        d.run_installer = True
    elif d.installed == wanted:
        # Installed already. Run amdgpu-install again only when this role installed it with
        # other use cases or without the kernel driver, or its run did not finish (killed: the
        # record still says complete=no); an install by hand is left as it is.
        d.run_installer = bool(record) and (
            record.get("usecases") != ",".join(values["rocm_usecases"])
            or (forced and record.get("dkms") != ("yes" if dkms else "no"))
            or record.get("complete") == "no"
        )
        installed_dkms = record.get("dkms") != "no"
        if record and not forced and installed_dkms != dkms:
            today = d.driver
            dkms = installed_dkms
            d.driver = driver.Driver(dkms, f"as installed; rocm_dkms: auto would now choose "
                                           f"{today.line()}")
            if installed_dkms:
                d.warnings.append(f"amdgpu-dkms was installed for an earlier kernel; now: "
                                  f"{today.reason}. Set rocm_dkms: false to run amdgpu-install "
                                  "--no-dkms (the module stays installed: remove amdgpu-dkms "
                                  "by hand if it fails to build)")
        d.install_installer = d.run_installer and installer_pkg != d.version
    else:
        d.install_installer = installer_pkg != d.version
        d.run_installer = True

    d.kernel_driver = d.run_installer and dkms and (
        d.installed != wanted or record.get("dkms") == "no" or record.get("complete") == "no"
    )
    if d.install_installer:
        d.sha256 = releases.checksum_for(values, release_text, d.codename)
    # Said when it is about to happen, not on every run of a host where it went well.
    if unsupported and (d.install_installer or d.run_installer):
        d.warnings.append(f"installing {unsupported}; amdgpu-install may refuse it or pull "
                          "packages that do not fit")
    return d


def missing_checksum(values: dict, d: InstallPlan) -> str:
    key = releases.checksum_key(values["rocm_release"], d.codename)
    return (
        f"no sha256 is known for {d.url}, so it is not installed: set rocm_installer_sha256 for "
        f"this host, or rocm_installer_sha256s = {{\"{key}\": \"<sha256>\"}} for all hosts "
        f"(`python -m roles.rocm checksums {values['rocm_release']}` downloads the installers on "
        "your machine and prints them)"
    )


def env_assignments(env: dict[str, str]) -> str:
    return " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())


def verify_command(env: dict[str, str]) -> str:
    """
    Fails (exit 1, reason on stderr) unless ``rocminfo`` lists a gfx agent; when the kernel
    skipped the card for lack of PCIe atomics, says so and what it means.
    """
    exports = "".join(f"export {key}={shlex.quote(value)}; " for key, value in env.items())
    missing = shlex.quote("rocminfo is not installed: neither /opt/rocm/bin/rocminfo nor "
                          "rocminfo on PATH")
    atomics = (
        "rocminfo lists CPU agents only: the kernel skipped the GPU (",
        "). A gfx8 card (Polaris RX 460-590, Fiji) needs PCIe atomics, which need a PCIe 3.0 "
        "platform that supports them (Intel Haswell or AMD Zen or newer, the card in a slot "
        "wired to the CPU): ROCm cannot use this card in this machine. Set rocm_verify: false "
        "to go on without it (the web UI then runs on the CPU).",
    )
    no_agent = shlex.quote(
        "rocminfo lists no GPU (gfx) agent. Is the amdgpu driver loaded (lsmod | grep amdgpu), "
        "/dev/kfd there, a reboot after the driver install done? rocminfo said:"
    )
    return "\n".join([
        exports + ROCMINFO,
        f'if [ -z "$R" ]; then echo {missing} >&2; exit 1; fi',
        'out=$(timeout 120 "$R" 2>&1)',
        f"if printf '%s\\n' \"$out\" | grep -Eq {shlex.quote(GPU_AGENT_ERE)}; then exit 0; fi",
        "kfd=$(dmesg 2>/dev/null | grep -i kfd | grep 'rejects atomics' | tail -n 1)",
        'if [ -n "$kfd" ]; then',
        f'  echo {shlex.quote(atomics[0])}"$kfd"{shlex.quote(atomics[1])} >&2',
        "else",
        f"  echo {no_agent} >&2",
        "  printf '%s\\n' \"$out\" | grep -E 'ROCk|rror|Device Type|Name:' | head -n 20 >&2",
        "fi",
        "exit 1",
    ])


def _sed_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("#", "\\#").replace("&", "\\&")


def mirror_command(repo: str) -> str:
    """Point the apt sources amdgpu-install added at ``repo`` instead of repo.radeon.com."""
    expression = shlex.quote(f"s#https\\?://repo\\.radeon\\.com#{_sed_escape(repo.rstrip('/'))}#g")
    return ("for f in /etc/apt/sources.list.d/amdgpu*.list /etc/apt/sources.list.d/rocm*.list; "
            f'do [ -f "$f" ] && sed -i {expression} "$f"; done; true')


def installer_command(values: dict, dkms: bool) -> str:
    flags = [f"--usecase={','.join(values['rocm_usecases'])}"]
    if not dkms:
        flags.append("--no-dkms")
    flags += values["rocm_installer_options"]
    version = values["rocm_installer_version"] or releases.installer_version(values["rocm_release"])
    record = [f"release={values['rocm_release']}", f"installer={version}",
              f"usecases={','.join(values['rocm_usecases'])}",
              f"dkms={'yes' if dkms else 'no'}"]
    lines = " ".join(shlex.quote(line) for line in record)
    # The record says complete=no while amdgpu-install runs: a run killed in it is taken up
    # again by the next one (after dpkg --configure -a), even when part of ROCm is there.
    return (
        "export DEBIAN_FRONTEND=noninteractive; "
        f"install -d -m 0755 {shlex.quote(INSTALL_RECORD.rsplit('/', 1)[0])} && "
        f"printf '%s\\n' {lines} complete=no > {shlex.quote(INSTALL_RECORD)} && "
        "apt-get update -q && "
        f"amdgpu-install -y {' '.join(shlex.quote(f) for f in flags)} && "
        f"printf '%s\\n' {lines} > {shlex.quote(INSTALL_RECORD)}"
    )


REBOOT_MARK_COMMAND = (
    f"echo '*** System restart required ***' > {REBOOT_MARKER} && "
    f"{{ grep -qx {KERNEL_PACKAGE} {REBOOT_MARKER}.pkgs 2>/dev/null || "
    f"echo {KERNEL_PACKAGE} >> {REBOOT_MARKER}.pkgs; }}"
)

def driver_line(known: HostFacts) -> str:
    """The kernel driver this role chooses for ``known``'s host, and why (roles.rocm.driver):
    its rocm_* settings, the running kernel and Secure Boot from the preflight's command."""
    values = read(known.host, SETTINGS)
    setting = values["rocm_dkms"] if isinstance(values["rocm_dkms"], bool) else "auto"
    return driver.choose(setting, str(values["rocm_release"]),
                         known.hardware["os"].get("kernel"),
                         known.section("secureboot") or None, values["rocm_source"]).line()


@deploy("ROCm")
def install(known: HostFacts):
    """Install and verify ROCm on ``known``'s host (the current one), as its rocm_* settings
    say."""
    ssh.low_latency()
    values = read(host, SETTINGS)
    os = known.distro
    env = container_env(values)
    state = _state(values, env, known)
    d = plan_install(values, os, state)
    if d.error:
        raise host_error(d.error)
    for user in values["rocm_users"]:
        if state["users"].get(user) is None:
            raise host_error(f"rocm_users names {user!r}, who has no account there")
    if d.install_installer and not d.sha256:
        raise host_error(missing_checksum(values, d))
    for warning in d.warnings:
        logger.warning(f"{host.print_prefix}{warning}")
    logger.info(f"{host.print_prefix}ROCm kernel driver: {d.driver.line()}")
    summary.detail(f"ROCm kernel driver: {d.driver.line()}")

    _groups_and_files(values, state, env)

    # Decided here, not from the operations' will_change: every one below changes the host.
    changing = bool(d.distro_packages or d.uninstall or d.run_installer)
    if d.distro_packages:
        apt.install(d.distro_packages, known=known)  # finishes an interrupted dpkg run first
    if d.uninstall or d.install_installer or d.run_installer:
        # A run killed in apt-get or amdgpu-install left dpkg interrupted: apt refuses every
        # install until `dpkg --configure -a`. Asked only now, so a converged host is not.
        apt.finish_interrupted(known=known)
    if d.uninstall:
        server.shell(name=f"Remove ROCm {releases.show(d.installed)}",
                     commands=[apt.locked(f"{apt.APT_CONFIG_WAIT}; DEBIAN_FRONTEND=noninteractive "
                                          "amdgpu-install -y --uninstall")])
    if d.install_installer:
        download.fetch(name=f"Download amdgpu-install {d.version} for {d.codename}", url=d.url,
                       dest=d.deb, sha256=d.sha256)
        server.shell(
            name=f"Install amdgpu-install {d.version}",
            commands=[apt.locked("export DEBIAN_FRONTEND=noninteractive; "
                                 f"apt-get {apt.APT_WAIT} update -q && apt-get {apt.APT_WAIT} "
                                 f"install -y -q --allow-downgrades {shlex.quote(d.deb)}")],
        )
    vendor = [u for u in state["apt_uris"] if u.split("://", 1)[-1].startswith("repo.radeon.com")]
    if values["rocm_repo_url"].rstrip("/") != VENDOR_REPO and (d.install_installer or vendor):
        server.shell(name="AMD's apt sources use rocm_repo_url",
                     commands=[mirror_command(values["rocm_repo_url"])])
    # With a fleet cache, AMD's https sources are read through it (roles.cache), the several
    # GB of ROCm packages fetched once for the fleet; their signed-by stays.
    through_cache = cache.lists_through_mirrors(cache.values_of(), APT_LISTS)
    https = [u for u in state["apt_uris"] if u.startswith("https://")]
    if through_cache and (d.install_installer or https):
        server.shell(name="AMD's apt sources go through the fleet cache",
                     commands=[through_cache])
    install_op = None
    if d.run_installer:
        install_op = server.shell(
            name=f"amdgpu-install --usecase={','.join(values['rocm_usecases'])}",
            commands=[apt.locked(f"{apt.APT_CONFIG_WAIT}; "
                                 f"{installer_command(values, d.driver.dkms)}")],
        )

    pending = d.kernel_driver or (state["reboot_required"]
                                  and KERNEL_PACKAGE in state["reboot_pkgs"])
    rebooted = False
    if pending and values["rocm_allow_reboot"]:
        server.reboot(name="Reboot for the amdgpu kernel driver", delay=15, reboot_timeout=900)
        pending, rebooted = False, True
    elif pending:
        if d.kernel_driver:
            server.shell(name="Mark that a reboot is required", commands=[REBOOT_MARK_COMMAND])
        logger.warning(f"{host.print_prefix}needs a reboot for the amdgpu kernel driver "
                       "(rocm_allow_reboot is false); the GPU is verified on the run after it")
        summary.reboot("ROCm", "the amdgpu kernel driver was installed and rocm_allow_reboot is "
                       "false. Run the deploy again after the reboot to verify the GPU.",
                       install_op)

    if values["rocm_verify"] and not pending:
        if not (changing or rebooted) and not gpu_agents(state["rocminfo"]):
            reason = atomics_rejected(state["kernel"])
            logger.warning(f"{host.print_prefix}rocminfo lists no GPU agent"
                           + (f"; the kernel says: {reason}" if reason else "")
                           + "; the verification fails this host")
        if changing or rebooted or not gpu_agents(state["rocminfo"]):
            server.shell(name="rocminfo lists a GPU agent", commands=[verify_command(env)])


def _preflight_read(known: HostFacts, env: dict) -> tuple[list[str], bool, str | bool]:
    """What the preflight's command read in this run that RocmState need not ask again:
    (its rocminfo lines, whether they are what the container's ``env`` would give, the running
    kernel when it printed uname; for roles.rocm.driver)."""
    seen = (known.section("rocminfo") or "").splitlines()
    rocminfo = (known.section_state("rocminfo") in ("present", "missing")
                and same_agents_as_preflight(env, seen))
    uname = known.section("uname") is not None and known.hardware["os"].get("kernel")
    return seen, rocminfo, uname


def state_ask(known: HostFacts, values: dict | None = None, guess: bool = False) -> tuple:
    """
    The RocmState fact install() reads, with its arguments, for ``known``'s host: without what
    the preflight read in this run already, the kernel's kfd lines, rocminfo's output when it
    is what the container's environment would give, the running kernel and Secure Boot.
    ``guess``: asked before the preflight ran (preflight.learn's guess), as it reads a
    converged host: all of these.
    """
    values = read(host, SETTINGS) if values is None else values
    env = container_env(values)
    if guess:  # the preflight's rocminfo serves unless the container renames the agents
        rocminfo, uname, kernel = same_agents_as_preflight(env), True, True
    else:
        seen, rocminfo, uname = _preflight_read(known, env)
        # The kernel's kfd lines only explain a rocminfo that lists no GPU agent (install()).
        kernel = known.section("dmesg") is not None or (rocminfo and bool(gpu_agents(seen)))
    return RocmState, {"users": " ".join(values["rocm_users"]), "verify": values["rocm_verify"],
                       "env": env_assignments(env), "rocminfo": not rocminfo,
                       "kernel": not kernel, "driver": not uname}


def _state(values: dict, env: dict, known: HostFacts) -> dict:
    """
    The RocmState fact (``state_ask``), completed with what the preflight read in this run
    already (``known``). Kept in ``known.rocm``.
    """
    dmesg = known.section("dmesg")
    # The running kernel and Secure Boot (roles.rocm.driver): the preflight's uname and
    # secureboot sections when it ran, else asked in the same command.
    seen, rocminfo, uname = _preflight_read(known, env)
    state = known.fact(*state_ask(known, values))
    if uname:
        state = {**state, "uname": uname,
                 "sb_state": (known.section("secureboot") or "").strip() or None}
    if values["rocm_verify"] and dmesg is not None:
        state = {**state, "kernel": kernel_lines(dmesg)}
    if values["rocm_verify"] and rocminfo:
        present = known.section_state("rocminfo") == "present"
        state = {**state, "rocminfo_found": present, "rocminfo": seen if present else []}
    known.rocm = state
    return state


def same_agents_as_preflight(env: dict, preflight_rocminfo: list[str] = ()) -> bool:
    """
    Would rocminfo under the container's ``env`` list the agents the preflight's rocminfo (run
    with no environment) listed? Yes unless HSA_OVERRIDE_GFX_VERSION renames them.
    ROC_ENABLE_PRE_VEGA changes nothing here: ROCr never reads it (ROCR-Runtime rocm-5.3.0 has
    no such variable); ROCclr does, for OpenCL alone (device/device.hpp, runtimeRocSupported:
    ``if (!IS_HIP && !ROC_ENABLE_PRE_VEGA && (versionMajor_ == 8)) return false;``).
    """
    return "HSA_OVERRIDE_GFX_VERSION" not in env


def _groups_and_files(values: dict, state: dict, env: dict):
    if "render" not in state["groups"]:
        server.shell(name="The render group",
                     commands=["getent group render >/dev/null || groupadd --system render"])
    for user in values["rocm_users"]:
        missing = [g for g in GPU_GROUPS if g not in state["users"][user]]
        if missing:
            server.shell(name=f"{user} joins {' and '.join(missing)}",
                         commands=[f"usermod -a -G {','.join(missing)} {shlex.quote(user)}"])
    if state["adduser_exists"]:
        wanted = configfiles.adduser_conf(state["adduser"])
        if wanted != state["adduser"]:
            files.put(name="New users get video and render (/etc/adduser.conf)",
                      src=StringIO(wanted), dest="/etc/adduser.conf", user="root", group="root",
                      mode="644")
    if env:
        wanted = configfiles.environment(state["environment"], env)
        if wanted != state["environment"]:
            files.put(name=f"{', '.join(env)} in /etc/environment", src=StringIO(wanted),
                      dest="/etc/environment", user="root", group="root", mode="644")
