"""`kubernetes` joins in `tokenreview` mode: the broker (a real `sigil server`) sends the pod's token to the
cluster's TokenReview API with its own bearer token and maps the answer to join attributes.

A kube-apiserver cannot run here, so tokenreview_standin.py plays its TokenReview endpoint; the first test
proves with the official Python `kubernetes` client that it speaks the real protocol (request, 201 answer,
status fields, audiences, 401/403). Pod tokens are JWTs minted by PyJWT with the claims kubelet puts in a
projected token (the stand-in, like the API server, decides whether they are valid).
"""
import json
import os
import subprocess
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sigil_harness import JOIN_REFUSED, Broker, free_port
from tokenreview_standin import API_AUDIENCES, TokenReviewStandin

BROKER_BEARER = "broker-sa-token.c2lnaWwtYnJva2VyLWJlYXJlcg"
AUDIENCE = "sigil"
SIGNER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def kubernetes_client():
    try:
        import kubernetes  # noqa: F401
    except ImportError:
        pytest.fail("the official kubernetes client is missing: .venv/bin/pip install -r acceptance-tests/requirements.txt (kubernetes==36.0.3)")
    from kubernetes import client
    return client


def pod_token(ns="ci", sa="builder", pod="builder-7f9c", pod_uid="4f1c2d3e-pod", lifetime=3600, **over):
    now = int(time.time())
    claims = {
        "aud": [AUDIENCE], "iss": "https://kubernetes.default.svc.cluster.local", "iat": now, "nbf": now, "exp": now + lifetime,
        "sub": f"system:serviceaccount:{ns}:{sa}", "jti": f"jti-{pod}-{now}",
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "sa-uid-1"}, "pod": {"name": pod, "uid": pod_uid},
                          "node": {"name": "node-a", "uid": "node-uid"}},
    }
    claims.update(over)
    return jwt.encode(claims, SIGNER, algorithm="RS256", headers={"kid": "k1"})


def legacy_token(ns="ci", sa="builder"):
    claims = {"iss": "kubernetes/serviceaccount", "sub": f"system:serviceaccount:{ns}:{sa}",
              "kubernetes.io/serviceaccount/namespace": ns, "kubernetes.io/serviceaccount/secret.name": f"{sa}-token-x7k2p",
              "kubernetes.io/serviceaccount/service-account.name": sa, "kubernetes.io/serviceaccount/service-account.uid": "sa-uid-1"}
    return jwt.encode(claims, SIGNER, algorithm="RS256")


def review_of(token_claims_pod=True, ns="ci", sa="builder", pod="builder-7f9c", pod_uid="4f1c2d3e-pod", audiences=(AUDIENCE,)):
    extra = {}
    if token_claims_pod:
        extra = {"authentication.kubernetes.io/pod-name": [pod], "authentication.kubernetes.io/pod-uid": [pod_uid],
                 "authentication.kubernetes.io/node-name": ["node-a"], "authentication.kubernetes.io/credential-id": [f"JTI=jti-{pod}"]}
    return {"username": f"system:serviceaccount:{ns}:{sa}", "uid": "sa-uid-1", "extra": extra, "audiences": list(audiences)}


class Tokens:
    def __init__(self):
        self.good = pod_token()
        self.other_audience = pod_token(pod="web-1", aud=["vault"])
        self.unbound = pod_token(pod="none", **{"kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "builder", "uid": "sa-uid-1"}}})
        self.legacy = legacy_token()
        self.unknown = pod_token(pod="forged")  # signed by a key the cluster does not know: not in the stand-in's table
        self.reviews = {
            self.good: review_of(),
            self.other_audience: review_of(pod="web-1", audiences=("vault",)),
            self.unbound: review_of(token_claims_pod=False),
            self.legacy: review_of(token_claims_pod=False, audiences=API_AUDIENCES),
        }


@pytest.fixture
def tokens():
    return Tokens()


@pytest.fixture
def standin(tmp_path, tokens):
    s = TokenReviewStandin(tmp_path, BROKER_BEARER, tokens.reviews, forbidden_bearers={"no-rbac-token"})
    yield s
    s.close()


def test_the_official_kubernetes_client_creates_token_reviews_against_the_standin(standin, tokens):
    client = kubernetes_client()

    def api(bearer):
        cfg = client.Configuration()
        cfg.host = standin.url
        cfg.ssl_ca_cert = str(standin.ca_file)
        cfg.api_key = {"BearerToken": bearer}  # kubernetes>=36 (the older "authorization" key loses its prefix)
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
        return client.AuthenticationV1Api(client.ApiClient(cfg))

    def review(token, audiences, bearer=BROKER_BEARER):
        body = client.V1TokenReview(api_version="authentication.k8s.io/v1", kind="TokenReview",
                                    spec=client.V1TokenReviewSpec(token=token, audiences=audiences))
        return api(bearer).create_token_review(body)

    r = review(tokens.good, [AUDIENCE])
    assert r.kind == "TokenReview" and r.api_version == "authentication.k8s.io/v1"
    assert r.status.authenticated is True
    assert r.status.audiences == [AUDIENCE]
    assert r.status.user.username == "system:serviceaccount:ci:builder" and r.status.user.uid == "sa-uid-1"
    assert r.status.user.extra["authentication.kubernetes.io/pod-name"] == ["builder-7f9c"]
    assert r.status.user.extra["authentication.kubernetes.io/pod-uid"] == ["4f1c2d3e-pod"]
    assert "system:authenticated" in r.status.user.groups

    # A token for another audience, or unknown to the cluster: not authenticated, with the reason.
    for token in (tokens.other_audience, tokens.unknown):
        r = review(token, [AUDIENCE])
        assert not r.status.authenticated and r.status.error and not r.status.audiences
    # Without spec.audiences the API server's own audiences apply: a legacy token authenticates for them only.
    r = review(tokens.legacy, None)
    assert r.status.authenticated is True and r.status.audiences == API_AUDIENCES and not r.status.user.extra
    assert not review(tokens.legacy, [AUDIENCE]).status.authenticated

    for bearer, code in (("wrong", 401), ("no-rbac-token", 403)):
        with pytest.raises(client.exceptions.ApiException) as e:
            review(tokens.good, [AUDIENCE], bearer=bearer)
        assert e.value.status == code
        assert json.loads(e.value.body)["kind"] == "Status"


# --- the broker ---

def start_broker(sigil_bin, tmp_path, clusters_yaml: str) -> Broker:
    port = free_port()
    data = tmp_path / "data"
    seal = tmp_path / "seal.key"
    seal.write_text("5c" * 32)
    seal.chmod(0o600)
    cfg = tmp_path / "server.yaml"
    cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {data}\nseal_key_file: {seal}\n"
                   f"kubernetes_clusters:\n{clusters_yaml}")
    return Broker(sigil_bin, data, port=port, config=cfg).start()


def explicit_cluster(tmp_path, standin, name="prod", bearer=BROKER_BEARER) -> str:
    token_file = tmp_path / f"{name}-broker.token"
    token_file.write_text(bearer + "\n")
    return f"  - {{name: {name}, api_server: \"{standin.url}\", ca_file: \"{standin.ca_file}\", token_file: \"{token_file}\"}}\n"


def apply(broker, tmp_path, docs, check=True):
    f = tmp_path / "k8s.yaml"
    f.write_text("\n---\n".join(json.dumps(d) for d in docs))
    return broker.sigil("apply", "-f", str(f), check=check)


def join_token(name, cluster="prod", audience=AUDIENCE, allow=({"service_account": "ci:*"},), **config):
    return {"kind": "join_token", "name": name, "bot": "k8s", "method": "kubernetes", "expires_at": int(time.time()) + 3600,
            "max_uses": 100, "allow": list(allow), "config": {"mode": "tokenreview", "cluster": cluster, "audience": audience, **config}}


def join(broker, tmp_path, token_name, pod_token_value):
    f = tmp_path / "pod-token"
    f.write_text(pod_token_value)
    out = tmp_path / f"{token_name}.identity"
    e = broker.env()
    e.pop("SIGIL_TOKEN", None)
    p = subprocess.run([broker.bin, "join", "--ca-file", broker.ca, "--out", str(out), "--method", "kubernetes",
                        "--token-name", token_name, "--id-token-file", str(f)], env=e, capture_output=True, text=True, timeout=60)
    return p


def refused(broker, p) -> str:
    assert p.returncode != 0 and JOIN_REFUSED in p.stderr, p.stderr
    return broker.last_join_denial()


def instance_attributes(broker) -> list:
    return [i.get("join_attributes", {}) for i in broker.sigil_json("bot", "instance", "list", "--bot", "k8s")]


def test_broker_verifies_pod_tokens_through_tokenreview_and_refuses_what_the_cluster_does_not_vouch_for(sigil_bin, tmp_path, standin, tokens):
    broker = start_broker(sigil_bin, tmp_path, explicit_cluster(tmp_path, standin))
    try:
        apply(broker, tmp_path, [{"kind": "bot", "name": "k8s"}, join_token("pods"), join_token("legacy-ok", audience=API_AUDIENCES[0], allow_legacy_tokens="true")])

        p = join(broker, tmp_path, "pods", tokens.good)
        assert p.returncode == 0 and "joined as bot k8s" in p.stderr, p.stderr
        attrs = instance_attributes(broker)
        assert any(a.get("join.pod_name") == "builder-7f9c" and a.get("join.namespace") == "ci" and a.get("join.service_account") == "ci:builder"
                   and a.get("join.pod_uid") == "4f1c2d3e-pod" and a.get("join.node_name") == "node-a" for a in attrs), attrs
        assert standin.requests[-1] == (201, [AUDIENCE]), "the broker asks for the join token's audience"

        assert "did not authenticate" in refused(broker, join(broker, tmp_path, "pods", tokens.unknown))
        assert "did not authenticate" in refused(broker, join(broker, tmp_path, "pods", tokens.other_audience))
        assert "not bound to a pod" in refused(broker, join(broker, tmp_path, "pods", tokens.unbound))

        before = standin.count()
        assert "allow_legacy_tokens" in refused(broker, join(broker, tmp_path, "pods", tokens.legacy))
        assert standin.count() == before, "a legacy token is refused before any call to the cluster"
        p = join(broker, tmp_path, "legacy-ok", tokens.legacy)
        assert p.returncode == 0, p.stderr

        # A token the cluster vouches for but outside the allow rules.
        other_ns = pod_token(ns="prod", pod="api-0")
        standin.reviews[other_ns] = review_of(ns="prod", pod="api-0")
        assert 'service_account = "prod:builder"' in refused(broker, join(broker, tmp_path, "pods", other_ns))

        # The broker re-reads its token file at each review (projected tokens rotate).
        standin.bearer = "rotated-broker-token.cm90YXRlZA"
        (tmp_path / "prod-broker.token").write_text(standin.bearer)
        p = join(broker, tmp_path, "pods", tokens.good)
        assert p.returncode == 0, p.stderr
        assert standin.count(401) == 0

        # A cluster name the broker does not know is refused when the join token is created.
        p = apply(broker, tmp_path, [join_token("nowhere", cluster="staging")], check=False)
        assert p.returncode != 0 and "config.cluster" in p.stderr and "staging" in p.stderr, p.stderr
    finally:
        broker.stop()
    logs = broker.log.read_text() + (broker.data_dir / "audit.jsonl").read_text()
    for secret in (BROKER_BEARER, "rotated-broker-token.cm90YXRlZA", tokens.good, tokens.legacy, tokens.unknown):
        assert secret not in logs, "a token reached the broker's logs"


def test_an_api_server_that_ignores_the_requested_audience_is_not_trusted(sigil_bin, tmp_path, tokens):
    standin = TokenReviewStandin(tmp_path, BROKER_BEARER, tokens.reviews, ignore_audiences=True)
    broker = start_broker(sigil_bin, tmp_path, explicit_cluster(tmp_path, standin))
    try:
        apply(broker, tmp_path, [{"kind": "bot", "name": "k8s"}, join_token("pods")])
        why = refused(broker, join(broker, tmp_path, "pods", tokens.other_audience))
        assert 'not "sigil"' in why, why
        assert standin.requests[-1][0] == 201, "the cluster answered; the broker refused its audiences"
        assert join(broker, tmp_path, "pods", tokens.good).returncode == 0
    finally:
        broker.stop()
        standin.close()


def test_a_kubeconfig_cluster_verifies_pod_tokens_and_a_refused_broker_credential_is_audited(sigil_bin, tmp_path, standin, tokens):
    import base64
    token_dir = tmp_path / "tokens"
    token_dir.mkdir()
    (token_dir / "reviewer").write_text(BROKER_BEARER)
    ca_data = base64.b64encode(standin.ca_pem.encode()).decode()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
current-context: admin
clusters:
- name: prod
  cluster: {{server: "{standin.url}", certificate-authority-data: {ca_data}}}
contexts:
- name: admin
  context: {{cluster: prod, user: admin}}
- name: sigil-broker
  context: {{cluster: prod, user: reviewer, namespace: sigil}}
- name: no-rbac
  context: {{cluster: prod, user: no-rbac}}
users:
- name: admin
  user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: aws}}}}
- name: reviewer
  user: {{tokenFile: tokens/reviewer}}
- name: no-rbac
  user: {{token: no-rbac-token}}
""")
    clusters = (f"  - {{name: prod, kubeconfig: \"{kubeconfig}\", context: sigil-broker}}\n"
                f"  - {{name: norbac, kubeconfig: \"{kubeconfig}\", context: no-rbac}}\n")
    broker = start_broker(sigil_bin, tmp_path, clusters)
    try:
        apply(broker, tmp_path, [{"kind": "bot", "name": "k8s"}, join_token("pods"), join_token("norbac", cluster="norbac")])
        p = join(broker, tmp_path, "pods", tokens.good)
        assert p.returncode == 0, p.stderr
        assert any(a.get("join.pod_name") == "builder-7f9c" for a in instance_attributes(broker))
        why = refused(broker, join(broker, tmp_path, "norbac", tokens.good))
        assert "HTTP 403" in why and "tokenreviews" in why, why
        assert standin.count(403) == 1
    finally:
        broker.stop()
    assert "no-rbac-token" not in broker.log.read_text() + (broker.data_dir / "audit.jsonl").read_text()

    # The current context authenticates with an exec plugin: the broker does not start, naming the field.
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{free_port()}\ndata_dir: {tmp_path / 'bad'}\nseal_key_file: {tmp_path / 'seal.key'}\n"
                   f"kubernetes_clusters:\n  - {{name: prod, kubeconfig: \"{kubeconfig}\"}}\n")
    p = subprocess.run([sigil_bin, "server", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "users[admin].user.exec" in p.stderr and str(kubeconfig) in p.stderr, p.stderr


def test_the_agent_joins_with_its_projected_token_file_and_its_svid_names_the_pod(sigil_bin, tmp_path, standin, tokens):
    """The agent needs no setting for TokenReview mode: it sends its token file as in jwks mode. The SVID's
    SPIFFE ID is a template over the join attributes the review gave (namespace, service account, pod)."""
    broker = start_broker(sigil_bin, tmp_path, explicit_cluster(tmp_path, standin))
    try:
        role = {"kind": "role", "name": "pods",
                "allow": {"spiffe_ids": ["/k8s/{{join.namespace}}/{{join.service_account_name}}/{{join.pod_name}}"], "audiences": ["x"]}}
        apply(broker, tmp_path, [role, {"kind": "bot", "name": "k8s", "roles": ["pods"]}, join_token("pods")])
        td = broker.sigil_json("whoami")["trust_domain"]
        want = f"spiffe://{td}/k8s/ci/builder/builder-7f9c"
        projected = tmp_path / "projected" / "sigil"
        projected.parent.mkdir()
        projected.write_text(tokens.good)
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(
            f"broker: {broker.addr}\nca_file: {broker.ca}\nstate_dir: {tmp_path / 'state'}\n"
            f"join: {{method: kubernetes, token_name: pods, token_file: {projected}}}\n"
            f"outputs:\n  - type: jwt-svid\n    path: {tmp_path / 'jwt'}\n    audiences: [x]\n    spiffe_id: {want}\n"
        )
        p = subprocess.run([sigil_bin, "agent", "--oneshot", "--config", str(cfg)], env={**{k: v for k, v in os.environ.items() if not k.startswith("SIGIL_")}, "HOME": str(tmp_path)},
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        jwks = json.loads(broker.sigil("bundle", "--format", "jwks").stdout)
        claims = jwt.decode((tmp_path / "jwt").read_text(), key=jwt.PyJWKSet.from_dict(jwks).keys[0], audience="x", algorithms=["ES256", "RS256"])
        assert claims["sub"] == want
        assert standin.requests[-1] == (201, [AUDIENCE])
    finally:
        broker.stop()
