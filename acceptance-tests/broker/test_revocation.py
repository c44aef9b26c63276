"""X.509 revocation checked by relying parties we did not write: openssl
verify with the CRL the broker serves over HTTPS, nginx (Debian) with
`ssl_crl`, and pkilint on the CRL and on SVIDs naming it.

The broker runs with `revocation: {crl_distribution_points: true}`, so each
SVID names its CRL; the tests fetch the CRL from that URL with curl."""
import json
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from sigil_harness import Broker, free_port, require_tool, stop_process


@pytest.fixture
def crl_broker(sigil_bin, tmp_path):
    port = free_port()
    seal = tmp_path / "seal.key"
    seal.write_text("5e" * 32)
    seal.chmod(0o600)
    cfg = tmp_path / "server.yaml"
    cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {tmp_path / 'data'}\n"
                   f"seal_key_file: {seal}\nadmin_identity_ttl: 86400\n"
                   "revocation: {crl_distribution_points: true, crl_validity_seconds: 600}\n")
    b = Broker(sigil_bin, tmp_path / "data", port=port, config=cfg).start()
    yield b
    b.stop()


def issue(broker, tmp_path: Path, name: str) -> tuple[Path, str]:
    out = tmp_path / name
    broker.sigil("svid", "x509", "--spiffe-id", f"spiffe://sigil.local/svc/{name}", "--out", str(out))
    serial = format(x509.load_pem_x509_certificate((out / "svid.pem").read_bytes()).serial_number, "x")
    return out, serial


def crl_url(svid: Path) -> str:
    cert = x509.load_pem_x509_certificate((svid / "svid.pem").read_bytes())
    cdp = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    return cdp[0].full_name[0].value


def fetch_crl(broker, url: str, tmp_path: Path) -> Path:
    """The CRL at `url` over HTTPS (the broker's serving CA), as DER and PEM; returns the PEM."""
    curl = require_tool("curl", "apt-get install curl")
    openssl = require_tool("openssl", "apt-get install openssl")
    der = tmp_path / "crl.der"
    r = subprocess.run([curl, "-sS", "--fail", "--cacert", broker.ca, "-o", str(der), "-w", "%{content_type}", url],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "application/pkix-crl", r.stdout
    pem = tmp_path / "crl.pem"
    subprocess.run([openssl, "crl", "-inform", "DER", "-in", str(der), "-out", str(pem)], check=True, capture_output=True)
    return pem


def bundle(broker, tmp_path: Path) -> Path:
    p = tmp_path / "bundle.pem"
    p.write_text(broker.sigil("bundle", "--format", "pem").stdout)
    return p


def openssl_verify(bundle_pem: Path, crl_pem: Path, svid: Path) -> subprocess.CompletedProcess:
    openssl = require_tool("openssl", "apt-get install openssl")
    return subprocess.run([openssl, "verify", "-crl_check", "-CAfile", str(bundle_pem), "-CRLfile", str(crl_pem),
                           str(svid / "svid.pem")], capture_output=True, text=True)


def revoke_one(crl_broker, tmp_path):
    revoked, revoked_serial = issue(crl_broker, tmp_path, "revoked")
    kept, _ = issue(crl_broker, tmp_path, "kept")
    out = crl_broker.sigil_json("svid", "revoke", "--serial", revoked_serial, "--reason", "keyCompromise")
    assert out == {"revoked": [revoked_serial.rjust(32, "0")]}, out
    crl = fetch_crl(crl_broker, crl_url(revoked), tmp_path)
    return revoked, kept, crl


def test_openssl_verify_with_the_served_crl_refuses_a_revoked_svid_and_accepts_another(crl_broker, tmp_path):
    revoked, kept, crl = revoke_one(crl_broker, tmp_path)
    roots = bundle(crl_broker, tmp_path)
    r = openssl_verify(roots, crl, revoked)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "certificate revoked" in r.stdout + r.stderr, r.stdout + r.stderr
    r = openssl_verify(roots, crl, kept)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr
    # The same CRL names the revocation reason.
    text = subprocess.run(["openssl", "crl", "-in", str(crl), "-noout", "-text"], capture_output=True, text=True, check=True).stdout
    assert "Key Compromise" in text and "X509v3 CRL Number" in text and "Authority Key Identifier" in text, text


def test_nginx_with_ssl_crl_refuses_a_revoked_client_svid(crl_broker, tmp_path):
    nginx = require_tool("nginx", "apt-get install nginx-light")
    curl = require_tool("curl", "apt-get install curl")
    openssl = require_tool("openssl", "apt-get install openssl")
    revoked, kept, crl = revoke_one(crl_broker, tmp_path)
    roots = bundle(crl_broker, tmp_path)
    # nginx's own serving certificate: self-signed, trusted by curl with --cacert.
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(prefix / "server.key"), "-out", str(prefix / "server.pem")], check=True, capture_output=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {prefix}/server.pem;
        ssl_certificate_key {prefix}/server.key;
        ssl_client_certificate {roots};
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_crl {crl};
        location / {{ return 200 "hello $ssl_client_s_dn_legacy\\n"; }}
    }}
}}
""")
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 15
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() + (prefix / "logs" / "error.log").read_text()
            try:
                import socket
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.time() < deadline, "nginx did not listen"
                time.sleep(0.05)

        def get(svid: Path) -> str:
            r = subprocess.run([curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(prefix / "server.pem"),
                                "--cert", str(svid / "svid.pem"), "--key", str(svid / "svid.key"),
                                "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/"],
                               capture_output=True, text=True, timeout=30)
            return r.stdout

        assert get(kept) == "200"
        # nginx answers a client certificate that fails verification with 400.
        assert get(revoked) == "400"
        assert "certificate revoked" in (prefix / "logs" / "error.log").read_text()
    finally:
        stop_process(proc)


def test_the_crl_and_svids_naming_it_pass_pkilint(crl_broker, tmp_path):
    lint_crl = require_tool("lint_crl", "pip install pkilint")
    lint_cert = require_tool("lint_pkix_cert", "pip install pkilint")
    revoked, kept, crl = revoke_one(crl_broker, tmp_path)
    r = subprocess.run([lint_crl, "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", "-f", "JSON", str(crl)],
                       capture_output=True, text=True)
    findings = [f for res in json.loads(r.stdout)["results"] for f in res["finding_descriptions"]]
    assert findings == [], findings
    r = subprocess.run([lint_cert, "lint", "-s", "WARNING", "-f", "JSON", str(kept / "svid.pem")], capture_output=True, text=True)
    findings = [f for res in json.loads(r.stdout)["results"] for f in res["finding_descriptions"]]
    # pkilint flags every spiffe:// URI as invalid syntax: the one known false positive.
    assert [f for f in findings if f["code"] != "pkix.invalid_uri_syntax"] == [], findings


def test_an_unknown_serial_is_refused_with_a_clear_error(crl_broker):
    r = crl_broker.sigil("svid", "revoke", "--serial", "0123abcd", check=False)
    assert r.returncode != 0
    assert "0123abcd" in r.stderr and "issued by this broker" in r.stderr, r.stderr
