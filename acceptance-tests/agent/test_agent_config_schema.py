"""schemas/agent-config.schema.json agrees with what `sigil agent` accepts,
checked with the `jsonschema` package (a validator we did not write)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "agent-config.schema.json").read_text())

BASE = "broker: 127.0.0.1:8443\nca_file: /tmp/ca.pem\nstate_dir: /tmp/state\njoin: {method: token, token_file: /tmp/t}\n"
BAD = {
    "unknown_top_level_field": BASE + "brokr: x\n",
    "jwt_without_audiences": BASE + "outputs:\n  - type: jwt-svid\n    path: /tmp/t\n    spiffe_id: spiffe://a/b\n    audiences: []\n",
    "both_targets": BASE + "outputs:\n  - type: x509-svid\n    dir: /tmp/d\n    spiffe_id: spiffe://a/b\n    workload_identity: w\n",
    "unknown_output_type": BASE + "outputs:\n  - type: ssh-cert\n    path: /tmp/x\n",
    "unknown_join_method": BASE.replace("method: token, token_file: /tmp/t", "method: magic") ,
    "bad_duration": BASE + "identity_ttl: soon\n",
    "aws_web_identity_without_config_file": BASE + "outputs:\n  - type: aws-web-identity\n    token_path: /t\n    role_arn: arn:aws:iam::1:role/r\n    spiffe_id: spiffe://a/b\n",
    "aws_assume_role_without_credentials_file": BASE + "outputs:\n  - type: aws-web-identity\n    assume_role: true\n    role_arn: arn:aws:iam::1:role/r\n    spiffe_id: spiffe://a/b\n",
    "roles_anywhere_bad_trust_anchor": BASE + "outputs:\n  - type: aws-roles-anywhere\n    credentials_file: /c\n    region: us-east-1\n    trust_anchor_arn: ta\n    profile_arn: arn:aws:rolesanywhere:us-east-1:1:profile/p\n    role_arn: arn:aws:iam::1:role/r\n    spiffe_id: spiffe://a/b\n",
    "gcp_audience_not_a_resource_name": BASE + "outputs:\n  - type: gcp-external-account\n    token_path: /t\n    config_path: /c\n    audience: my-pool\n    spiffe_id: spiffe://a/b\n",
    "oidc_join_without_token_source": BASE.replace("method: token, token_file: /tmp/t", "method: github, token_name: gh"),
    "oidc_join_with_two_token_sources": BASE.replace("method: token, token_file: /tmp/t", "method: gitlab, token_name: gl, id_token_file: /t, id_token_env: CI_JOB_JWT"),
    "bound_keypair_without_token_name": BASE.replace("method: token, token_file: /tmp/t", "method: bound_keypair"),
    "gcp_join_without_audience": BASE.replace("method: token, token_file: /tmp/t", "method: gcp, token_name: g"),
    "azure_without_target": BASE + "outputs:\n  - type: azure-federated\n    token_path: /t\n",
    "mode_as_a_decimal_number": BASE + "outputs:\n  - type: identity\n    path: /tmp/i\n    mode: 640\n",
    "mode_writable_by_others": BASE + "outputs:\n  - type: identity\n    path: /tmp/i\n    mode: \"0666\"\n",
    "empty_broker_list": BASE.replace("broker: 127.0.0.1:8443", "broker: []"),
    "health_details_not_a_bool": BASE + "health: {listen: '127.0.0.1:9', details: sometimes}\n",
}


GOOD_JOINS = [
    "{method: github, token_name: gh, id_token_file: /run/gh-token}",
    "{method: oidc, token_name: jenkins, id_token_env: JENKINS_ID_TOKEN}",
    "{method: kubernetes, token_name: k8s}",
    "{method: bound_keypair, token_name: edge, registration_secret_file: /etc/sigil/reg}",
    "{method: iam, token_name: aws-ci, region: eu-west-1}",
    "{method: gcp, token_name: gce, audience: sigil}",
    "{method: tpm, token_name: tpm-nodes, tcti: 'device:/dev/tpmrm0'}",
]


def check(sigil_bin, tmp_path, text) -> subprocess.CompletedProcess:
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    return subprocess.run([sigil_bin, "agent", "--check", "--config", str(f)], capture_output=True, text=True, timeout=30)


def test_example_configs_are_valid_for_schema_and_agent(sigil_bin, tmp_path):
    for example in [ROOT / "examples" / "agent" / "agent.yaml", ROOT / "examples" / "agent" / "cloud.yaml"]:
        text = example.read_text()
        jsonschema.validate(yaml.safe_load(text), SCHEMA)
        p = check(sigil_bin, tmp_path, text)
        assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("name", sorted(BAD))
def test_invalid_config_is_rejected_by_schema_and_agent(sigil_bin, tmp_path, name):
    text = BAD[name]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(text), SCHEMA)
    p = check(sigil_bin, tmp_path, text)
    assert p.returncode != 0 and "invalid agent config" in p.stderr, (name, p.stderr)


def test_owner_group_mode_and_readyz_details_are_accepted_by_schema_and_agent(sigil_bin, tmp_path):
    text = BASE + (
        "outputs:\n  - type: jwt-svid\n    path: /tmp/t\n    audiences: [a]\n    spiffe_id: spiffe://a/b\n"
        "    owner: root\n    group: '0'\n    mode: \"0640\"\n"
        "health: {listen: '127.0.0.1:9', details: true}\n"
    )
    jsonschema.validate(yaml.safe_load(text), SCHEMA)
    p = check(sigil_bin, tmp_path, text)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("join", GOOD_JOINS)
def test_every_join_method_is_accepted_by_schema_and_agent(sigil_bin, tmp_path, join):
    text = BASE.replace("{method: token, token_file: /tmp/t}", join)
    jsonschema.validate(yaml.safe_load(text), SCHEMA)
    p = check(sigil_bin, tmp_path, text)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("broker", ["'127.0.0.1:1,127.0.0.1:8443'", "[127.0.0.1:1, 'broker.example.org:8443']"])
def test_a_broker_list_is_accepted_by_schema_and_agent(sigil_bin, tmp_path, broker):
    text = BASE.replace("broker: 127.0.0.1:8443", f"broker: {broker}")
    jsonschema.validate(yaml.safe_load(text), SCHEMA)
    p = check(sigil_bin, tmp_path, text)
    assert p.returncode == 0, p.stderr
