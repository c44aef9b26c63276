"""X.509-SVIDs issued over the API, checked by code we did not write:
openssl, Python `cryptography`, and pkilint."""
import json
import subprocess

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from sigil_harness import require_tool

SPIFFE_ID = "spiffe://sigil.local/svc/web"


def issue(broker, tmp_path):
    out = tmp_path / "svid"
    broker.sigil("svid", "x509", "--spiffe-id", SPIFFE_ID, "--out", str(out))
    return out


def test_x509_svid_verifies_with_openssl_against_the_trust_bundle(broker, tmp_path):
    openssl = require_tool("openssl", "apt-get install openssl")
    out = issue(broker, tmp_path)
    # The bundle from the broker's public SPIFFE bundle endpoint, not the one written beside the SVID.
    bundle = broker.sigil("bundle", "--format", "pem").stdout
    (tmp_path / "roots.pem").write_text(bundle)
    r = subprocess.run([openssl, "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(tmp_path / "roots.pem"),
                        str(out / "svid.pem")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("OK")
    # The key in svid.key matches the certificate (the key never left the client).
    k = subprocess.run([openssl, "pkey", "-in", str(out / "svid.key"), "-pubout"], capture_output=True, text=True, check=True).stdout
    c = subprocess.run([openssl, "x509", "-in", str(out / "svid.pem"), "-pubkey", "-noout"], capture_output=True, text=True, check=True).stdout
    assert k == c


def test_x509_svid_has_one_uri_san_ca_false_and_critical_digital_signature(broker, tmp_path):
    out = issue(broker, tmp_path)
    cert = x509.load_pem_x509_certificate((out / "svid.pem").read_bytes())
    san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [SPIFFE_ID]
    bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.value.ca is False
    ku = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    assert ku.critical is True
    assert ku.value.digital_signature is True
    assert ku.value.key_cert_sign is False and ku.value.crl_sign is False
    # NotBefore backdated, lifetime capped by the default (1h) plus the backdate.
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 3600 <= lifetime.total_seconds() <= 3610


def test_x509_svid_passes_pkilint_pkix_lint(broker, tmp_path):
    lint = require_tool("lint_pkix_cert", "pip install pkilint")
    out = issue(broker, tmp_path)
    r = subprocess.run([lint, "lint", "-s", "WARNING", "-f", "JSON", str(out / "svid.pem")], capture_output=True, text=True)
    report = json.loads(r.stdout)
    findings = [f for res in report["results"] for f in res["finding_descriptions"]]
    # pkilint flags every spiffe:// URI as invalid syntax: the one known false positive.
    unexpected = [f for f in findings if f["code"] != "pkix.invalid_uri_syntax"]
    assert unexpected == [], unexpected
    assert any(f["code"] == "pkix.invalid_uri_syntax" for f in findings), "lint did not run on the URI SAN"


def test_ca_certificate_passes_pkilint(broker, tmp_path):
    lint = require_tool("lint_pkix_cert", "pip install pkilint")
    bundle = broker.sigil("bundle", "--format", "pem").stdout
    (tmp_path / "ca.pem").write_text(bundle)
    r = subprocess.run([lint, "lint", "-s", "WARNING", "-f", "JSON", str(tmp_path / "ca.pem")], capture_output=True, text=True)
    findings = [f for res in json.loads(r.stdout)["results"] for f in res["finding_descriptions"]]
    assert [f for f in findings if f["code"] != "pkix.invalid_uri_syntax"] == []
