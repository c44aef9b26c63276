"""`sigil ca status|rotate` against the real broker binary (docs/ca-rotation.md): the JSON status is the
CaStatus message, a full X.509 rotation moves the served bundle (checked by openssl), and a retire before
retire_safe_at is refused unless --force."""
import json
import subprocess

from sigil_harness import free_port, require_tool

KEY_FIELDS = {"id", "purpose", "alg", "state", "created_at", "not_after", "activated_at", "deactivated_at",
              "retire_safe_at", "backend", "fingerprint"}


def status(broker) -> dict:
    return json.loads(broker.sigil("ca", "status", "--json").stdout)


def by_state(s: dict, purpose: str, state: str) -> dict:
    [k] = [k for k in s["keys"] if k["purpose"] == purpose and k["state"] == state]
    return k


def svid_verifies_with_bundle(broker, tmp_path, name: str) -> bool:
    out = tmp_path / name
    broker.sigil("svid", "x509", "--spiffe-id", "spiffe://sigil.local/w", "--out", str(out))
    bundle = tmp_path / f"{name}-served.pem"
    bundle.write_text(broker.sigil("bundle", "--format", "pem").stdout)
    p = subprocess.run([require_tool("openssl", "apt-get install openssl"), "verify", "-CAfile", str(bundle), str(out / "svid.pem")],
                       capture_output=True, text=True)
    return p.returncode == 0


def test_ca_status_json_is_the_ca_status_message(broker):
    s = status(broker)
    assert set(s["phases"]) == {"x509-svid", "jwt-svid", "internal", "ssh-user", "ssh-host", "database", "kubernetes"}
    assert set(s["phases"].values()) == {"standby"}
    assert len(s["keys"]) == 7
    for k in s["keys"]:
        assert set(k) == KEY_FIELDS, k
        assert k["state"] == "active" and k["backend"] == "sealed" and k["activated_at"] > 0
    text = broker.sigil("ca", "status").stdout
    for p in ("x509-svid", "ssh-user", "ssh-host", "database", "kubernetes"):
        assert f"{p}: standby" in text, text


def https_get(broker, path: str) -> str:
    import ssl
    import urllib.request
    ctx = ssl.create_default_context(cafile=broker.ca)
    with urllib.request.urlopen(f"{broker.url}{path}", context=ctx, timeout=10) as r:
        return r.read().decode()


def ssh_fingerprint(tmp_path, line: str) -> str:
    f = tmp_path / "k.pub"
    f.write_text(line + "\n")
    out = subprocess.run([require_tool("ssh-keygen", "apt-get install openssh-client"), "-l", "-f", str(f)],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def test_an_ssh_host_ca_rotation_through_the_cli_moves_the_served_keys(broker, tmp_path):
    before = https_get(broker, "/ssh/host_ca.pub").splitlines()
    assert len(before) == 1 and before[0].startswith("ssh-ed25519 "), before
    active = by_state(status(broker), "ssh-host", "active")
    assert active["fingerprint"] == ssh_fingerprint(tmp_path, before[0]), "ca status shows ssh-keygen's fingerprint"
    assert active["alg"] == "ed25519"
    s = json.loads(broker.sigil("ca", "rotate", "--purpose", "ssh-host", "--phase", "prepare", "--json").stdout)
    assert s["phases"]["ssh-host"] == "prepared" and s["phases"]["ssh-user"] == "standby"
    prepared = https_get(broker, "/ssh/host_ca.pub").splitlines()
    assert len(prepared) == 2 and before[0] in prepared, prepared
    assert https_get(broker, "/ssh/user_ca.pub").splitlines() != prepared
    broker.sigil("ca", "rotate", "--purpose", "ssh-host", "--phase", "rollback")
    assert https_get(broker, "/ssh/host_ca.pub").splitlines() == before


def test_a_full_x509_rotation_through_the_cli(broker, tmp_path):
    old = by_state(status(broker), "x509-svid", "active")
    assert svid_verifies_with_bundle(broker, tmp_path, "before")

    s = json.loads(broker.sigil("ca", "rotate", "--purpose", "x509-svid", "--phase", "prepare", "--json").stdout)
    assert s["phases"]["x509-svid"] == "prepared"
    new = by_state(s, "x509-svid", "prepared")
    assert broker.sigil("bundle", "--format", "pem").stdout.count("BEGIN CERTIFICATE") == 2

    s = json.loads(broker.sigil("ca", "rotate", "--purpose", "x509-svid", "--phase", "activate", "--json").stdout)
    assert by_state(s, "x509-svid", "active")["id"] == new["id"]
    previous = by_state(s, "x509-svid", "previous")
    assert previous["id"] == old["id"] and previous["retire_safe_at"] > previous["deactivated_at"] > 0
    assert svid_verifies_with_bundle(broker, tmp_path, "after-activate")

    early = broker.sigil("ca", "rotate", "--purpose", "x509-svid", "--phase", "retire", check=False)
    assert early.returncode != 0 and "--force" in early.stderr, early.stderr
    broker.sigil("ca", "rotate", "--purpose", "x509-svid", "--phase", "retire", "--force")
    s = status(broker)
    assert s["phases"]["x509-svid"] == "standby"
    assert by_state(s, "x509-svid", "retired")["id"] == old["id"]
    assert broker.sigil("bundle", "--format", "pem").stdout.count("BEGIN CERTIFICATE") == 1
    assert svid_verifies_with_bundle(broker, tmp_path, "after-retire")


def test_a_step_from_the_wrong_phase_names_what_to_do(broker):
    p = broker.sigil("ca", "rotate", "--purpose", "jwt-svid", "--phase", "activate", check=False)
    assert p.returncode != 0 and "prepare a key first" in p.stderr, p.stderr


def test_a_schedule_that_would_activate_before_agents_fetched_the_key_refuses_to_start(sigil_bin, tmp_path):
    seal = tmp_path / "seal.key"
    seal.write_text("11" * 32)
    seal.chmod(0o600)
    cfg = tmp_path / "server.yaml"
    cfg.write_text("\n".join([
        "trust_domain: example.org",
        f"listen: 127.0.0.1:{free_port()}",
        f"data_dir: {tmp_path / 'data'}",
        f"seal_key_file: {seal}",
        "bundle_refresh_hint: 300",
        "ca: {rotation: {activate_after_seconds: 599}}",
    ]) + "\n")
    p = subprocess.run([sigil_bin, "server", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "activate_after_seconds (599) must be at least twice bundle_refresh_hint (300)" in p.stderr, p.stderr
