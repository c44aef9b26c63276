"""`kubernetes` joins in `tokenreview` mode where the broker authenticates to the API server with a client
certificate (how kind, minikube and kubeadm admin kubeconfigs authenticate) instead of a bearer token.

tokenreview_standin.py (with `client_ca=True`) plays kube-apiserver's x509 authenticator: TLS requires a
certificate from its test client CA, and the caller is the certificate's CN (user) and O (groups). The first
test proves with the official Python `kubernetes` client (cert_file/key_file) that the stand-in accepts such a
certificate, maps it to the caller, and refuses a connection without one or with one from another CA; then the
real broker verifies pod tokens through it with kubeconfigs holding client-certificate-data/client-key-data and
client-certificate/client-key files, and with an api_server entry's client_cert_file/client_key_file.
"""
import base64
import json
import subprocess

import pytest

from sigil_harness import free_port
from test_tokenreview_join import (AUDIENCE, BROKER_BEARER, apply, instance_attributes, join, join_token, kubernetes_client,  # noqa: F401 (tokens: fixture)
                                   refused, start_broker, tokens)
from tokenreview_standin import TokenReviewStandin, client_cert

BROKER_CN = "sigil-broker"
REVIEWERS = "sigil:token-reviewers"


@pytest.fixture
def standin(tmp_path, tokens):
    s = TokenReviewStandin(tmp_path, BROKER_BEARER, tokens.reviews, client_ca=True, cert_groups={REVIEWERS})
    yield s
    s.close()


def write_pair(tmp_path, name, pair):
    cert, key = pair
    (tmp_path / f"{name}.crt").write_text(cert)
    (tmp_path / f"{name}.key").write_text(key)
    (tmp_path / f"{name}.key").chmod(0o600)
    return tmp_path / f"{name}.crt", tmp_path / f"{name}.key"


def key_body(key_pem: str) -> str:
    return "".join(line for line in key_pem.splitlines() if not line.startswith("-----"))


def test_the_official_kubernetes_client_authenticates_to_the_standin_with_a_client_certificate(tmp_path, standin, tokens):
    client = kubernetes_client()

    def review(pair=None):
        cfg = client.Configuration()
        cfg.host = standin.url
        cfg.ssl_ca_cert = str(standin.ca_file)
        cfg.retries = False
        if pair:
            cfg.cert_file, cfg.key_file = (str(p) for p in pair)
        body = client.V1TokenReview(api_version="authentication.k8s.io/v1", kind="TokenReview",
                                    spec=client.V1TokenReviewSpec(token=tokens.good, audiences=[AUDIENCE]))
        return client.AuthenticationV1Api(client.ApiClient(cfg)).create_token_review(body)

    r = review(write_pair(tmp_path, "reviewer", standin.issue_client_cert(BROKER_CN, [REVIEWERS, "system:masters"])))
    assert r.status.authenticated is True and r.status.audiences == [AUDIENCE]
    assert r.status.user.extra["authentication.kubernetes.io/pod-name"] == ["builder-7f9c"]
    assert standin.callers == [(BROKER_CN, [REVIEWERS, "system:masters"])], "CN is the user, each O a group"

    # A certificate the CA issued to a user RBAC does not allow: authenticated, then forbidden.
    with pytest.raises(client.exceptions.ApiException) as e:
        review(write_pair(tmp_path, "intruder", standin.issue_client_cert("mallory", ["developers"])))
    assert e.value.status == 403 and 'User "mallory"' in json.loads(e.value.body)["message"]
    assert standin.callers[-1] == ("mallory", ["developers"])

    # No certificate, or one from another CA: the TLS handshake fails, nothing reaches the API. The client turns
    # urllib3's SSLError into ApiException(status=0) (kubernetes 36 then trips on its empty body: AttributeError).
    before = standin.count()
    for pair in (None, write_pair(tmp_path, "other-ca", client_cert(BROKER_CN, [REVIEWERS]))):
        with pytest.raises((client.exceptions.ApiException, AttributeError)) as e:
            review(pair)
        err = e.value if isinstance(e.value, client.exceptions.ApiException) else e.value.__context__
        assert isinstance(err, client.exceptions.ApiException) and err.status == 0 and "SSL" in str(err.reason), repr(err)
    assert standin.count() == before and len(standin.callers) == 2


def kubeconfig(tmp_path, name, standin, user: str):
    ca_data = base64.b64encode(standin.ca_pem.encode()).decode()
    f = tmp_path / name
    f.write_text(f"""apiVersion: v1
kind: Config
current-context: kind-sigil
clusters:
- name: kind-sigil
  cluster: {{server: "{standin.url}", certificate-authority-data: {ca_data}}}
contexts:
- name: kind-sigil
  context: {{cluster: kind-sigil, user: kind-sigil}}
users:
- name: kind-sigil
  user: {user}
""")
    return f


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_the_broker_reviews_pod_tokens_with_a_kubeconfig_client_certificate_inline_or_in_files(sigil_bin, tmp_path, standin, tokens):
    # Inline (kind/kubeadm style): PKCS#8 key. Files (minikube style, paths relative to the kubeconfig): PKCS#1 RSA key.
    inline_cert, inline_key = standin.issue_client_cert(BROKER_CN, [REVIEWERS], key_format="PRIVATE KEY")
    inline = kubeconfig(tmp_path, "kind.kubeconfig", standin, f"{{client-certificate-data: {b64(inline_cert)}, client-key-data: {b64(inline_key)}}}")
    pki = tmp_path / "profiles"
    pki.mkdir()
    files_pair = standin.issue_client_cert("sigil-broker-files", [REVIEWERS], key_format="RSA PRIVATE KEY")
    write_pair(pki, "client", files_pair)
    files = kubeconfig(tmp_path, "minikube.kubeconfig", standin, "{client-certificate: profiles/client.crt, client-key: profiles/client.key}")
    # api_server form: SEC1 EC key.
    sec1_pair = standin.issue_client_cert("sigil-broker-explicit", [REVIEWERS], key_format="EC PRIVATE KEY")
    crt, key = write_pair(tmp_path, "explicit", sec1_pair)
    clusters = (f"  - {{name: inline, kubeconfig: \"{inline}\"}}\n"
                f"  - {{name: files, kubeconfig: \"{files}\"}}\n"
                f"  - {{name: explicit, api_server: \"{standin.url}\", ca_file: \"{standin.ca_file}\", client_cert_file: \"{crt}\", client_key_file: \"{key}\"}}\n")
    broker = start_broker(sigil_bin, tmp_path, clusters)
    try:
        apply(broker, tmp_path, [{"kind": "bot", "name": "k8s"}] + [join_token(c, cluster=c) for c in ("inline", "files", "explicit")])
        for name, caller in (("inline", BROKER_CN), ("files", "sigil-broker-files"), ("explicit", "sigil-broker-explicit")):
            p = join(broker, tmp_path, name, tokens.good)
            assert p.returncode == 0 and "joined as bot k8s" in p.stderr, (name, p.stderr)
            assert standin.callers[-1] == (caller, [REVIEWERS]), name
            assert standin.requests[-1] == (201, [AUDIENCE])
        assert any(a.get("join.pod_name") == "builder-7f9c" and a.get("join.service_account") == "ci:builder" for a in instance_attributes(broker))
        assert "did not authenticate" in refused(broker, join(broker, tmp_path, "inline", tokens.unknown))

        # Renewed certificate files are used at the next review (no restart).
        renewed = standin.issue_client_cert("sigil-broker-renewed", [REVIEWERS], key_format="EC PRIVATE KEY")
        write_pair(tmp_path, "explicit", renewed)
        p = join(broker, tmp_path, "explicit", tokens.good)
        assert p.returncode == 0, p.stderr
        assert standin.callers[-1] == ("sigil-broker-renewed", [REVIEWERS])

        # A certificate from another CA: the stand-in refuses the handshake, the join fails, the audit says why.
        write_pair(tmp_path, "explicit", client_cert("sigil-broker-explicit", [REVIEWERS], key_format="EC PRIVATE KEY"))
        before = standin.count()
        why = refused(broker, join(broker, tmp_path, "explicit", tokens.good))
        assert "explicit" in why and "TokenReview" in why, why
        assert standin.count() == before, "nothing reached the API"
    finally:
        broker.stop()
    logs = broker.log.read_text() + (broker.data_dir / "audit.jsonl").read_text()
    for pem in (inline_key, files_pair[1], sec1_pair[1], renewed[1]):
        assert key_body(pem)[:48] not in logs and key_body(pem)[-48:] not in logs, "key material reached the broker's logs"
    assert tokens.good not in logs


def test_a_client_certificate_entry_that_cannot_work_stops_the_broker_naming_the_field(sigil_bin, tmp_path, standin):
    seal = tmp_path / "seal.key"
    seal.write_text("5c" * 32)
    seal.chmod(0o600)

    def start(clusters):
        cfg = tmp_path / "bad.yaml"
        cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{free_port()}\ndata_dir: {tmp_path / 'bad'}\nseal_key_file: {seal}\n"
                       f"kubernetes_clusters:\n{clusters}")
        return subprocess.run([sigil_bin, "server", "--config", str(cfg)], capture_output=True, text=True, timeout=30)

    cert, key = standin.issue_client_cert(BROKER_CN, [REVIEWERS])
    _, other_key = standin.issue_client_cert(BROKER_CN, [REVIEWERS])
    crt, keyf = write_pair(tmp_path, "broker", (cert, other_key))
    p = start(f"  - {{name: prod, api_server: \"{standin.url}\", ca_file: \"{standin.ca_file}\", client_cert_file: \"{crt}\"}}\n")
    assert p.returncode != 0 and "kubernetes_clusters[0].client_key_file" in p.stderr, p.stderr
    p = start(f"  - {{name: prod, api_server: \"{standin.url}\", ca_file: \"{standin.ca_file}\", client_cert_file: \"{crt}\", client_key_file: \"{keyf}\"}}\n")
    assert p.returncode != 0 and str(keyf) in p.stderr and "does not belong" in p.stderr, p.stderr
    assert key_body(other_key)[:48] not in p.stderr
    kc = kubeconfig(tmp_path, "half.kubeconfig", standin, f"{{client-certificate-data: {b64(cert)}}}")
    p = start(f"  - {{name: prod, kubeconfig: \"{kc}\"}}\n")
    assert p.returncode != 0 and "users[kind-sigil].user.client-key" in p.stderr and str(kc) in p.stderr, p.stderr
