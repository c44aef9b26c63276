"""CA and JWT keys in a PKCS#11 token (SoftHSM2), `keys: {backend: pkcs11, ...}` (docs/hsm.md).

The real `sigil server` generates its X.509-SVID CA, internal CA and JWT keys inside a SoftHSM2 token
this test initialises in a temporary token directory. Code we did not write checks the result: openssl
verifies X.509-SVIDs against the served bundle, PyJWT verifies JWT-SVIDs against the JWKS, and
OpenSC's pkcs11-tool lists the token's private keys as sensitive and never extractable. The store rows
hold a reference and no sealed key; a restart reuses the same token keys.
"""
import json
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sigil_harness import Broker, Postgres, free_port, require_tool

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
LABEL = "sigil-ca"
PIN = "hsm-user-pin-4711"
SO_PIN = "hsm-so-pin-0815"


class SoftHsm:
    """A SoftHSM2 token directory of its own (SOFTHSM2_CONF) with one initialised token."""

    def __init__(self, tmp_path: Path, label: str = LABEL):
        self.util = require_tool("softhsm2-util", "apt-get install softhsm2")
        if not MODULE.exists():
            pytest.fail(f"{MODULE} missing: apt-get install softhsm2 (scripts/setup.sh does)")
        self.tokens = tmp_path / "tokens"
        self.tokens.mkdir()
        self.conf = tmp_path / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {self.tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
        self.env = {"SOFTHSM2_CONF": str(self.conf)}
        subprocess.run([self.util, "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN],
                       env={**os.environ, **self.env}, check=True, capture_output=True)

    def private_keys(self) -> str:
        """pkcs11-tool's listing of the token's private keys (attributes as OpenSC reads them)."""
        tool = require_tool("pkcs11-tool", "apt-get install opensc")
        r = subprocess.run([tool, "--module", str(MODULE), "--token-label", LABEL, "--login", "--pin", PIN,
                            "--list-objects", "--type", "privkey"], env={**os.environ, **self.env},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def public_key_der(self, key_id: str) -> bytes:
        tool = require_tool("pkcs11-tool", "apt-get install opensc")
        r = subprocess.run([tool, "--module", str(MODULE), "--token-label", LABEL, "--read-object", "--type", "pubkey",
                            "--id", key_id], env={**os.environ, **self.env}, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout


def write_config(tmp_path: Path, name: str, port: int, extra: str = "", keys: str | None = None, seal: Path | None = None) -> Path:
    pin = tmp_path / "pin"
    if not pin.exists():
        pin.write_text(PIN + "\n")
        pin.chmod(0o600)
    if seal is None:
        seal = tmp_path / "seal.key"
        if not seal.exists():
            seal.write_text("5e" * 32)
            seal.chmod(0o600)
    keys = keys or f"{{backend: pkcs11, module: {MODULE}, token_label: {LABEL}, pin_file: {pin}}}"
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {tmp_path / name}\n"
                   f"seal_key_file: {seal}\nadmin_identity_ttl: 86400\nkeys: {keys}\n{extra}")
    cfg.chmod(0o600)
    return cfg


def start(sigil_bin, tmp_path, hsm: SoftHsm, name: str = "data", extra: str = "", port: int | None = None) -> Broker:
    port = port or free_port()
    return Broker(sigil_bin, tmp_path / name, port=port, config=write_config(tmp_path, name, port, extra), env=hsm.env).start()


def ca_rows(db: Path) -> list[dict]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = c.execute("SELECT id, purpose, alg, sealed_key, key_ref FROM ca_keys").fetchall()
    finally:
        c.close()
    return [{"id": r[0], "purpose": r[1], "alg": r[2], "sealed_key": r[3], "key_ref": json.loads(r[4]) if r[4] else None} for r in rows]


def bundle_roots(broker: Broker) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(broker.sigil("bundle", "--format", "pem").stdout.encode())


def jwks(broker: Broker) -> dict:
    doc = requests.get(f"{broker.url}/.well-known/openid-configuration", verify=broker.ca, timeout=10).json()
    return requests.get(doc["jwks_uri"], verify=broker.ca, timeout=10).json()


def openssl_verify(broker: Broker, tmp_path: Path, spiffe_id: str) -> None:
    openssl = require_tool("openssl", "apt-get install openssl")
    out = tmp_path / f"svid-{abs(hash(spiffe_id))}"
    broker.sigil("svid", "x509", "--spiffe-id", spiffe_id, "--out", str(out))
    roots = tmp_path / "roots.pem"
    roots.write_text(broker.sigil("bundle", "--format", "pem").stdout)
    r = subprocess.run([openssl, "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(roots), str(out / "svid.pem")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr


def pyjwt_verify(broker: Broker, spiffe_id: str, keys: dict | None = None) -> dict:
    token = broker.sigil("svid", "jwt", "--spiffe-id", spiffe_id, "--audience", "hsm-test").stdout.strip()
    keys = keys or jwks(broker)
    header = jwt.get_unverified_header(token)
    match = [k for k in keys["keys"] if k["kid"] == header["kid"]]
    assert len(match) == 1, "kid must name exactly one published key"
    return jwt.decode(token, key=jwt.PyJWK(match[0]), algorithms=[match[0]["alg"]], audience="hsm-test", issuer=broker.url)


def test_svids_signed_by_token_keys_verify_with_openssl_and_pyjwt_and_no_key_material_is_stored(sigil_bin, tmp_path):
    hsm = SoftHsm(tmp_path)
    b = start(sigil_bin, tmp_path, hsm)
    try:
        openssl_verify(b, tmp_path, "spiffe://sigil.local/hsm/web")
        assert pyjwt_verify(b, "spiffe://sigil.local/hsm/ci")["sub"] == "spiffe://sigil.local/hsm/ci"
        # Concurrent issuance through the session pool (default 4 sessions): every request answered.
        errors = []

        def one(i):
            try:
                pyjwt_verify(b, f"spiffe://sigil.local/hsm/p{i}")
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        rows = ca_rows(b.data_dir / "sigil.db")
        # The SSH CAs too: ECDSA P-256 in the token (ed25519 is the sealed default only).
        assert sorted(r["purpose"] for r in rows) == ["database", "internal", "jwt-svid", "kubernetes", "ssh-host", "ssh-user", "x509-svid"]
        assert {r["alg"] for r in rows if r["purpose"].startswith("ssh-")} == {"ec-p256"}
        for r in rows:
            assert r["sealed_key"] == b"", f"{r['purpose']}: a token key has no sealed blob in the store"
            ref = r["key_ref"]
            assert ref["backend"] == "pkcs11" and ref["token_label"] == LABEL, ref
            assert set(ref) == {"backend", "token_label", "token_serial", "id", "label", "public_key"}, "a reference only"
        listing = hsm.private_keys()
        blocks = listing.split("Private Key Object")[1:]
        assert len(blocks) == 7, listing
        for r in rows:
            block = next(bl for bl in blocks if f"ID:         {r['key_ref']['id']}" in bl)
            access = next(line for line in block.splitlines() if "Access:" in line)
            assert "sensitive" in access and "never extractable" in access, block
            usage = next(line for line in block.splitlines() if "Usage:" in line)
            assert "decrypt" not in usage and "unwrap" not in usage, f"signing only: {block}"
        # The bundle's X.509-SVID CA certificate carries the token's public key (as OpenSC reads it).
        x509_ref = next(r["key_ref"] for r in rows if r["purpose"] == "x509-svid")
        token_pub = serialization.load_der_public_key(hsm.public_key_der(x509_ref["id"]))
        (root,) = bundle_roots(b)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        assert root.public_key().public_bytes(*spki) == token_pub.public_bytes(*spki)
        assert PIN not in b.log.read_text(), "the PIN is never logged"
    finally:
        b.stop()


def test_a_restart_signs_with_the_same_token_keys(sigil_bin, tmp_path):
    hsm = SoftHsm(tmp_path)
    port = free_port()
    b = start(sigil_bin, tmp_path, hsm, port=port)
    roots, keys = b.sigil("bundle", "--format", "pem").stdout, jwks(b)
    tls_ca = Path(b.ca).read_text()
    b.stop()
    b = start(sigil_bin, tmp_path, hsm, port=port)
    try:
        assert b.sigil("bundle", "--format", "pem").stdout == roots, "same X.509-SVID CA after a restart"
        assert jwks(b) == keys, "same JWT key after a restart"
        assert Path(b.ca).read_text() == tls_ca, "same internal CA after a restart"
        # Tokens issued now verify with the JWKS fetched before the restart.
        pyjwt_verify(b, "spiffe://sigil.local/hsm/after-restart", keys=keys)
        openssl_verify(b, tmp_path, "spiffe://sigil.local/hsm/after-restart")
        assert hsm.private_keys().count("Private Key Object") == 7, "no new key generated at the restart"
    finally:
        b.stop()


def failed_start(sigil_bin, tmp_path, hsm: SoftHsm, keys: str, env: dict | None = None) -> str:
    port = free_port()
    cfg = write_config(tmp_path, "data", port, keys=keys)
    p = subprocess.run([sigil_bin, "server", "--config", str(cfg)], env={**os.environ, **hsm.env, **(env or {})},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0, "the broker must not start"
    return p.stdout + p.stderr


def test_a_wrong_pin_stops_the_start_with_a_clear_error_that_never_shows_a_pin(sigil_bin, tmp_path):
    hsm = SoftHsm(tmp_path)
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("not-the-pin-93817\n")
    out = failed_start(sigil_bin, tmp_path, hsm, f"{{backend: pkcs11, module: {MODULE}, token_label: {LABEL}, pin_file: {wrong}}}")
    assert "login to token" in out and "PinIncorrect" in out, out
    assert "not-the-pin-93817" not in out and PIN not in out, "the PIN must never be printed"
    # The PIN from the environment: same error, never printed.
    out = failed_start(sigil_bin, tmp_path, hsm, f"{{backend: pkcs11, module: {MODULE}, token_label: {LABEL}}}",
                       env={"SIGIL_PKCS11_PIN": "env-pin-55121"})
    assert "login to token" in out and "env-pin-55121" not in out, out
    assert not (tmp_path / "data" / "sigil.db").exists() or ca_rows(tmp_path / "data" / "sigil.db") == [], \
        "nothing generated without a login"


def test_a_missing_token_or_module_stops_the_start_with_a_clear_error(sigil_bin, tmp_path):
    hsm = SoftHsm(tmp_path)
    pin = tmp_path / "pin"
    pin.write_text(PIN)
    out = failed_start(sigil_bin, tmp_path, hsm, f"{{backend: pkcs11, module: {MODULE}, token_label: no-such-token, pin_file: {pin}}}")
    assert 'token "no-such-token" not found' in out and f'"{LABEL}"' in out, out
    out = failed_start(sigil_bin, tmp_path, hsm, f"{{backend: pkcs11, module: /nonexistent/libpkcs11.so, token_label: {LABEL}, pin_file: {pin}}}")
    assert "PKCS#11 module /nonexistent/libpkcs11.so" in out, out
    out = failed_start(sigil_bin, tmp_path, hsm, f"{{backend: pkcs11, module: {MODULE}, pin_file: {pin}}}")
    assert "keys.token_label is required" in out, out
    assert PIN not in out


@pytest.mark.parametrize("key_alg,using", [(None, "ecdsa-sha2-nistp256"), ("rsa", "rsa-sha2-256")])
def test_ssh_certificates_are_signed_through_the_token(sigil_bin, tmp_path, key_alg, using):
    """The SSH user CA in the token (ECDSA P-256 by default there, or RSA): `sigil ssh user-cert` gets a
    certificate whose CA signature ssh-keygen verifies, made by C_Sign."""
    hsm = SoftHsm(tmp_path)
    b = start(sigil_bin, tmp_path, hsm, extra=f"ssh: {{key_alg: {key_alg}}}\n" if key_alg else "")
    try:
        rows = ca_rows(b.data_dir / "sigil.db")
        ssh_rows = [r for r in rows if r["purpose"] == "ssh-user"]
        assert len(ssh_rows) == 1 and ssh_rows[0]["key_ref"]["backend"] == "pkcs11" and ssh_rows[0]["sealed_key"] == b""
        res = tmp_path / "ssh.yaml"
        res.write_text("kind: role\nname: ssh\nallow:\n  ssh:\n    principals: [deploy]\n---\nkind: bot\nname: ops\nroles: [ssh]\n")
        b.sigil("apply", "-f", str(res))
        token = b.sigil("token", "create", "--bot", "ops", "--name", "ops-t", "--uses", "1").stdout.strip()
        ident = tmp_path / "ops.identity"
        b.sigil("join", "--token", token, "--ca-file", b.ca, "--out", str(ident))
        out = tmp_path / "ssh-out"
        b.sigil("ssh", "user-cert", "--principal", "deploy", "--dir", str(out), identity=str(ident))
        [cert] = list(out.glob("id_*-cert.pub"))
        keygen = require_tool("ssh-keygen", "apt-get install openssh-client")
        shown = subprocess.run([keygen, "-L", "-f", str(cert)], capture_output=True, text=True)
        assert shown.returncode == 0, shown.stderr  # -L checks the CA signature
        ca_line = b.sigil("ssh", "ca-keys", "--type", "user").stdout.strip()
        ca_file = tmp_path / "user_ca.pub"
        ca_file.write_text(ca_line + "\n")
        fp = subprocess.run([keygen, "-l", "-f", str(ca_file)], capture_output=True, text=True, check=True).stdout.split()[1]
        assert f"{fp} (using {using})" in shown.stdout, shown.stdout
    finally:
        b.stop()


def test_database_certificates_are_signed_through_the_token(sigil_bin, tmp_path):
    """The database CA key in the token: `sigil db cert` gets a client certificate (its subject written by
    the broker and signed again through C_Sign) that openssl verifies against the database CA bundle."""
    hsm = SoftHsm(tmp_path)
    b = start(sigil_bin, tmp_path, hsm)
    try:
        rows = [r for r in ca_rows(b.data_dir / "sigil.db") if r["purpose"] in ("database", "kubernetes")]
        assert len(rows) == 2 and all(r["key_ref"]["backend"] == "pkcs11" and r["sealed_key"] == b"" for r in rows), rows
        res = tmp_path / "db.yaml"
        res.write_text("kind: role\nname: db\nallow:\n  database:\n    users: [app]\n---\nkind: bot\nname: app\nroles: [db]\n")
        b.sigil("apply", "-f", str(res))
        token = b.sigil("token", "create", "--bot", "app", "--name", "app-t", "--uses", "1").stdout.strip()
        ident = tmp_path / "app.identity"
        b.sigil("join", "--token", token, "--ca-file", b.ca, "--out", str(ident))
        out = tmp_path / "db-out"
        b.sigil("db", "cert", "--protocol", "postgres", "--user", "app", "--host", "127.0.0.1", "--dir", str(out), identity=str(ident))
        openssl = require_tool("openssl", "apt-get install openssl")
        r = subprocess.run([openssl, "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(out / "ca.pem"), str(out / "tls.crt")],
                           capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr
        cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
        assert cert.subject.rfc4514_string() == "CN=app"
        db_ref = next(r["key_ref"] for r in rows if r["purpose"] == "database")
        token_pub = serialization.load_der_public_key(hsm.public_key_der(db_ref["id"]))
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
        assert ca.public_key().public_bytes(*spki) == token_pub.public_bytes(*spki), "the database CA key is the token's"
    finally:
        b.stop()


def test_an_ed25519_ssh_ca_in_a_token_stops_the_start_with_a_clear_error(sigil_bin, tmp_path):
    hsm = SoftHsm(tmp_path)
    cfg = write_config(tmp_path, "data", free_port(), extra="ssh: {key_alg: ed25519}\n")
    p = subprocess.run([sigil_bin, "server", "--config", str(cfg)], env={**os.environ, **hsm.env},
                       capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode != 0, "the broker must not start"
    assert "ssh.key_alg: ed25519 is not supported with keys.backend: pkcs11" in out and "use ecdsa or rsa" in out, out
    assert hsm.private_keys().count("Private Key Object") == 0, "nothing generated"


def test_replicas_on_postgres_share_the_token_keys(sigil_bin, tmp_path):
    """Two replicas on one PostgreSQL and one token directory: one set of keys, generated once, in the token."""
    hsm = SoftHsm(tmp_path)
    pg = Postgres()
    started = []
    try:
        started.append(start(sigil_bin, tmp_path, hsm, "a", extra=f"store: {pg.url}\n"))
        started.append(start(sigil_bin, tmp_path, hsm, "b", extra=f"store: {pg.url}\n"))
        a, b = started
        assert a.sigil("bundle", "--format", "pem").stdout == b.sigil("bundle", "--format", "pem").stdout
        assert jwks(a) == jwks(b)
        # Issued by B, verified with A's JWKS and bundle.
        pyjwt_verify(b, "spiffe://sigil.local/hsm/replica", keys=jwks(a))
        openssl_verify(b, tmp_path, "spiffe://sigil.local/hsm/replica")
        assert hsm.private_keys().count("Private Key Object") == 7
        rows = subprocess.run([str(Path("/usr/lib/postgresql/15/bin/psql")), pg.url, "-At", "-c",
                               "SELECT purpose || ':' || length(sealed_key) || ':' || (key_ref <> '') FROM ca_keys ORDER BY purpose"],
                              capture_output=True, text=True, timeout=60)
        assert rows.returncode == 0, rows.stderr
        assert rows.stdout.split() == ["database:0:true", "internal:0:true", "jwt-svid:0:true", "kubernetes:0:true", "ssh-host:0:true", "ssh-user:0:true",
                                       "x509-svid:0:true"]
    finally:
        for r in started:
            r.stop()
        pg.stop()


def test_a_removed_token_fails_issuance_with_a_clear_error_and_the_broker_stays_up(sigil_bin, tmp_path):
    hsm = SoftHsm(tmp_path)
    b = start(sigil_bin, tmp_path, hsm)
    try:
        pyjwt_verify(b, "spiffe://sigil.local/hsm/before")
        subprocess.run([hsm.util, "--delete-token", "--token", LABEL], env={**os.environ, **hsm.env}, check=True, capture_output=True)
        for args in (["svid", "jwt", "--spiffe-id", "spiffe://sigil.local/hsm/gone", "--audience", "a"],
                     ["svid", "x509", "--spiffe-id", "spiffe://sigil.local/hsm/gone", "--out", str(tmp_path / "gone")]):
            p = b.sigil(*args, check=False)
            assert p.returncode != 0 and "internal error" in p.stderr, p.stderr
        log = b.log.read_text()
        assert f'PKCS#11 token "{LABEL}" has no key with CKA_ID' in log, log
        assert PIN not in log
        # Still up: the public documents are served from memory.
        assert requests.get(f"{b.url}/.well-known/spiffe-bundle", verify=b.ca, timeout=10).status_code == 200
    finally:
        b.stop()


def test_another_key_under_the_stored_id_is_refused_at_start(sigil_bin, tmp_path):
    """The token is re-initialised and a key of the attacker's choosing is put under the stored CKA_ID."""
    hsm = SoftHsm(tmp_path)
    port = free_port()
    b = start(sigil_bin, tmp_path, hsm, port=port)
    b.stop()
    rows = ca_rows(tmp_path / "data" / "sigil.db")
    subprocess.run([hsm.util, "--delete-token", "--token", LABEL], env={**os.environ, **hsm.env}, check=True, capture_output=True)
    subprocess.run([hsm.util, "--init-token", "--free", "--label", LABEL, "--pin", PIN, "--so-pin", SO_PIN],
                   env={**os.environ, **hsm.env}, check=True, capture_output=True)
    tool = require_tool("pkcs11-tool", "apt-get install opensc")
    for r in rows:
        key_type = "EC:prime256v1" if r["alg"] == "ec-p256" else "rsa:2048"
        subprocess.run([tool, "--module", str(MODULE), "--token-label", LABEL, "--login", "--pin", PIN, "--keypairgen",
                        "--key-type", key_type, "--id", r["key_ref"]["id"], "--label", r["key_ref"]["label"], "--usage-sign",
                        "--sensitive"], env={**os.environ, **hsm.env}, check=True, capture_output=True, timeout=60)
    p = subprocess.run([sigil_bin, "server", "--config", str(tmp_path / "data.yaml")], env={**os.environ, **hsm.env},
                       capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert "refused" in out and "public key differs from the one in the store" in out, out


def ca_status(broker: Broker) -> dict:
    return json.loads(broker.sigil("ca", "status", "--json").stdout)


def key_in(status: dict, purpose: str, state: str) -> dict:
    [k] = [k for k in status["keys"] if k["purpose"] == purpose and k["state"] == state]
    return k


def test_a_rotation_with_token_keys_prepares_activates_and_retires_destroying_the_old_token_object(sigil_bin, tmp_path):
    """docs/ca-rotation.md "Keys in an HSM": the new keys are generated in the token, SVIDs verify (openssl,
    PyJWT) against the served bundle before and after, and retire destroys the old key's token object."""
    hsm = SoftHsm(tmp_path)
    # Short bounds so retire_safe_at comes within seconds: deactivation + 5 s + 5 s + 2 s.
    extra = "x509_svid_max_ttl: 5\njwt_svid_max_ttl: 5\nbundle_refresh_hint: 2\nca: {jwks_cache_allowance_seconds: 2}\n"
    b = start(sigil_bin, tmp_path, hsm, extra=extra)
    try:
        openssl_verify(b, tmp_path, "spiffe://sigil.local/rot/before")
        pyjwt_verify(b, "spiffe://sigil.local/rot/before")
        old = {p: key_in(ca_status(b), p, "active") for p in ("x509-svid", "jwt-svid")}
        assert all(k["backend"] == "pkcs11" for k in old.values())
        refs = {r["id"]: r["key_ref"] for r in ca_rows(b.data_dir / "sigil.db")}

        for p in old:
            b.sigil("ca", "rotate", "--purpose", p, "--phase", "prepare")
        s = ca_status(b)
        new = {p: key_in(s, p, "prepared") for p in old}
        assert all(k["backend"] == "pkcs11" for k in new.values()), "prepared keys are generated in the token"
        assert hsm.private_keys().count("Private Key Object") == 9, "7 active (3 SVID/internal, 2 SSH, database, kubernetes) and 2 prepared"
        rows = {r["id"]: r for r in ca_rows(b.data_dir / "sigil.db")}
        assert all(rows[k["id"]]["sealed_key"] == b"" for k in new.values()), "no key material in the store"
        assert len(bundle_roots(b)) == 2 and len(jwks(b)["keys"]) == 2
        openssl_verify(b, tmp_path, "spiffe://sigil.local/rot/prepared")

        for p in old:
            b.sigil("ca", "rotate", "--purpose", p, "--phase", "activate")
        roots = bundle_roots(b)
        assert len(roots) == 2, "the previous CA stays published"
        openssl_verify(b, tmp_path, "spiffe://sigil.local/rot/activated")
        assert pyjwt_verify(b, "spiffe://sigil.local/rot/activated") is not None
        token = b.sigil("svid", "jwt", "--spiffe-id", "spiffe://sigil.local/rot/kid", "--audience", "hsm-test").stdout.strip()
        assert jwt.get_unverified_header(token)["kid"] == new["jwt-svid"]["id"], "the activated token key signs"

        # retire at retire_safe_at, without --force.
        safe_at = max(key_in(ca_status(b), p, "previous")["retire_safe_at"] for p in old)
        assert safe_at - time.time() < 20, safe_at - time.time()
        time.sleep(max(0.0, safe_at - time.time()) + 1)
        for p in old:
            b.sigil("ca", "rotate", "--purpose", p, "--phase", "retire")
        s = ca_status(b)
        assert {key_in(s, p, "retired")["id"] for p in old} == {k["id"] for k in old.values()}
        (root,) = bundle_roots(b)
        assert [k["kid"] for k in jwks(b)["keys"]] == [new["jwt-svid"]["id"]]
        openssl_verify(b, tmp_path, "spiffe://sigil.local/rot/retired")
        pyjwt_verify(b, "spiffe://sigil.local/rot/retired")
        listing = hsm.private_keys()
        assert listing.count("Private Key Object") == 7, "the retired keys' token objects are destroyed"
        for k in old.values():
            assert f"ID:         {refs[k['id']]['id']}" not in listing, listing
    finally:
        b.stop()


def test_a_crl_signed_by_the_token_key_makes_openssl_refuse_a_revoked_svid(sigil_bin, tmp_path):
    """Revocation with the CA key in the token: the served CRL is signed through PKCS#11 (docs/revocation.md)."""
    openssl = require_tool("openssl", "apt-get install openssl")
    hsm = SoftHsm(tmp_path)
    b = start(sigil_bin, tmp_path, hsm, extra="revocation: {crl_distribution_points: true}\n")
    try:
        outs = {}
        for name in ("revoked", "kept"):
            out = tmp_path / name
            b.sigil("svid", "x509", "--spiffe-id", f"spiffe://sigil.local/hsm/{name}", "--out", str(out))
            outs[name] = out
        cert = x509.load_pem_x509_certificate((outs["revoked"] / "svid.pem").read_bytes())
        b.sigil("svid", "revoke", "--serial", format(cert.serial_number, "x"))
        url = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value
        crl_pem = requests.get(url.replace(".crl", ".pem"), verify=b.ca, timeout=10).text
        (tmp_path / "crl.pem").write_text(crl_pem)
        crl = x509.load_pem_x509_crl(crl_pem.encode())
        roots = bundle_roots(b)
        assert crl.is_signature_valid(roots[0].public_key()), "signed by the token's CA key"
        (tmp_path / "roots.pem").write_text(b.sigil("bundle", "--format", "pem").stdout)

        def verify(name):
            return subprocess.run([openssl, "verify", "-crl_check", "-CAfile", str(tmp_path / "roots.pem"),
                                   "-CRLfile", str(tmp_path / "crl.pem"), str(outs[name] / "svid.pem")], capture_output=True, text=True)
        r = verify("revoked")
        assert r.returncode != 0 and "certificate revoked" in r.stdout + r.stderr, r.stdout + r.stderr
        r = verify("kept")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        b.stop()
