"""The `ssh` and `ssh-host` outputs (agent) and `sigil ssh` (one-shot) against the real
OpenSSH client and server (Debian openssh-client / openssh-server) on loopback.

- sshd configured only by the `ssh-host` output (`Include sshd_config.snippet`: host key,
  host certificate, `TrustedUserCAKeys`) lets the `ssh` output in with `ssh -F ssh_config`
  for the principal the role allows; the same certificate is refused for another login
  (sshd: not a listed principal) and the broker refuses to issue one for a login the role
  does not allow;
- an expired certificate is refused by sshd (the files are still there: sshd decides);
- the client verifies the host through the generated `known_hosts` only: a host with a
  self-made key, or with a host certificate from another CA, is refused, and nothing is
  learned (known_hosts unchanged);
- the agent renews the certificate at half-life and the renewed files log in;
- `authorized_principals` of `ssh-host` (`AuthorizedPrincipalsFile`, StrictModes on)
  maps a certificate principal to a login.
"""
from __future__ import annotations

import shutil
import stat
import time
from pathlib import Path

import pytest

from ssh_harness import (Agent, Sshd, UnixUser, agent_config, cert_info, host_output, join, private_run_dir,
                         self_made_host, setup_broker, ssh)


@pytest.fixture
def users():
    """Two throwaway logins: `allowed` (the role's principal) and `other`."""
    made = []
    try:
        made.append(UnixUser("a"))
        made.append(UnixUser("b"))
        yield made[0], made[1]
    finally:
        for u in made:
            u.remove()


@pytest.fixture
def run_dir():
    d = private_run_dir("sigil-ssh-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def servers():
    started: list[Sshd] = []
    yield started
    for s in started:
        s.stop()


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_ssh_output_logs_in_for_the_allowed_principal_only_and_verifies_the_host(broker, sigil_bin, tmp_path, users,
                                                                                 run_dir, servers):
    allowed, other = users
    tokens = setup_broker(broker, tmp_path, [allowed.name])
    host_dir = host_output(broker, sigil_bin, tmp_path, tokens["web1"], run_dir)
    assert mode(host_dir / "ssh_host_ed25519_key") == 0o600
    assert "Type: ssh-ed25519-cert-v01@openssh.com host certificate" in cert_info(host_dir / "ssh_host_ed25519_key-cert.pub")
    sshd = Sshd(include=host_dir / "sshd_config.snippet")
    servers.append(sshd)

    out = tmp_path / "ssh"
    cfg = agent_config(broker, tmp_path, "ci", tokens["ci"],
                       f"  - type: ssh\n    dir: {out}\n    principals: [{allowed.name}]\n    hosts: [127.0.0.1, localhost]\n")
    agent = Agent(sigil_bin, cfg)
    try:
        agent.wait_file(out / "ssh_config")
        assert mode(out / "id_ed25519") == 0o600
        info = cert_info(out / "id_ed25519-cert.pub")
        assert "user certificate" in info and allowed.name in info and "Key ID: \"sigil:ci:" in info, info
        known_hosts = (out / "known_hosts").read_text()
        assert "@cert-authority 127.0.0.1,[127.0.0.1]:*,localhost,[localhost]:* ssh-" in known_hosts, known_hosts

        # The allowed principal logs in, by name and by address; the host is verified by its certificate.
        for host in ("127.0.0.1", "localhost"):
            p = ssh(out / "ssh_config", allowed.name, sshd.port, host=host)
            assert p.returncode == 0 and p.stdout.strip() == allowed.name, p.stderr
        sshd.wait_log(f'Accepted certificate ID "sigil:ci:')

        # The same certificate as another login: sshd refuses it.
        p = ssh(out / "ssh_config", other.name, sshd.port)
        assert p.returncode == 255 and "Permission denied" in p.stderr, p.stderr
        sshd.wait_log("Certificate invalid: name is not a listed principal")

        # The broker refuses to issue a certificate for a login the role does not allow.
        ci = join(broker, tmp_path, tokens["ci"], "ci")
        refused = broker.sigil("ssh", "user-cert", "--principal", other.name, "--dir", str(tmp_path / "nope"), identity=ci,
                               check=False)
        assert refused.returncode != 0 and "PermissionDenied" in refused.stderr, refused.stderr
        assert not (tmp_path / "nope" / "id_ed25519").exists()

        # Hosts Sigil did not certify: a plain self-made key, a certificate from another CA.
        for other_ca in (False, True):
            key, hcert = self_made_host(tmp_path, other_ca)
            impostor = Sshd(host_key=key, host_cert=hcert, user_ca=host_dir / "user_ca.pub")
            servers.append(impostor)
            p = ssh(out / "ssh_config", allowed.name, impostor.port)
            assert p.returncode == 255 and "Host key verification failed" in p.stderr, (other_ca, p.stderr)
            assert "sgl" not in p.stdout
        assert (out / "known_hosts").read_text() == known_hosts, "known_hosts must never learn a host key"
    finally:
        agent.stop()


def test_an_expired_certificate_is_refused_by_sshd(broker, sigil_bin, tmp_path, users, run_dir, servers):
    allowed, _ = users
    tokens = setup_broker(broker, tmp_path, [allowed.name])
    host_dir = host_output(broker, sigil_bin, tmp_path, tokens["web1"], run_dir)
    sshd = Sshd(include=host_dir / "sshd_config.snippet")
    servers.append(sshd)

    # The one-shot: same files as the agent's `ssh` output, a 4-second certificate.
    ci = join(broker, tmp_path, tokens["ci"], "ci")
    out = tmp_path / "oneshot"
    p = broker.sigil("ssh", "user-cert", "--principal", allowed.name, "--host", "127.0.0.1", "--ttl", "4s", "--dir", str(out),
                     identity=ci)
    assert "use: ssh -F" in p.stderr, p.stderr
    issued = time.time()
    ok = ssh(out / "ssh_config", allowed.name, sshd.port)
    assert ok.returncode == 0 and ok.stdout.strip() == allowed.name, ok.stderr

    time.sleep(max(0.0, issued + 5.5 - time.time()))
    late = ssh(out / "ssh_config", allowed.name, sshd.port)
    assert late.returncode == 255 and "Permission denied" in late.stderr, late.stderr
    sshd.wait_log("Certificate invalid: expired")
    # sshd refused it: the agent side did not delete or change anything.
    assert (out / "id_ed25519").exists() and (out / "id_ed25519-cert.pub").exists()


def test_the_agent_renews_the_certificate_at_half_life(broker, sigil_bin, tmp_path, users, run_dir, servers):
    allowed, _ = users
    tokens = setup_broker(broker, tmp_path, [allowed.name])
    host_dir = host_output(broker, sigil_bin, tmp_path, tokens["web1"], run_dir)
    sshd = Sshd(include=host_dir / "sshd_config.snippet")
    servers.append(sshd)
    out = tmp_path / "ssh"
    cfg = agent_config(broker, tmp_path, "ci", tokens["ci"],
                       f"  - type: ssh\n    dir: {out}\n    principals: [{allowed.name}]\n    key_type: ecdsa\n    ttl: 8s\n")
    agent = Agent(sigil_bin, cfg)
    try:
        agent.wait_file(out / "id_ecdsa-cert.pub")
        first = cert_info(out / "id_ecdsa-cert.pub")
        started = time.time()
        while cert_info(out / "id_ecdsa-cert.pub") == first:
            assert time.time() - started < 7, "no renewal before expiry"
            time.sleep(0.2)
        renewed_after = time.time() - started
        # Half of 8 s, never at the last moment.
        assert renewed_after < 6, renewed_after
        p = ssh(out / "ssh_config", allowed.name, sshd.port)
        assert p.returncode == 0 and p.stdout.strip() == allowed.name, p.stderr
        print(f"renewed {renewed_after:.1f} s after the first certificate was read (ttl 8 s)")
    finally:
        agent.stop()


def test_authorized_principals_map_a_certificate_principal_to_a_login(broker, sigil_bin, tmp_path, users, run_dir, servers):
    allowed, other = users
    tokens = setup_broker(broker, tmp_path, ["deployers"])
    host_dir = host_output(broker, sigil_bin, tmp_path, tokens["web1"], run_dir,
                           extra=f"    authorized_principals: {{{other.name}: [deployers]}}\n")
    # sshd opens the principals file as the user: world-readable file in 0755 directories.
    assert mode(host_dir / "principals" / other.name) == 0o644 and mode(host_dir / "principals") == 0o755
    assert mode(host_dir / "ssh_host_ed25519_key") == 0o600
    sshd = Sshd(include=host_dir / "sshd_config.snippet")
    servers.append(sshd)

    ci = join(broker, tmp_path, tokens["ci"], "ci")
    out = tmp_path / "ssh"
    broker.sigil("ssh", "user-cert", "--principal", "deployers", "--key-type", "rsa", "--dir", str(out), identity=ci)
    p = ssh(out / "ssh_config", other.name, sshd.port)
    assert p.returncode == 0 and p.stdout.strip() == other.name, p.stderr + sshd.log_text()
    # A login without a principals file is refused, whatever the certificate says.
    p = ssh(out / "ssh_config", allowed.name, sshd.port)
    assert p.returncode == 255 and "Permission denied" in p.stderr, p.stderr


def test_the_ssh_example_demo_runs(sigil_bin):
    """examples/access/ssh/demo.sh: broker, host-cert, sshd, user-cert, ssh -F, root refused."""
    import os
    import subprocess
    demo = Path(__file__).resolve().parents[2] / "examples" / "access" / "ssh" / "demo.sh"
    p = subprocess.run(["bash", str(demo)], capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
                       env={**{k: v for k, v in os.environ.items() if not k.startswith("SSH_")}, "SIGIL": sigil_bin})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "logged in as sigil-demo" in p.stdout and "refused:" in p.stdout, p.stdout


def test_an_ssh_ca_rotation_reaches_known_hosts_and_user_ca_before_half_life(broker, sigil_bin, tmp_path, users, run_dir):
    """`sigil ca rotate --purpose ssh-host|ssh-user --phase prepare` publishes a second key:
    the agent sees it at its next bundle poll (1 s here) and rewrites known_hosts and
    user_ca.pub with both keys, long before the 1-hour certificates' half-life."""
    allowed, _ = users
    tokens = setup_broker(broker, tmp_path, [allowed.name])
    out, host = tmp_path / "ssh", run_dir / "host"
    cfg = agent_config(broker, tmp_path, "both", tokens["ci"],
                       f"  - type: ssh\n    dir: {out}\n    principals: [{allowed.name}]\n    ttl: 1h\n")
    cfg.write_text(cfg.read_text().replace("outputs:\n", "bundle_refresh: 1s\noutputs:\n"))
    host_cfg = agent_config(broker, tmp_path, "web1", tokens["web1"],
                            f"  - type: ssh-host\n    dir: {host}\n    names: [127.0.0.1]\n    ttl: 1h\n")
    host_cfg.write_text(host_cfg.read_text().replace("outputs:\n", "bundle_refresh: 1s\noutputs:\n"))
    agents = [Agent(sigil_bin, cfg), Agent(sigil_bin, host_cfg)]
    try:
        agents[0].wait_file(out / "known_hosts")
        agents[1].wait_file(host / "user_ca.pub")
        time.sleep(1.5)  # past the agents' first bundle poll
        ca_lines = lambda p: [l for l in p.read_text().splitlines() if l and not l.startswith("#")]
        assert len(ca_lines(out / "known_hosts")) == 1 and len(ca_lines(host / "user_ca.pub")) == 1
        broker.sigil("ca", "rotate", "--purpose", "ssh-host", "--phase", "prepare")
        broker.sigil("ca", "rotate", "--purpose", "ssh-user", "--phase", "prepare")
        started = time.time()
        while len(ca_lines(out / "known_hosts")) < 2 or len(ca_lines(host / "user_ca.pub")) < 2:
            assert time.time() - started < 15, (out / "known_hosts").read_text() + (host / "user_ca.pub").read_text()
            time.sleep(0.2)
        published = {l.strip() for l in broker.sigil("ssh", "ca-keys", "--type", "host").stdout.splitlines()}
        assert {l.split(" ", 2)[2] for l in ca_lines(out / "known_hosts")} == published
        print(f"both files carried the new CA keys {time.time() - started:.1f} s after prepare")
    finally:
        for a in agents:
            a.stop()


def test_a_user_runs_ssh_as_themselves_with_files_written_for_them(broker, sigil_bin, tmp_path, users, run_dir, servers):
    """`sigil ssh user-cert --owner USER` into the user's home: ssh run as that user
    (setpriv, not root) accepts the 0600 key it owns and logs in."""
    import pwd
    import subprocess
    allowed, _ = users
    tokens = setup_broker(broker, tmp_path, [allowed.name])
    host_dir = host_output(broker, sigil_bin, tmp_path, tokens["web1"], run_dir)
    sshd = Sshd(include=host_dir / "sshd_config.snippet")
    servers.append(sshd)
    ci = join(broker, tmp_path, tokens["ci"], "ci")
    out = allowed.home / "sigil-ssh"
    broker.sigil("ssh", "user-cert", "--principal", allowed.name, "--owner", allowed.name, "--dir", str(out), identity=ci)
    pw = pwd.getpwnam(allowed.name)
    key = out / "id_ed25519"
    assert (key.stat().st_uid, mode(key)) == (pw.pw_uid, 0o600)
    p = subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                        "ssh", "-F", str(out / "ssh_config"), "-p", str(sshd.port), f"{allowed.name}@127.0.0.1", "id -un"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(allowed.home)})
    assert p.returncode == 0 and p.stdout.strip() == allowed.name, p.stderr
