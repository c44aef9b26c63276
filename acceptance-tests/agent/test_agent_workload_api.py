"""The agent's SPIFFE Workload API driven by py-spiffe (PyPI `spiffe`), a client we
did not write: fetch, validate, deny another uid, and push rotated SVIDs."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509

from agent_harness import HERE, OTHER_UID, Agent, setup_broker, socket_dir, write_config

try:
    from spiffe import WorkloadApiClient
except ImportError:  # pragma: no cover - a missing peer must fail, not skip
    WorkloadApiClient = None


def require_py_spiffe():
    if WorkloadApiClient is None:
        pytest.fail("py-spiffe missing: .venv/bin/pip install -r acceptance-tests/requirements.txt (scripts/setup.sh does)")


def start_agent(sigil_bin, broker, tmp_path, x509_ttl="60s"):
    require_py_spiffe()
    token = setup_broker(broker, tmp_path)
    sock = socket_dir() / "agent.sock"
    cfg = write_config(
        tmp_path / "agent.yaml", broker, tmp_path / "state", token,
        f"services:\n  - type: workload-api\n    socket: {sock}\n    workload_identities: [root-python]\n"
        f"    x509_ttl: {x509_ttl}\n    jwt_ttl: 60s\n",
    )
    a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
    a.wait_for(lambda: sock.exists() and "bot identity installed" in a.log.read_text(), "agent socket and identity")
    return a, sock


def run_client(sock, *extra) -> dict:
    p = subprocess.run([sys.executable, str(HERE / "wl_client.py"), str(sock), *extra], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_py_spiffe_fetches_svids_and_bundles_and_validates_the_jwt(sigil_bin, broker, tmp_path):
    a, sock = start_agent(sigil_bin, broker, tmp_path)
    try:
        got = run_client(sock)
        assert "error" not in got, got
        want = "spiffe://sigil.local/svc/node1/uid-0"
        assert got["x509_spiffe_id"] == want
        assert got["x509_bundle_tds"] == ["sigil.local"]
        assert got["jwt_spiffe_id"] == want
        assert got["validated_by_agent"] == want
        assert got["validated_locally"] == want

        # Independent check of the chain with `cryptography`: the SVID leaf is
        # signed by a certificate of the bundle py-spiffe received.
        with WorkloadApiClient(f"unix://{sock}", default_timeout=20) as c:
            ctx = c.fetch_x509_context()
            leaf = ctx.default_svid.leaf
            bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(ctx.default_svid.spiffe_id.trust_domain)
            issuers = [ca for ca in bundle.x509_authorities if ca.subject == leaf.issuer]
            assert issuers, "bundle holds the SVID's issuer"
            leaf.verify_directly_issued_by(issuers[0])
    finally:
        a.stop()


def test_process_under_another_uid_is_denied(sigil_bin, broker, tmp_path):
    if os.getuid() != 0:
        pytest.fail("this test runs a client under another uid and needs root: run the acceptance tests as root (CI does)")
    a, sock = start_agent(sigil_bin, broker, tmp_path)
    try:
        got = run_client(sock, "--as-uid", str(OTHER_UID))
        assert got["uid"] == OTHER_UID
        assert "error" in got, got
        assert "PERMISSION_DENIED" in got["error"] or "PermissionDenied" in got["error"] or "no identity issued" in got["error"], got
        assert "x509_spiffe_id" not in got
        # ... while root, running the same client, is served.
        assert "error" not in run_client(sock)
        assert f"uid {OTHER_UID}" in a.log.read_text(), "agent logs which caller was refused"
    finally:
        a.stop()


def test_open_stream_receives_a_new_svid_before_the_old_one_expires(sigil_bin, broker, tmp_path):
    a, sock = start_agent(sigil_bin, broker, tmp_path, x509_ttl="6s")
    updates: list[tuple[float, x509.Certificate]] = []
    errors: list[Exception] = []
    got_two = threading.Event()

    def on_success(ctx):
        updates.append((time.time(), ctx.default_svid.leaf))
        if len({u[1].serial_number for u in updates}) >= 2:
            got_two.set()

    try:
        with WorkloadApiClient(f"unix://{sock}") as c:
            handle = c.stream_x509_contexts(on_success, errors.append)
            try:
                assert got_two.wait(timeout=20), f"only {len(updates)} update(s); errors {errors}; log:\n{a.log.read_text()[-3000:]}"
            finally:
                handle.cancel()
        first_at, first = updates[0]
        second_at, second = next(u for u in updates if u[1].serial_number != first.serial_number)
        expiry = first.not_valid_after_utc.timestamp()
        assert second_at < expiry, f"rotated at {second_at}, old one expired at {expiry}"
        assert second.not_valid_after_utc > first.not_valid_after_utc
        assert second.public_key().public_numbers() != first.public_key().public_numbers(), "a fresh key per rotation"
        lifetime = expiry - first.not_valid_before_utc.timestamp()
        print(f"rotation: SVID lifetime {lifetime:.0f}s (incl. 10s backdating), new SVID pushed {expiry - second_at:.1f}s before expiry")
    finally:
        a.stop()


def test_missing_security_header_is_invalid_argument(sigil_bin, broker, tmp_path):
    import grpc
    from spiffe._proto import workload_pb2, workload_pb2_grpc

    a, sock = start_agent(sigil_bin, broker, tmp_path)
    try:
        with grpc.insecure_channel(f"unix:{sock}") as ch:
            stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(ch)
            with pytest.raises(grpc.RpcError) as e:
                stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["a"]), timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        a.stop()
