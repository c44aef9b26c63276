"""The Debian packages, installed system-wide with dpkg as a user would.

scripts/package-deb.sh builds sigil_VERSION_amd64.deb and sigil-agent_VERSION_amd64.deb
from target/debug (debug info stripped, gzip -1: seconds, not minutes); the
module installs both once with `dpkg -i` and purges them in a finally, checking
that the purge leaves no file, directory, user or group behind.

Independent checks: dpkg (install state, file lists, conffiles), systemd-analyze
(verify and the offline security review of the installed units), man, bash
(the completion function on COMP_WORDS), zsh -n and fish -n.

Not covered here: starting the units under systemd as PID 1 (CI runs in a
container without it); the binaries are run with the default configs as the
dedicated users instead.
"""
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sigil_harness import ROOT, require_tool, stop_process

PACKAGES = ("sigil", "sigil-agent")
USERS = ("sigil", "sigil-agent")
UNITS = {
    "sigil-broker.service": Path("/usr/lib/systemd/system/sigil-broker.service"),
    "sigil-agent.service": Path("/usr/lib/systemd/system/sigil-agent.service"),
}
# Everything the packages (and their maintainer scripts) create outside dpkg's own database.
LEFTOVERS = [Path("/etc/sigil"), Path("/var/lib/sigil"), Path("/var/lib/sigil-agent"), Path("/usr/bin/sigil"),
             Path("/usr/bin/sigil-agent"), *UNITS.values(), Path("/usr/lib/sysusers.d/sigil.conf"),
             Path("/usr/lib/sysusers.d/sigil-agent.conf"), Path("/usr/share/man/man1/sigil.1.gz"),
             Path("/usr/share/man/man8/sigil-agent.8.gz"), Path("/usr/share/bash-completion/completions/sigil")]


def run(*args, check=True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=120, **kw)
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def installed(pkg: str) -> bool:
    p = run("dpkg-query", "-W", "-f=${db:Status-Status}", pkg, check=False)
    return p.returncode == 0 and p.stdout.strip() == "installed"


def account_exists(db: str, name: str) -> bool:
    return run("getent", db, name, check=False).returncode == 0


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    """Both packages installed with dpkg -i; purged afterwards, leaving nothing behind."""
    if os.geteuid() != 0:
        pytest.fail("the packaging tests install system-wide: run them as root (CI does)")
    for tool, install in [("dpkg-deb", "apt-get install dpkg"), ("objcopy", "apt-get install binutils"),
                          ("dpkg-shlibdeps", "apt-get install dpkg-dev"), ("systemd-analyze", "apt-get install systemd"),
                          ("man", "apt-get install man-db")]:
        require_tool(tool, install)
    for pkg in PACKAGES:
        if installed(pkg) or run("dpkg-query", "-W", pkg, check=False).returncode == 0:
            pytest.fail(f"package {pkg} is already on this machine: this test installs and purges it; remove it first (dpkg --purge {pkg})")
    for user in USERS:
        if account_exists("passwd", user):
            pytest.fail(f"user {user} already exists: the package creates it and its purge deletes it; remove it first")
    for bin_name in PACKAGES:
        if not (ROOT / "target" / "debug" / bin_name).exists():
            pytest.fail(f"target/debug/{bin_name} missing: cargo build --workspace --bins (scripts/test.sh does)")

    out = tmp_path_factory.mktemp("deb")
    t0 = time.monotonic()
    built = run("bash", str(ROOT / "scripts" / "package-deb.sh"), "--bin-dir", str(ROOT / "target" / "debug"),
                "--out-dir", str(out), "--fast").stdout.split()
    version = run("dpkg-deb", "-f", built[0], "Version").stdout.strip()
    files = [out / f"sigil_{version}_amd64.deb", out / f"sigil-agent_{version}_amd64.deb"]
    assert sorted(map(str, files)) == sorted(built), built
    print(f"built {[f.name for f in files]} in {time.monotonic() - t0:.1f} s, "
          f"{[f.stat().st_size // 1024 for f in files]} KiB")
    try:
        t0 = time.monotonic()
        run("dpkg", "-i", *map(str, files))
        print(f"dpkg -i: {time.monotonic() - t0:.1f} s")
        yield {"version": version, "files": files}
    finally:
        t0 = time.monotonic()
        purge = run("dpkg", "--purge", *PACKAGES, check=False)
        print(f"dpkg --purge: {time.monotonic() - t0:.1f} s")
        left = [str(p) for p in LEFTOVERS if p.exists() or p.is_symlink()]
        accounts = [f"{db} {n}" for db in ("passwd", "group") for n in USERS if account_exists(db, n)]
        still = [p for p in PACKAGES if run("dpkg-query", "-W", p, check=False).returncode == 0]
        assert purge.returncode == 0, purge.stdout + purge.stderr
        assert not left and not accounts and not still, f"purge left behind: {left} {accounts} packages {still}"


def test_both_debs_install_with_dpkg_and_list_their_files(debs):
    for pkg in PACKAGES:
        assert installed(pkg), f"{pkg} not installed"
        status = run("dpkg", "-s", pkg).stdout
        assert "Status: install ok installed" in status and f"Version: {debs['version']}" in status
        # Depends computed from the binary's libraries (dpkg-shlibdeps), not a guess.
        depends = re.search(r"^Depends: (.*)$", status, re.M).group(1)
        assert re.search(r"\blibc6 \(>= [0-9.]+\)", depends), depends
    sigil_files = set(run("dpkg", "-L", "sigil").stdout.split())
    for f in ["/usr/bin/sigil", "/usr/lib/systemd/system/sigil-broker.service", "/etc/sigil/broker.yaml",
              "/usr/lib/sysusers.d/sigil.conf", "/usr/share/man/man1/sigil.1.gz", "/usr/share/man/man1/sigil-join.1.gz",
              "/usr/share/bash-completion/completions/sigil", "/usr/share/zsh/vendor-completions/_sigil",
              "/usr/share/fish/vendor_completions.d/sigil.fish", "/usr/share/doc/sigil/copyright"]:
        assert f in sigil_files, f"dpkg -L sigil lacks {f}"
    agent_files = set(run("dpkg", "-L", "sigil-agent").stdout.split())
    for f in ["/usr/bin/sigil-agent", "/usr/lib/systemd/system/sigil-agent.service", "/etc/sigil/agent.yaml",
              "/usr/share/man/man8/sigil-agent.8.gz", "/usr/share/bash-completion/completions/sigil-agent"]:
        assert f in agent_files, f"dpkg -L sigil-agent lacks {f}"
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "sigil", "sigil-agent").stdout
    assert "/etc/sigil/broker.yaml" in conffiles and "/etc/sigil/agent.yaml" in conffiles, conffiles
    # The binary is stripped of debug info: no .debug_info section.
    sections = run("objdump", "-h", "/usr/bin/sigil").stdout
    assert ".debug_info" not in sections
    # The maintainer script made the users, the 0700 state directories and the seal key.
    for user, state in [("sigil", "/var/lib/sigil"), ("sigil-agent", "/var/lib/sigil-agent")]:
        entry = run("getent", "passwd", user).stdout.strip().split(":")
        assert int(entry[2]) < 1000 and entry[5] == state and entry[6].endswith("nologin"), entry
        st = os.stat(state)
        assert (st.st_mode & 0o777, st.st_uid) == (0o700, int(entry[2])), state
    key = os.stat("/etc/sigil/seal.key")
    assert key.st_uid == 0 and key.st_gid == int(run("getent", "group", "sigil").stdout.split(":")[2]) and key.st_mode & 0o777 == 0o640
    assert re.fullmatch(r"[0-9a-f]{64}\n", Path("/etc/sigil/seal.key").read_text())


def test_systemd_analyze_verify_finds_nothing_in_the_installed_units(debs):
    """`systemd-analyze verify` on both units: exit 0 and no line about our unit files.

    It runs outside a booted systemd here, so it may print environment noise
    (e.g. about units it pulls in); any line naming our units, their directives
    or binaries is a finding."""
    p = run("systemd-analyze", "verify", *map(str, UNITS.values()), check=False)
    out = (p.stdout + p.stderr).splitlines()
    # Our unit files, their binaries (/usr/bin/sigil*) and users all contain "sigil".
    ours = [l for l in out if "sigil" in l]
    print("systemd-analyze verify output:", out or "(none)")
    assert p.returncode == 0 and not ours, "\n".join(out)
    # A directive systemd does not know is such a finding: the check can see one.
    bad = Path(f"/run/sigil-verify-{os.getpid()}.service")
    bad.write_text(UNITS["sigil-broker.service"].read_text().replace("[Service]\n", "[Service]\nProtectSystm=strict\n"))
    try:
        p = run("systemd-analyze", "verify", str(bad), check=False)
        assert "ProtectSystm" in p.stdout + p.stderr
    finally:
        bad.unlink()


def test_units_are_hardened_and_reload_maps_to_the_agents_signal(debs):
    """The offline security review rates both units OK (exposure below 2.0 of 10),
    and the directives the packaging promises are there."""
    for name, path in UNITS.items():
        p = run("systemd-analyze", "security", "--offline=yes", str(path), check=False)
        m = re.search(rf"Overall exposure level for {re.escape(name)}: ([0-9.]+)", p.stdout + p.stderr)
        assert m, p.stdout + p.stderr
        print(f"{name}: exposure {m.group(1)}")
        assert float(m.group(1)) < 2.0, p.stdout
        text = path.read_text()
        for directive in ["ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "AmbientCapabilities=\n",
                          "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes", "SystemCallFilter=@system-service",
                          "MemoryDenyWriteExecute=yes", "UMask=0077", "Restart=on-failure"]:
            assert directive in text, f"{name} lacks {directive.strip()}"
    broker, agent = (UNITS[n].read_text() for n in ("sigil-broker.service", "sigil-agent.service"))
    assert "User=sigil\n" in broker and "StateDirectory=sigil\n" in broker
    assert "User=sigil-agent\n" in agent and "StateDirectory=sigil-agent\n" in agent and "RuntimeDirectory=sigil-agent\n" in agent
    # The broker handles no reload signal, so its unit has no ExecReload; the agent's maps to SIGUSR1.
    assert "ExecReload" not in re.sub(r"(?m)^#.*\n", "", broker)
    assert re.search(r"(?m)^ExecReload=/bin/kill -USR1 \$MAINPID$", agent)


def test_installed_sigil_help_man_page_and_bash_completion_work(debs):
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "MANWIDTH": "100"}
    assert shutil.which("sigil", path=env["PATH"]) == "/usr/bin/sigil"
    help_text = run("sigil", "--help", env=env).stdout
    assert "Usage: sigil" in help_text and "join" in help_text and "completion" in help_text
    assert run("sigil-agent", "--help", env=env).stdout.startswith("Sigil agent")
    # man finds the installed pages on its own search path and renders them.
    assert run("man", "--where", "sigil", env=env).stdout.strip() == "/usr/share/man/man1/sigil.1.gz"
    assert run("man", "--where", "sigil-token-create", env=env).stdout.strip() == "/usr/share/man/man1/sigil-token-create.1.gz"
    assert run("man", "--where", "8", "sigil-agent", env=env).stdout.strip() == "/usr/share/man/man8/sigil-agent.8.gz"
    page = run("man", "-P", "cat", "sigil", env=env).stdout
    assert "SYNOPSIS" in page and "sigil-join(1)" in page and "--identity" in page, page[:2000]
    agent_page = run("man", "-l", "-P", "cat", "/usr/share/man/man8/sigil-agent.8.gz", env=env).stdout
    assert "--config" in agent_page and "--oneshot" in agent_page
    # bash: the completion function on `sigil jo`, and on a nested command and a flag.
    def complete(script: str, *words: str) -> list[str]:
        fn = "_sigil" if "sigil-agent" not in script else "_sigil__agent"
        cmd = (f"source {script}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; "
               f"COMP_LINE='{' '.join(words)}'; COMP_POINT=${{#COMP_LINE}}; "
               f"{fn} {words[0]} {words[-1]} {words[-2]}; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        return run("bash", "--norc", "--noprofile", "-c", cmd, env=env).stdout.split()
    comp = "/usr/share/bash-completion/completions/sigil"
    assert complete(comp, "sigil", "jo") == ["join"]
    assert "create" in complete(comp, "sigil", "token", "cr")
    assert complete(comp, "sigil", "completion", "fi") == ["fish"]
    assert complete("/usr/share/bash-completion/completions/sigil-agent", "sigil-agent", "--conf") == ["--config"]
    # The script registers itself for the command name.
    assert "_sigil sigil" in run("bash", "--norc", "-c", f"source {comp}; complete -p sigil", env=env).stdout


def test_zsh_and_fish_completion_files_parse(debs):
    zsh = require_tool("zsh", "apt-get install zsh")
    fish = require_tool("fish", "apt-get install fish")
    for name in ["_sigil", "_sigil-agent"]:
        path = f"/usr/share/zsh/vendor-completions/{name}"
        assert Path(path).read_text().startswith(f"#compdef {name[1:]}")
        run(zsh, "-n", path)
    for name in ["sigil", "sigil-agent"]:
        path = f"/usr/share/fish/vendor_completions.d/{name}.fish"
        run(fish, "--no-config", "-n", path)
    # fish loads it and offers the subcommand.
    got = run(fish, "--no-config", "-c", "source /usr/share/fish/vendor_completions.d/sigil.fish; complete -C 'sigil jo'").stdout
    assert got.split("\t")[0].strip() == "join", got


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


AGENT_RESOURCES = """
kind: role
name: packaged-agent
allow:
  spiffe_ids: ["/host/**"]
---
kind: bot
name: packaged-agent
roles: [packaged-agent]
"""


def wait_for(what: str, cond, proc: subprocess.Popen, log: Path, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen (exit status {proc.poll()}):\n{log.read_text()}")
        time.sleep(0.1)


def test_default_configs_start_the_installed_programs_and_reload_renews_the_agent(debs, tmp_path):
    """The shipped broker.yaml starts the broker as user sigil (loopback 8443, SQLite in
    /var/lib/sigil, not dev mode) and an admin command works against it; agent.yaml passes
    `sigil-agent --check` as user sigil-agent and, with the edits install-deb.md asks for
    (broker address, CA file, join token), the installed agent joins as that user; the
    unit's ExecReload command then makes it renew (SIGUSR1), and it keeps running."""
    check = run("setpriv", "--reuid=sigil-agent", "--regid=sigil-agent", "--init-groups",
                "/usr/bin/sigil-agent", "--config", "/etc/sigil/agent.yaml", "--check")
    assert "valid agent config" in check.stderr
    if not port_free(8443):
        pytest.fail("127.0.0.1:8443 (the default broker.yaml's listen address) is in use: stop what listens there")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root"}
    log, agent_log = tmp_path / "broker.log", tmp_path / "agent.log"
    added = [Path("/etc/sigil/tls-ca.pem"), Path("/etc/sigil/agent-join-token")]
    agent_yaml = Path("/etc/sigil/agent.yaml")
    shipped = agent_yaml.read_text()
    with log.open("w") as f:
        proc = subprocess.Popen(["setpriv", "--reuid=sigil", "--regid=sigil", "--init-groups",
                                 "/usr/bin/sigil", "server", "--config", "/etc/sigil/broker.yaml"],
                                stdout=f, stderr=subprocess.STDOUT, env={**env, "SIGIL_LOG": "warn"})
    agent = None
    try:
        wait_for("broker listening", lambda: "listening on" in log.read_text(), proc, log)
        out = log.read_text()
        assert "listening on 127.0.0.1:8443 (trust domain sigil.local)" in out, out
        assert Path("/var/lib/sigil/mode").read_text().strip() == "production"
        assert os.stat("/var/lib/sigil/sigil.db").st_uid == int(run("id", "-u", "sigil").stdout)
        admin = ["/usr/bin/sigil", "--addr", "127.0.0.1:8443", "--identity", "/var/lib/sigil/admin.identity"]
        assert "admin" in run(*admin, "whoami", env=env).stdout

        # The agent, configured as the guide says.
        (tmp_path / "agent.yaml").write_text(AGENT_RESOURCES)
        run(*admin, "apply", "-f", str(tmp_path / "agent.yaml"), env=env)
        secret = run(*admin, "token", "create", "--bot", "packaged-agent", "--uses", "1", env=env).stdout.strip()
        shutil.copyfile("/var/lib/sigil/tls-ca.pem", added[0])
        added[0].chmod(0o644)
        added[1].write_text(secret + "\n")
        os.chown(added[1], 0, int(run("getent", "group", "sigil-agent").stdout.split(":")[2]))
        added[1].chmod(0o640)
        agent_yaml.write_text(shipped.replace("broker: sigil.example.internal:8443", "broker: 127.0.0.1:8443"))
        with agent_log.open("w") as f:
            agent = subprocess.Popen(["setpriv", "--reuid=sigil-agent", "--regid=sigil-agent", "--init-groups",
                                      "/usr/bin/sigil-agent", "--config", "/etc/sigil/agent.yaml"],
                                     stdout=f, stderr=subprocess.STDOUT, env=env)
        identity = Path("/var/lib/sigil-agent/identity")
        wait_for("the agent's identity in /var/lib/sigil-agent", identity.exists, agent, agent_log)
        assert identity.stat().st_uid == int(run("id", "-u", "sigil-agent").stdout)
        first = identity.read_bytes()

        # systemctl reload runs the unit's ExecReload with $MAINPID: run that command line.
        reload = re.search(r"(?m)^ExecReload=(.*)$", UNITS["sigil-agent.service"].read_text()).group(1)
        run("sh", "-c", reload.replace("$MAINPID", str(agent.pid)))
        wait_for("SIGUSR1 handled", lambda: "SIGUSR1: renewing every credential now" in agent_log.read_text(), agent, agent_log)
        wait_for("a renewed identity", lambda: identity.read_bytes() != first, agent, agent_log)
        assert agent.poll() is None, agent_log.read_text()
    finally:
        stop_process(agent)
        stop_process(proc)
        agent_yaml.write_text(shipped)
        for f in added:
            f.unlink(missing_ok=True)
    assert agent.returncode == 0, f"agent exited {agent.returncode} on SIGTERM:\n{agent_log.read_text()}"
    assert proc.returncode == 0, f"broker exited {proc.returncode} on SIGTERM"
