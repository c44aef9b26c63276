"""`sigil kube credential` (the exec plugin of the kubernetes output's exec
kubeconfig) when it cannot give a credential, and the kubernetes output's
config against the JSON schema and `sigil agent --check`. No broker needed.

Per the client-go exec plugin contract the plugin prints nothing on stdout on
failure and the reason on stderr, which kubectl shows to the user.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kube_endpoint import client_env, issue, kubectl, make_ca  # noqa: E402

HERE = Path(__file__).resolve().parent


def test_kube_credential_fails_clearly_on_stderr_when_files_are_missing_or_expired(sigil_bin, tmp_path):
    missing = tmp_path / "missing"
    p = subprocess.run([sigil_bin, "kube", "credential", "--dir", str(missing)], capture_output=True, text=True, timeout=30, env=client_env(tmp_path))
    assert p.returncode != 0 and p.stdout == "", p.stdout
    assert "no Kubernetes credential in" in p.stderr and "kubernetes output" in p.stderr, p.stderr

    # An expired pair in the agent's layout (..data -> generation).
    d = tmp_path / "expired"
    gen = d / "..v1"
    gen.mkdir(parents=True)
    ca_pem, ca_key, ca_cert = make_ca(tmp_path / "ca", "Sigil kubernetes CA")
    crt, key = issue(tmp_path / "ca", "old", ca_key, ca_cert, "deployer", ["deployers"], valid_for=datetime.timedelta(seconds=-1))
    (gen / "tls.crt").write_bytes(crt.read_bytes())
    (gen / "tls.key").write_bytes(key.read_bytes())
    os.symlink("..v1", d / "..data")
    p = subprocess.run([sigil_bin, "kube", "credential", "--dir", str(d)], capture_output=True, text=True, timeout=30, env=client_env(tmp_path))
    assert p.returncode != 0 and p.stdout == "", p.stdout
    assert "expired at" in p.stderr and "BEGIN" not in p.stderr, p.stderr

    # kubectl shows the plugin's reason.
    kc = tmp_path / "kubeconfig"
    kc.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:9", certificate-authority: {ca_pem}}}}}]
users:
- name: u
  user:
    exec: {{apiVersion: client.authentication.k8s.io/v1, command: {sigil_bin}, args: [kube, credential, --dir, {d}], interactiveMode: Never}}
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    p = kubectl(tmp_path, kc, "get", "--raw", "/version")
    assert p.returncode != 0 and "expired at" in p.stderr, p.stderr

    # A client asking for another protocol version is told which one to use.
    kc.write_text(kc.read_text().replace("client.authentication.k8s.io/v1,", "client.authentication.k8s.io/v1beta1,"))
    p = kubectl(tmp_path, kc, "get", "--raw", "/version")
    assert p.returncode != 0 and "speaks client.authentication.k8s.io/v1" in p.stderr, p.stderr


def test_the_kubernetes_output_config_is_accepted_by_schema_and_agent(sigil_bin, tmp_path):
    import jsonschema
    import yaml

    schema = json.loads((HERE.parents[1] / "schemas" / "agent-config.schema.json").read_text())
    base = "broker: 127.0.0.1:8443\nca_file: /tmp/ca.pem\nstate_dir: /tmp/state\njoin: {method: token, token_file: /tmp/t}\n"
    out = "outputs:\n  - type: kubernetes\n    dir: /tmp/kube\n    server: https://127.0.0.1:6443\n    user: deployer\n"
    good = base + out + "    groups: [deployers]\n    cluster_ca_file: /etc/k/ca.crt\n    exec: true\n    sigil_path: /usr/bin/sigil\n    context_name: prod\n    ttl: 1h\n    group: '0'\n"
    bad = {
        "skip_verify": base + out + "    insecure_skip_tls_verify: true\n",
        "plain_http": base + out.replace("https://", "http://"),
        "no_user": base + "outputs:\n  - type: kubernetes\n    dir: /tmp/kube\n    server: https://127.0.0.1:6443\n",
        "relative_sigil": base + out + "    exec: true\n    sigil_path: bin/sigil\n",
        "unknown_field": base + out + "    namespace: default\n",
        "control_char_group": base + out + "    groups: [\"a\\nb\"]\n",
        "long_user": base + out.replace("user: deployer", "user: " + "u" * 65),
        "too_many_groups": base + out + "    groups: [" + ", ".join(f"g{i}" for i in range(65)) + "]\n",
    }

    def check(text: str) -> subprocess.CompletedProcess:
        f = tmp_path / "agent.yaml"
        f.write_text(text)
        return subprocess.run([sigil_bin, "agent", "--check", "--config", str(f)], capture_output=True, text=True, timeout=30)

    jsonschema.validate(yaml.safe_load(good), schema)
    assert check(good).returncode == 0, check(good).stderr
    for name, text in bad.items():
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(yaml.safe_load(text), schema)
        p = check(text)
        assert p.returncode != 0 and "invalid agent config" in p.stderr, (name, p.stderr)


def test_the_example_agent_config_is_valid_for_schema_and_agent(sigil_bin):
    import jsonschema
    import yaml

    cfg = HERE.parents[1] / "examples" / "access" / "kubernetes" / "agent.yaml"
    schema = json.loads((HERE.parents[1] / "schemas" / "agent-config.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(cfg.read_text()), schema)
    p = subprocess.run([sigil_bin, "agent", "--check", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
