"""The broker's operator listener (`metrics_listen`) read by independent clients: the Python
`prometheus_client` parser reads /metrics, and a SQLite client holding the database's write lock
makes the store unreachable for /readyz (503), then lets go (200 again)."""
import socket
import sqlite3
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from sigil_harness import Broker, free_port


def start(sigil_bin, tmp_path):
    port, mport = free_port(), free_port()
    seal = tmp_path / "seal.key"
    seal.write_text("33" * 32)
    seal.chmod(0o600)
    cfg = tmp_path / "server.yaml"
    cfg.write_text(
        "trust_domain: example.org\n"
        f"listen: 127.0.0.1:{port}\n"
        f"data_dir: {tmp_path / 'data'}\n"
        f"seal_key_file: {seal}\n"
        f"metrics_listen: 127.0.0.1:{mport}\n"
    )
    b = Broker(sigil_bin, tmp_path / "data", port=port, config=cfg).start()
    # Bound before the broker port: no wait needed.
    socket.create_connection(("127.0.0.1", mport), timeout=5).close()
    return b, f"http://127.0.0.1:{mport}"


def samples(ops_url):
    r = requests.get(f"{ops_url}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_with_prometheus_client_and_count_joins(sigil_bin, tmp_path):
    b, ops = start(sigil_bin, tmp_path)
    try:
        before = samples(ops)
        f = tmp_path / "bot.yaml"
        f.write_text("kind: bot\nname: edge\n")
        b.sigil("apply", "-f", str(f))
        secret = b.sigil("token", "create", "--bot", "edge", "--name", "t1").stdout.strip()
        b.sigil("join", "--token", secret, "--ca-file", b.ca, "--out", str(tmp_path / "id"))
        refused = b.sigil("join", "--token", "wrong", "--ca-file", b.ca, "--out", str(tmp_path / "id2"), check=False)
        assert refused.returncode != 0
        after = samples(ops)
        key = lambda name, **labels: (name, tuple(sorted(labels.items())))
        moved = lambda k: after.get(k, 0) - before.get(k, 0)
        assert moved(key("sigil_broker_grpc_requests_total", rpc="CreateJoinToken", code="OK")) == 1
        assert moved(key("sigil_broker_grpc_request_duration_seconds_count", rpc="CreateJoinToken")) == 1
        assert moved(key("sigil_broker_joins_total", method="token", outcome="refused")) == 1
        assert moved(key("sigil_broker_joins_total", method="token", outcome="ok")) == 1
        # `sigil apply` writes in one batch (write_batch), `token create` with create.
        assert moved(key("sigil_broker_store_operation_duration_seconds_count", op="write_batch")) == 1
        assert moved(key("sigil_broker_grpc_requests_total", rpc="Apply", code="OK")) == 1
        assert moved(key("sigil_broker_store_operation_duration_seconds_count", op="create")) >= 1
        assert after[key("sigil_broker_ready")] == 1
        # The public TLS port does not serve /metrics.
        public = requests.get(f"{b.url}/metrics", verify=b.ca, timeout=10)
        assert "sigil_broker_" not in public.text and public.headers.get("grpc-status") == "12"
    finally:
        b.stop()


def readyz(url, verify=None):
    return requests.get(f"{url}/readyz", timeout=10, verify=verify).status_code


def wait_for(url, status, verify=None, within=20.0):
    deadline, seen = time.time() + within, None
    while time.time() < deadline:
        seen = readyz(url, verify)
        if seen == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"/readyz stayed {seen}, expected {status}")


def test_readyz_is_503_while_the_store_is_locked_and_200_after(sigil_bin, tmp_path):
    b, ops = start(sigil_bin, tmp_path)
    try:
        assert readyz(ops) == 200 and readyz(b.url, b.ca) == 200
        lock = sqlite3.connect(tmp_path / "data" / "sigil.db", isolation_level=None, timeout=10)
        lock.execute("BEGIN IMMEDIATE")
        try:
            started = time.time()
            wait_for(ops, 503)
            assert time.time() - started < 5, "each probe is bounded by 1 s"
            wait_for(b.url, 503, b.ca)
            assert requests.get(f"{ops}/healthz", timeout=10).status_code == 200, "liveness is not readiness"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        wait_for(ops, 200)
        wait_for(b.url, 200, b.ca)
    finally:
        b.stop()
