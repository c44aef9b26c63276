"""Keys, files and logs on the broker host and the CLI, tried as a local attacker would
(docs/security.md, "Keys, files and logs on the broker host and the CLI")."""
import os
import stat
import subprocess

import pytest

from sigil_harness import Broker, free_port


def mode(p):
    return stat.S_IMODE(os.lstat(p).st_mode)


def plant_victim(path, text="precious\n"):
    path.write_text(text)
    path.chmod(0o666)
    return path


def test_svid_out_follows_no_planted_temp_file_or_symlink(broker, tmp_path):
    victim = plant_victim(tmp_path / "victim")
    victim2 = plant_victim(tmp_path / "victim2")
    out = tmp_path / "out"
    out.mkdir()
    # The predictable temp name the old writer used, and the destination itself.
    (out / ".svid.key.tmp").symlink_to(victim)
    (out / "svid.pem").symlink_to(victim2)
    broker.sigil("svid", "x509", "--spiffe-id", "spiffe://sigil.local/demo", "--out", str(out))
    assert victim.read_text() == "precious\n" and mode(victim) == 0o666
    assert victim2.read_text() == "precious\n" and mode(victim2) == 0o666
    for name in ["svid.key", "svid.pem", "bundle.pem"]:
        st = os.lstat(out / name)
        assert stat.S_ISREG(st.st_mode), name
        assert stat.S_IMODE(st.st_mode) == 0o600, (name, oct(st.st_mode))
    assert "PRIVATE KEY" in (out / "svid.key").read_text()


def test_svid_out_refuses_a_directory_another_user_owns(broker, tmp_path):
    # Another user (nobody) pre-created the output directory, e.g. in /tmp: they could swap the files.
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, 65534, 65534)
    p = broker.sigil("svid", "x509", "--spiffe-id", "spiffe://sigil.local/demo", "--out", str(out), check=False)
    assert p.returncode != 0
    assert "owned by uid 65534" in p.stderr, p.stderr
    assert list(out.iterdir()) == []


def test_dev_bootstrap_follows_no_planted_temp_file(sigil_bin, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    victim = plant_victim(tmp_path / "victim")
    for name in [".admin.identity.tmp", ".seal.key.tmp", ".tls-ca.pem.tmp"]:
        (data / name).symlink_to(victim)
    b = Broker(sigil_bin, data).start()
    try:
        assert victim.read_text() == "precious\n" and mode(victim) == 0o666
        for name in ["admin.identity", "seal.key", "tls-ca.pem", "bundle.pem"]:
            st = os.lstat(data / name)
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, (name, oct(st.st_mode))
        b.sigil("whoami")
    finally:
        b.stop()


def key_lines(identity_pem: str) -> list[str]:
    """The base64 lines of the private key in an identity file."""
    lines = identity_pem.splitlines()
    start = next(i for i, l in enumerate(lines) if "PRIVATE KEY" in l)
    return [l for l in lines[start + 1:] if "PRIVATE KEY" not in l and l][:3] + [lines[start]]


def run_with_identity(broker, value, *args):
    env = {**broker.env(), "SIGIL_IDENTITY": value}
    return subprocess.run([broker.bin, *args], env=env, capture_output=True, text=True, timeout=60)


def test_identity_content_in_env_is_used_and_never_printed(broker):
    content = (broker.data_dir / "admin.identity").read_text()
    p = run_with_identity(broker, content, "whoami")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("bot admin")
    for line in key_lines(content):
        assert line not in p.stdout + p.stderr
    # An identity that cannot be used (the key alone): the error names the variable, not the value.
    broken = content[content.index("-----BEGIN PRIVATE KEY"):content.index("-----END PRIVATE KEY")] + "-----END PRIVATE KEY-----\n"
    p = run_with_identity(broker, broken, "whoami")
    assert p.returncode != 0 and "SIGIL_IDENTITY" in p.stderr, p.stderr
    for line in key_lines(content):
        assert line not in p.stdout + p.stderr, p.stderr
    # A value that is neither content nor an existing file is not echoed either (it may be a mangled secret).
    p = run_with_identity(broker, "/nonexistent/" + key_lines(content)[0], "whoami")
    assert p.returncode != 0 and key_lines(content)[0] not in p.stderr, p.stderr


def test_help_does_not_show_the_identity_from_env(broker):
    content = (broker.data_dir / "admin.identity").read_text()
    for args in [["--help"], ["whoami", "--help"], ["svid", "x509", "--help"]]:
        p = run_with_identity(broker, content, *args)
        assert p.returncode == 0, p.stderr
        assert "SIGIL_IDENTITY" in p.stdout
        for line in key_lines(content):
            assert line not in p.stdout + p.stderr, args


def refused_start(args, env=None):
    """Runs a server that must refuse to start; one that keeps running fails the test."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(args)} started and kept running instead of refusing")


def prod_config(tmp_path, data, port, **extra):
    lines = ["trust_domain: sigil.local", f"listen: 127.0.0.1:{port}", f"data_dir: {data}"] + [f"{k}: {v}" for k, v in extra.items()]
    cfg = tmp_path / "server.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def test_production_refuses_the_seal_key_dev_mode_left_in_the_data_dir(sigil_bin, tmp_path):
    data = tmp_path / "data"
    dev = Broker(sigil_bin, data).start()
    dev_admin = tmp_path / "dev-admin.identity"
    dev_admin.write_text((data / "admin.identity").read_text())
    dev.sigil("whoami", identity=str(dev_admin))
    dev.stop()

    # Production on the same data dir, no seal key configured: refused, naming the options.
    port = free_port()
    cfg = prod_config(tmp_path, data, port)
    env = {k: v for k, v in os.environ.items() if k != "SIGIL_SEAL_KEY"}
    p = refused_start([sigil_bin, "server", "--config", str(cfg)], env=env)
    assert p.returncode != 0
    assert "seal.key" in p.stderr and "seal_key_file" in p.stderr and "SIGIL_SEAL_KEY" in p.stderr, p.stderr

    # The operator moves the key out and names it: production starts, and the week-long dev admin
    # identity (its key in a file beside the data) is refused; the reissued one works.
    seal = tmp_path / "seal.key"
    (data / "seal.key").rename(seal)
    cfg = prod_config(tmp_path, data, port, seal_key_file=str(seal))
    prod = Broker(sigil_bin, data, port=port, config=cfg).start()
    try:
        p = prod.sigil("whoami", identity=str(dev_admin), check=False)
        assert p.returncode != 0, "the dev admin identity still authenticates in production"
        assert prod.sigil("whoami").stdout.startswith("bot admin")
        assert (data / "admin.identity").read_text() != dev_admin.read_text()
    finally:
        prod.stop()


def test_data_dir_database_and_audit_log_are_not_readable_by_other_users(sigil_bin, tmp_path):
    data = tmp_path / "data"
    b = Broker(sigil_bin, data).start()
    b.sigil("svid", "jwt", "--spiffe-id", "spiffe://sigil.local/x", "--audience", "a")
    b.stop()
    assert mode(data) == 0o700
    for name in ["sigil.db", "sigil.db-wal", "sigil.db-shm", "audit.jsonl"]:
        if name.endswith(("-wal", "-shm")) and not (data / name).exists():
            continue
        assert mode(data / name) == 0o600, (name, oct(mode(data / name)))

    # Files an older version left world-readable are narrowed at the next start.
    for name in ["sigil.db", "audit.jsonl", "admin.identity"]:
        (data / name).chmod(0o644)
    data.chmod(0o755)
    b = Broker(sigil_bin, data).start()
    try:
        assert mode(data) == 0o700
        assert mode(data / "sigil.db") == 0o600 and mode(data / "admin.identity") == 0o600
        assert mode(data / "audit.jsonl") & 0o077 == 0o040, oct(mode(data / "audit.jsonl"))
    finally:
        b.stop()


def test_audit_log_outside_the_data_dir_is_created_private_and_not_through_a_symlink(sigil_bin, tmp_path):
    logdir = tmp_path / "log"
    logdir.mkdir()
    logdir.chmod(0o755)
    seal = tmp_path / "seal.key"
    seal.write_text("44" * 32)
    seal.chmod(0o600)
    port = free_port()
    cfg = prod_config(tmp_path, tmp_path / "data", port, seal_key_file=str(seal), audit_log=str(logdir / "audit.jsonl"))
    b = Broker(sigil_bin, tmp_path / "data", port=port, config=cfg).start()
    try:
        b.sigil("svid", "jwt", "--spiffe-id", "spiffe://sigil.local/x", "--audience", "a")
    finally:
        b.stop()
    assert mode(logdir / "audit.jsonl") == 0o600
    assert "svid" in (logdir / "audit.jsonl").read_text()
    # A symlink planted in its place is refused, the victim untouched.
    victim = plant_victim(tmp_path / "victim")
    (logdir / "audit.jsonl").unlink()
    (logdir / "audit.jsonl").symlink_to(victim)
    p = refused_start([sigil_bin, "server", "--config", str(cfg)])
    assert p.returncode != 0 and "audit log" in p.stderr, p.stderr
    assert victim.read_text() == "precious\n"


def broker_log_after_a_bad_handshake(sigil_bin, tmp_path, **env):
    import socket
    import time
    b = Broker(sigil_bin, tmp_path / "data", env={"SIGIL_LOG": "debug", **env}).start()
    try:
        with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01\x00\x05hello")
            s.recv(100)
        deadline = time.time() + 10
        while b"TLS handshake failed" not in b.log.read_bytes() and time.time() < deadline:
            time.sleep(0.05)
    finally:
        b.stop()
    return b.log.read_bytes()


def test_server_log_written_to_a_file_has_no_ansi_colour_codes(sigil_bin, tmp_path):
    log = broker_log_after_a_bad_handshake(sigil_bin, tmp_path)
    assert b"TLS handshake failed" in log
    assert b"\x1b[" not in log, log[:300]


def test_server_log_as_json_lines(sigil_bin, tmp_path):
    import json
    log = broker_log_after_a_bad_handshake(sigil_bin, tmp_path, SIGIL_LOG_FORMAT="json")
    events = [json.loads(l) for l in log.decode().splitlines() if l.startswith("{")]
    assert any(e["fields"]["message"] == "TLS handshake failed" and e["level"] == "DEBUG" for e in events), log[:500]
    assert b"\x1b[" not in log


def test_svid_out_refuses_a_symlink_another_user_planted(broker, tmp_path):
    # nobody plants `out` as a symlink to a directory of ours: the key must not land there.
    target = tmp_path / "mine"
    target.mkdir()
    (target / "svid.pem").write_text("precious\n")
    out = tmp_path / "out"
    out.symlink_to(target)
    os.lchown(out, 65534, 65534)
    p = broker.sigil("svid", "x509", "--spiffe-id", "spiffe://sigil.local/demo", "--out", str(out), check=False)
    assert p.returncode != 0
    assert "symbolic link owned by uid 65534" in p.stderr, p.stderr
    assert sorted(x.name for x in target.iterdir()) == ["svid.pem"]
    assert (target / "svid.pem").read_text() == "precious\n"
