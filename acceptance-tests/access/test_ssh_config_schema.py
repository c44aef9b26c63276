"""The `ssh` and `ssh-host` outputs in schemas/agent-config.schema.json agree with what
`sigil agent --check` accepts (checked with the `jsonschema` package), and the example
config under examples/access/ssh/ is valid for both."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "agent-config.schema.json").read_text())
BASE = "broker: 127.0.0.1:8443\nca_file: /tmp/ca.pem\nstate_dir: /tmp/state\njoin: {method: token, token_file: /tmp/t}\noutputs:\n"

GOOD = [
    "  - type: ssh\n    dir: /run/sigil/ssh\n    principals: [deploy]\n",
    "  - type: ssh\n    dir: /run/sigil/ssh\n    principals: [deploy, ops]\n    hosts: ['*.example.org', '10.0.0.*']\n"
    "    key_type: rsa\n    extensions: [permit-pty]\n    ttl: 30m\n    owner: root\n    mode: \"0600\"\n",
    "  - type: ssh-host\n    dir: /etc/ssh/sigil\n    names: [web1.example.org, 10.0.0.5]\n    key_type: ecdsa\n    ttl: 24h\n",
    "  - type: ssh-host\n    dir: /etc/ssh/sigil\n    names: [web1]\n    authorized_principals: {deploy: [deploy, ops], root: [break-glass]}\n",
]

BAD = {
    "ssh_without_principals": "  - type: ssh\n    dir: /run/ssh\n",
    "ssh_relative_dir": "  - type: ssh\n    dir: run/ssh\n    principals: [a]\n",
    "ssh_dir_with_percent": "  - type: ssh\n    dir: /run/%u/ssh\n    principals: [a]\n",
    "principal_with_space": "  - type: ssh\n    dir: /run/ssh\n    principals: ['a b']\n",
    "principal_with_comma": "  - type: ssh\n    dir: /run/ssh\n    principals: ['a,b']\n",
    "host_pattern_with_hash": "  - type: ssh\n    dir: /run/ssh\n    principals: [a]\n    hosts: ['#x']\n",
    "dsa_key": "  - type: ssh\n    dir: /run/ssh\n    principals: [a]\n    key_type: dsa\n",
    "ssh_host_without_names": "  - type: ssh-host\n    dir: /etc/ssh/sigil\n",
    "login_escaping_the_directory": "  - type: ssh-host\n    dir: /etc/ssh/sigil\n    names: [w]\n    authorized_principals: {'../x': [a]}\n",
    "login_without_principals": "  - type: ssh-host\n    dir: /etc/ssh/sigil\n    names: [w]\n    authorized_principals: {deploy: []}\n",
    "unknown_field": "  - type: ssh-host\n    dir: /etc/ssh/sigil\n    names: [w]\n    principals: [a]\n",
}


def check(sigil_bin, tmp_path, text) -> subprocess.CompletedProcess:
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    return subprocess.run([sigil_bin, "agent", "--check", "--config", str(f)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("outputs", GOOD)
def test_ssh_outputs_are_accepted_by_schema_and_agent(sigil_bin, tmp_path, outputs):
    text = BASE + outputs
    jsonschema.validate(yaml.safe_load(text), SCHEMA)
    p = check(sigil_bin, tmp_path, text)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("name", sorted(BAD))
def test_invalid_ssh_outputs_are_rejected_by_schema_and_agent(sigil_bin, tmp_path, name):
    text = BASE + BAD[name]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(text), SCHEMA)
    p = check(sigil_bin, tmp_path, text)
    assert p.returncode != 0 and "invalid agent config" in p.stderr, (name, p.stderr)


def test_the_ssh_example_config_is_valid(sigil_bin, tmp_path):
    for name in ("agent-client.yaml", "agent-host.yaml"):
        text = (ROOT / "examples" / "access" / "ssh" / name).read_text()
        jsonschema.validate(yaml.safe_load(text), SCHEMA)
        p = check(sigil_bin, tmp_path, text)
        assert p.returncode == 0, (name, p.stderr)
