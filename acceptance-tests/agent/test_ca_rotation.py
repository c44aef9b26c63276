"""CA rotation as workloads see it: a real broker rotates its X.509-SVID CA and its JWT key
(prepare -> activate -> retire, no --force) while a real agent serves the SPIFFE Workload API.

Verifiers we did not write check every credential as it arrives:
- py-spiffe watches FetchX509SVID; each X.509-SVID is verified against the bundle that came with it
  by `openssl verify` (and `cryptography` names the CA that signed it);
- JWT-SVIDs fetched through py-spiffe are verified by PyJWT's PyJWKClient against the broker's public
  JWKS URL, with a JWKS cache that only refreshes on an unknown `kid` (lifespan 1 h);
- py-spiffe watches FetchJWTBundles; the public SPIFFE bundle and JWKS are polled over HTTPS.

The agent is never restarted: bundle changes reach open streams and the x509-svid output's bundle.pem.
"""
from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent_harness import Agent, setup_broker, socket_dir, write_config
from sigil_harness import Broker, free_port, require_tool

try:
    import jwt as pyjwt
    from spiffe import TrustDomain, WorkloadApiClient
except ImportError:  # pragma: no cover - a missing peer must fail, not skip
    pyjwt = TrustDomain = WorkloadApiClient = None

AUDIENCE = "rotation-test"
# Short lifetimes so a retire is safe within seconds: SVIDs live SVID_TTL, the broker never issues
# longer (x509_svid_max_ttl, jwt_svid_max_ttl), and verifiers get VERIFIER_ALLOWANCE on top
# (bundle_refresh_hint, ca.jwks_cache_allowance_seconds): retire_safe_at = activate + 5 + 6 + 2 s.
SVID_TTL = 6
VERIFIER_ALLOWANCE = 2
# Long enough that no half-life renewal happens during a test that uses it.
LONG_TTL = 120
PURPOSES = ("x509-svid", "jwt-svid")


def require_peers():
    if WorkloadApiClient is None or pyjwt is None:
        pytest.fail("py-spiffe or PyJWT missing: .venv/bin/pip install -r acceptance-tests/requirements.txt (scripts/setup.sh does)")
    require_tool("openssl", "apt-get install openssl")


# ------------------------------------------------------------------ set-up

def start_broker(sigil_bin, tmp_path: Path, ttl: int = SVID_TTL) -> Broker:
    port = free_port()
    data = tmp_path / "data"
    seal = tmp_path / "seal.key"
    seal.write_text("3b" * 32)
    seal.chmod(0o600)
    cfg = tmp_path / "server.yaml"
    cfg.write_text(
        f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {data}\nadmin_identity_ttl: 86400\nseal_key_file: {seal}\n"
        f"x509_svid_ttl: {ttl}\njwt_svid_ttl: {ttl}\nx509_svid_max_ttl: {ttl}\njwt_svid_max_ttl: {ttl}\n"
        f"bundle_refresh_hint: {VERIFIER_ALLOWANCE}\n"
        # The test takes every step itself.
        f"ca: {{jwks_cache_allowance_seconds: {VERIFIER_ALLOWANCE}, rotation: {{automatic: false}}}}\n"
    )
    return Broker(sigil_bin, data, port=port, config=cfg).start()


def start_agent(sigil_bin, broker: Broker, tmp_path: Path, ttl: int = SVID_TTL) -> tuple[Agent, Path, Path]:
    token = setup_broker(broker, tmp_path)
    sock = socket_dir() / "agent.sock"
    out = tmp_path / "out"
    cfg = write_config(
        tmp_path / "agent.yaml", broker, tmp_path / "state", token,
        "identity_ttl: 60s\nbundle_refresh: 1s\nretry: {initial: 200ms, max: 1s}\n"
        f"outputs:\n  - type: x509-svid\n    dir: {out}/svid\n    spiffe_id: spiffe://sigil.local/svc/out\n    ttl: {ttl}s\n"
        f"services:\n  - type: workload-api\n    socket: {sock}\n    workload_identities: [root-python]\n"
        f"    x509_ttl: {ttl}s\n    jwt_ttl: {ttl}s\n",
    )
    a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
    a.wait_for(lambda: sock.exists() and (out / "svid" / "bundle.pem").exists(), "agent socket and x509-svid output")
    return a, sock, out / "svid"


def ca_status(broker: Broker) -> dict:
    return json.loads(broker.sigil("ca", "status", "--json").stdout)


def keys_of(status: dict, purpose: str, state: str) -> list[dict]:
    return [k for k in status["keys"] if k["purpose"] == purpose and k["state"] == state]


def rotate(broker: Broker, purpose: str, phase: str) -> None:
    broker.sigil("ca", "rotate", "--purpose", purpose, "--phase", phase)


def https_json(broker: Broker, path: str) -> dict:
    ctx = ssl.create_default_context(cafile=broker.ca)
    with urllib.request.urlopen(f"{broker.url}{path}", context=ctx, timeout=10) as r:
        return json.load(r)


def public_x509_fps(broker: Broker) -> set[str]:
    """Fingerprints of the X.509 authorities in the public SPIFFE bundle."""
    import base64
    doc = https_json(broker, "/.well-known/spiffe-bundle")
    return {hashlib.sha256(base64.b64decode(k["x5c"][0])).hexdigest() for k in doc["keys"] if k.get("use") == "x509-svid"}


def public_jwt_kids(broker: Broker) -> tuple[set[str], set[str]]:
    """kids in the public SPIFFE bundle and in the JWKS."""
    bundle = https_json(broker, "/.well-known/spiffe-bundle")
    jwks = https_json(broker, "/.well-known/jwks.json")
    return {k["kid"] for k in bundle["keys"] if k.get("use") == "jwt-svid"}, {k["kid"] for k in jwks["keys"]}


def fp(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def pem(certs) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def openssl_verify(leaf: x509.Certificate, chain: list[x509.Certificate], bundle: list[x509.Certificate]) -> str | None:
    """None when `openssl verify` accepts the leaf against the bundle; else its output."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "ca.pem").write_bytes(pem(bundle))
        (Path(d) / "leaf.pem").write_bytes(pem([leaf]))
        args = ["openssl", "verify", "-CAfile", f"{d}/ca.pem"]
        if chain:
            (Path(d) / "chain.pem").write_bytes(pem(chain))
            args += ["-untrusted", f"{d}/chain.pem"]
        p = subprocess.run([*args, f"{d}/leaf.pem"], capture_output=True, text=True, timeout=30)
        return None if p.returncode == 0 else (p.stdout + p.stderr).strip()


def signer_of(leaf: x509.Certificate, bundle: list[x509.Certificate]) -> str | None:
    """Fingerprint of the bundle certificate whose key signed `leaf` (the CAs share a subject)."""
    for ca in bundle:
        try:
            leaf.verify_directly_issued_by(ca)
            return fp(ca)
        except Exception:  # noqa: BLE001 - not this one
            continue
    return None


def wait_until(cond, what: str, timeout: float, agent: Agent | None = None, failures=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if agent is not None and agent.proc.poll() is not None:
            raise AssertionError(f"agent exited: {agent.log.read_text()[-3000:]}")
        if failures:
            raise AssertionError(f"verification failures while waiting for {what}: {failures[:5]}")
        if cond():
            return
        time.sleep(0.1)
    log = agent.log.read_text()[-3000:] if agent else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{log}")


# ------------------------------------------------------------------ verifiers

class Verifiers:
    """Workload-side verifiers running in threads; every failure is recorded, none is retried away."""

    def __init__(self, broker: Broker, sock: Path):
        self.broker, self.sock = broker, sock
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.x509: list[tuple[float, str, frozenset]] = []   # (time, signer fp, bundle fps) per SVID update
        self.jwt: list[tuple[float, str]] = []                # (time, kid) per verified JWT-SVID
        self.jwt_bundle_kids: frozenset = frozenset()
        self.jwks_fetches = 0
        self.stop = threading.Event()
        self.client = WorkloadApiClient(f"unix://{sock}", default_timeout=20)
        self.handles = []
        self.threads = []

    def fail(self, what: str):
        with self.lock:
            self.failures.append(f"{time.time():.1f} {what}")

    # FetchX509SVID stream: each update's SVID verified against the bundle it came with.
    def on_x509(self, ctx):
        try:
            for svid in ctx.x509_svids:
                td = svid.spiffe_id.trust_domain
                bundle = list(ctx.x509_bundle_set.get_bundle_for_trust_domain(td).x509_authorities)
                leaf, chain = svid.leaf, list(svid.cert_chain[1:])
                err = openssl_verify(leaf, chain, bundle)
                if err:
                    self.fail(f"openssl refused X.509-SVID {leaf.serial_number:x}: {err}")
                    continue
                signer = signer_of(leaf, bundle)
                if signer is None:
                    self.fail(f"no bundle CA signed X.509-SVID {leaf.serial_number:x}")
                    continue
                with self.lock:
                    self.x509.append((time.time(), signer, frozenset(fp(c) for c in bundle)))
        except Exception as e:  # noqa: BLE001 - any surprise is a failure
            self.fail(f"X.509 update: {type(e).__name__}: {e}")

    def on_jwt_bundles(self, bundles):
        try:
            b = bundles.get_bundle_for_trust_domain(TrustDomain("sigil.local"))
            with self.lock:
                self.jwt_bundle_kids = frozenset(b.jwt_authorities.keys())
        except Exception as e:  # noqa: BLE001 - any surprise is a failure
            self.fail(f"JWT bundle update: {type(e).__name__}: {e}")

    def on_stream_error(self, what):
        def handler(e):
            if not self.stop.is_set():
                self.fail(f"{what} stream ended: {e}")
        return handler

    # FetchJWTSVID, then PyJWT against the public JWKS (cached; refetched only on an unknown kid).
    def jwt_loop(self):
        ctx = ssl.create_default_context(cafile=self.broker.ca)
        jwks = pyjwt.PyJWKClient(f"{self.broker.url}/.well-known/jwks.json", cache_jwk_set=True, lifespan=3600, ssl_context=ctx)
        fetch = jwks.fetch_data

        def counted():
            self.jwks_fetches += 1
            return fetch()
        jwks.fetch_data = counted
        while not self.stop.is_set():
            try:
                tok = self.client.fetch_jwt_svid(audience={AUDIENCE}).token
                key = jwks.get_signing_key_from_jwt(tok)
                claims = pyjwt.decode(tok, key.key, algorithms=["RS256", "ES256"], audience=AUDIENCE, issuer=self.broker.url,
                                      options={"require": ["exp", "iat", "sub", "aud", "iss"]})
                assert claims["sub"].startswith("spiffe://sigil.local/"), claims
                with self.lock:
                    self.jwt.append((time.time(), pyjwt.get_unverified_header(tok)["kid"]))
            except Exception as e:  # noqa: BLE001
                self.fail(f"JWT-SVID: {type(e).__name__}: {e}")
            self.stop.wait(0.2)

    def start(self):
        self.handles.append(self.client.stream_x509_contexts(self.on_x509, self.on_stream_error("FetchX509SVID"), retry_connect=False))
        self.handles.append(self.client.stream_jwt_bundles(self.on_jwt_bundles, self.on_stream_error("FetchJWTBundles"), retry_connect=False))
        t = threading.Thread(target=self.jwt_loop, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def close(self):
        self.stop.set()
        for h in self.handles:
            h.cancel()
        for t in self.threads:
            t.join(timeout=30)
        self.client.close()

    # what was seen
    def last_x509_bundle(self) -> frozenset:
        with self.lock:
            return self.x509[-1][2] if self.x509 else frozenset()

    def x509_signers_since(self, t: float) -> set[str]:
        with self.lock:
            return {s for (at, s, _) in self.x509 if at >= t}

    def jwt_kids_since(self, t: float) -> set[str]:
        with self.lock:
            return {k for (at, k) in self.jwt if at >= t}


def output_bundle_fps(svid_dir: Path) -> set[str]:
    return {fp(c) for c in x509.load_pem_x509_certificates((svid_dir / "bundle.pem").read_bytes())}


def read_generation(svid_dir: Path) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """svid.pem and bundle.pem of one generation: `..data` opened once, both files read relative to it."""
    fd = os.open(svid_dir / "..data", os.O_RDONLY | os.O_DIRECTORY)
    try:
        def rd(name):
            f = os.open(name, os.O_RDONLY, dir_fd=fd)
            try:
                return b"".join(iter(lambda: os.read(f, 65536), b""))
            finally:
                os.close(f)
        return x509.load_pem_x509_certificate(rd("svid.pem")), x509.load_pem_x509_certificates(rd("bundle.pem"))
    finally:
        os.close(fd)


def output_signer(svid_dir: Path) -> str | None:
    """The CA that signed the x509-svid output's svid.pem, among its bundle.pem."""
    return signer_of(*read_generation(svid_dir))


def output_verifies(svid_dir: Path) -> str | None:
    """`openssl verify` of the x509-svid output's svid.pem against its bundle.pem."""
    leaf, bundle = read_generation(svid_dir)
    return openssl_verify(leaf, [], bundle)


def identity_signer(path: Path) -> str | None:
    """The CA that signed an identity file's certificate, among the CAs that follow it in the file."""
    certs = x509.load_pem_x509_certificates(path.read_bytes())
    return signer_of(certs[0], certs[1:])


def der_certs(der: bytes) -> list[x509.Certificate]:
    """Concatenated DER certificates (the Workload API's bundle encoding)."""
    certs = []
    while der:
        n = der[1] & 0x7F if der[1] & 0x80 else 0
        length = int.from_bytes(der[2:2 + n], "big") if n else der[1]
        certs.append(x509.load_der_x509_certificate(der[:2 + n + length]))
        der = der[2 + n + length:]
    return certs


# ------------------------------------------------------------------ tests

def test_a_full_rotation_of_both_keys_under_continuous_issuance_has_zero_verification_failures(sigil_bin, tmp_path):
    require_peers()
    started = time.time()
    broker = start_broker(sigil_bin, tmp_path)
    agent = v = None
    try:
        agent, sock, svid_dir = start_agent(sigil_bin, broker, tmp_path)
        before = ca_status(broker)
        old = {p: keys_of(before, p, "active")[0] for p in PURPOSES}
        v = Verifiers(broker, sock).start()
        wait_until(lambda: v.x509 and v.jwt and v.jwt_bundle_kids, "first verified SVIDs", 20, agent, v.failures)

        # prepare: the new keys are published everywhere before anything is signed with them.
        for p in PURPOSES:
            rotate(broker, p, "prepare")
        st = ca_status(broker)
        new = {p: keys_of(st, p, "prepared")[0] for p in PURPOSES}
        new_ca, new_kid, old_ca, old_kid = new["x509-svid"]["fingerprint"], new["jwt-svid"]["id"], old["x509-svid"]["fingerprint"], old["jwt-svid"]["id"]
        wait_until(lambda: {old_ca, new_ca} <= v.last_x509_bundle() and {old_kid, new_kid} <= v.jwt_bundle_kids
                   and {old_ca, new_ca} <= output_bundle_fps(svid_dir),
                   "the prepared keys in the streamed bundles and bundle.pem", 15, agent, v.failures)
        assert new_ca in public_x509_fps(broker) and all(new_kid in s for s in public_jwt_kids(broker))
        assert not v.x509_signers_since(0) - {old_ca}, "nothing is signed by a prepared key"
        assert not v.jwt_kids_since(0) - {old_kid}

        # activate: workloads get SVIDs of the new keys without waiting for half-life.
        activated_at = time.time()
        for p in PURPOSES:
            rotate(broker, p, "activate")
        wait_until(lambda: new_ca in v.x509_signers_since(activated_at) and new_kid in v.jwt_kids_since(activated_at),
                   "SVIDs signed by the new keys", 10, agent, v.failures)
        wait_until(lambda: output_signer(svid_dir) == new_ca, "the x509-svid output signed by the new CA", 10, agent, v.failures)

        # retire, without --force, once the broker says it is safe.
        st = ca_status(broker)
        safe_at = max(k["retire_safe_at"] for p in PURPOSES for k in keys_of(st, p, "previous"))
        assert safe_at > 0, st
        assert safe_at - time.time() < 40, f"retire_safe_at is {safe_at - time.time():.0f}s away: the bounds in server.yaml were not applied"
        wait_until(lambda: time.time() >= safe_at + 0.5, "retire_safe_at", 45, agent, v.failures)
        for p in PURPOSES:
            rotate(broker, p, "retire")
        retired_at = time.time()

        # The old keys are gone from every place a verifier reads.
        wait_until(lambda: old_ca not in public_x509_fps(broker) and not any(old_kid in s for s in public_jwt_kids(broker)),
                   "old keys gone from the public bundle and JWKS", 10, agent, v.failures)
        wait_until(lambda: v.last_x509_bundle() == {new_ca} and v.jwt_bundle_kids == {new_kid}
                   and output_bundle_fps(svid_dir) == {new_ca},
                   "old keys gone from the streamed bundles and bundle.pem", 10, agent, v.failures)
        # Keep verifying a little after the retire.
        wait_until(lambda: time.time() > retired_at + 2 and v.jwt_kids_since(retired_at) == {new_kid}
                   and v.x509_signers_since(retired_at) <= {new_ca}, "verifications after retire", 10, agent, v.failures)
        assert output_verifies(svid_dir) is None
        v.close()

        assert v.failures == [], f"{len(v.failures)} verification failure(s): {v.failures[:10]}"
        assert len(v.x509) >= 4 and len(v.jwt) >= 20, (len(v.x509), len(v.jwt))
        assert v.jwks_fetches >= 2, "PyJWKClient refetched the JWKS for the new kid"
        after = ca_status(broker)
        for p in PURPOSES:
            assert [k["id"] for k in keys_of(after, p, "active")] == [new[p]["id"]]
            assert keys_of(after, p, "previous") == [] and old[p]["id"] in [k["id"] for k in keys_of(after, p, "retired")]
        print(f"rotation: {len(v.x509)} X.509-SVID updates and {len(v.jwt)} JWT-SVIDs verified, 0 failures, "
              f"{v.jwks_fetches} JWKS fetches, {time.time() - started:.0f}s in all")
    finally:
        if v is not None:
            v.close()
        if agent is not None:
            agent.stop()
        broker.stop()


def test_each_rotation_step_reaches_open_streams_and_bundle_pem_at_once_without_restart(sigil_bin, tmp_path):
    """SVIDs live LONG_TTL here: what the agent pushes after each step comes from the step, not from a
    half-life renewal. Ends with a forced retire (the compromised-key case)."""
    import grpc
    from spiffe._proto import workload_pb2, workload_pb2_grpc

    require_peers()
    broker = start_broker(sigil_bin, tmp_path, ttl=LONG_TTL)
    agent = v = None
    try:
        agent, sock, svid_dir = start_agent(sigil_bin, broker, tmp_path, ttl=LONG_TTL)
        pid = agent.proc.pid
        st = ca_status(broker)
        old_ca, old_kid = keys_of(st, "x509-svid", "active")[0]["fingerprint"], keys_of(st, "jwt-svid", "active")[0]["id"]
        first_output = (svid_dir / "svid.pem").read_bytes()
        v = Verifiers(broker, sock).start()

        # An open FetchX509Bundles stream (py-spiffe has no watcher for it: the generated stub).
        bundles: list[set[str]] = []
        errors: list[str] = []
        with grpc.insecure_channel(f"unix:{sock}") as ch:
            stream = workload_pb2_grpc.SpiffeWorkloadAPIStub(ch).FetchX509Bundles(
                workload_pb2.X509BundlesRequest(), metadata=(("workload.spiffe.io", "true"),))

            def read():
                try:
                    for msg in stream:
                        bundles.append({fp(c) for c in der_certs(msg.bundles["spiffe://sigil.local"])})
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.CANCELLED:
                        errors.append(f"FetchX509Bundles: {e.code()} {e.details()}")
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            wait_until(lambda: bundles and v.x509 and v.jwt and v.jwt_bundle_kids, "first bundle on each stream", 20, agent, v.failures)
            assert bundles[-1] == {old_ca} and v.jwt_bundle_kids == {old_kid}

            # prepare: the new keys reach the open streams and bundle.pem; nothing is signed by them.
            for p in PURPOSES:
                rotate(broker, p, "prepare")
            st = ca_status(broker)
            new_ca, new_kid = keys_of(st, "x509-svid", "prepared")[0]["fingerprint"], keys_of(st, "jwt-svid", "prepared")[0]["id"]
            wait_until(lambda: bundles[-1] == {old_ca, new_ca} and v.jwt_bundle_kids == {old_kid, new_kid}
                       and v.last_x509_bundle() == {old_ca, new_ca} and output_bundle_fps(svid_dir) == {old_ca, new_ca},
                       "the prepared keys on the open streams and in bundle.pem", 10, agent, v.failures)
            assert output_verifies(svid_dir) is None
            assert (svid_dir / "svid.pem").read_bytes() != first_output, "bundle.pem is switched together with a fresh SVID"
            assert v.x509_signers_since(0) == {old_ca} and v.jwt_kids_since(0) == {old_kid}

            # activate: the published keys do not change, yet SVIDs of the new keys come at once
            # (the cached ones are not even at half-life).
            activated_at = time.time()
            for p in PURPOSES:
                rotate(broker, p, "activate")
            wait_until(lambda: new_ca in v.x509_signers_since(activated_at) and new_kid in v.jwt_kids_since(activated_at)
                       and output_signer(svid_dir) == new_ca, "SVIDs and the output signed by the new keys", 10, agent, v.failures)
            took = time.time() - activated_at
            assert took < LONG_TTL / 2
            print(f"activate: SVIDs of {LONG_TTL}s signed by the new keys {took:.1f}s after the step (bundle_refresh 1s)")

            # A forced retire (compromised old keys): gone from the open streams and bundle.pem.
            for p in PURPOSES:
                broker.sigil("ca", "rotate", "--purpose", p, "--phase", "retire", "--force")
            wait_until(lambda: bundles[-1] == {new_ca} and v.jwt_bundle_kids == {new_kid}
                       and v.last_x509_bundle() == {new_ca} and output_bundle_fps(svid_dir) == {new_ca},
                       "the retired keys gone from the open streams and bundle.pem", 10, agent, v.failures)
            assert output_verifies(svid_dir) is None

            # The internal CA: the agent's own identity moves to a newly activated key at once too
            # (identity_ttl 60 s: its half-life is 30 s away).
            rotate(broker, "internal", "prepare")
            new_internal = keys_of(ca_status(broker), "internal", "prepared")[0]["fingerprint"]
            rotate(broker, "internal", "activate")
            wait_until(lambda: identity_signer(tmp_path / "state" / "identity") == new_internal,
                       "the agent's identity signed by the new internal CA", 10, agent, v.failures)
            stream.cancel()
            reader.join(timeout=10)
        v.close()
        assert v.failures == [] and errors == [], (v.failures[:10], errors)
        assert agent.proc.poll() is None and agent.proc.pid == pid, "the agent was not restarted"
        assert "trust bundle changed (CA rotation)" in agent.log.read_text()
    finally:
        if v is not None:
            v.close()
        if agent is not None:
            agent.stop()
        broker.stop()
