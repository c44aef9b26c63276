"""The agent when the broker goes away and when the agent itself is killed."""
from __future__ import annotations

import os
import random
import signal
import threading
import time

import requests

from agent_harness import (Agent, read_cert, read_certs, read_identity, read_jwt, read_key, setup_broker,
                           socket_dir, write_config)
from sigil_harness import Broker, free_port


def outputs_yaml(out, ttl):
    return (
        "outputs:\n"
        f"  - type: x509-svid\n    dir: {out}/svid\n    spiffe_id: spiffe://sigil.local/svc/app\n    ttl: {ttl}\n"
        f"  - type: jwt-svid\n    path: {out}/jwt/token\n    audiences: [sts.amazonaws.com]\n    spiffe_id: spiffe://sigil.local/svc/app\n    ttl: {ttl}\n"
        f"  - type: identity\n    path: {out}/id/identity\n"
    )


FILES = ["svid/svid.pem", "svid/svid.key", "svid/bundle.pem", "jwt/token", "id/identity"]


def all_written(out):
    return all((out / f).exists() for f in FILES)


def check_outputs(out):
    """Every output file is complete and parses (as its consumer would read it)."""
    read_cert(out / "svid" / "svid.pem")
    read_key(out / "svid" / "svid.key")
    read_certs(out / "svid" / "bundle.pem")
    read_jwt(out / "jwt" / "token")
    read_identity(out / "id" / "identity")


def public_der(obj) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return obj.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def pair_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """True when the private key is the one the certificate certifies."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    assert cert_pem and key_pem, "empty svid.pem or svid.key"
    return public_der(x509.load_pem_x509_certificate(cert_pem)) == public_der(load_pem_private_key(key_pem, password=None))


def read_pair_through_data(svid_dir) -> tuple[bytes, bytes]:
    """How a careful consumer reads the pair: open `..data` once, read both files relative to it."""
    fd = os.open(svid_dir / "..data", os.O_RDONLY | os.O_DIRECTORY)
    try:
        def rd(name):
            f = os.open(name, os.O_RDONLY, dir_fd=fd)
            try:
                return b"".join(iter(lambda: os.read(f, 65536), b""))
            finally:
                os.close(f)
        return rd("svid.pem"), rd("svid.key")
    finally:
        os.close(fd)


def metric(url, name, cred):
    for line in requests.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(f'{name}{{credential="{cred}"}}'):
            return float(line.split()[-1])
    return None


def test_broker_outage_longer_than_renewal_keeps_serving_and_recovers(sigil_bin, tmp_path):
    from spiffe import WorkloadApiClient

    broker = Broker(sigil_bin, tmp_path / "data").start()
    a = None
    try:
        token = setup_broker(broker, tmp_path)
        out, sock, hport = tmp_path / "out", socket_dir() / "agent.sock", free_port()
        health = f"http://127.0.0.1:{hport}"
        cfg = write_config(
            tmp_path / "agent.yaml", broker, tmp_path / "state", token,
            "identity_ttl: 20s\nbundle_refresh: 2s\nretry: {initial: 200ms, max: 1s}\n" + outputs_yaml(out, "8s")
            + f"services:\n  - type: workload-api\n    socket: {sock}\n    workload_identities: [root-python]\n    x509_ttl: 20s\n"
            + f"health: {{listen: 127.0.0.1:{hport}}}\n",
        )
        a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
        a.wait_for(lambda: requests.get(f"{health}/readyz", timeout=2).status_code == 200, "readyz 200")
        with WorkloadApiClient(f"unix://{sock}", default_timeout=10) as c:
            before = c.fetch_x509_svid().leaf
        file_serial = read_cert(out / "svid" / "svid.pem").serial_number

        broker.stop()
        down_at = time.time()
        # Down for longer than the outputs' renewal interval (4s) and the identity's (10s).
        while time.time() - down_at < 11:
            check_outputs(out)
            time.sleep(0.25)
        failures = metric(health, "sigil_agent_renewal_failures_total", f"x509-svid:{out}/svid")
        assert failures and failures >= 1, "failed renewals are counted"
        assert "cannot renew output" in a.log.read_text(), "the agent logs why it is failing"
        with WorkloadApiClient(f"unix://{sock}", default_timeout=10) as c:
            during = c.fetch_x509_svid().leaf
        assert during.serial_number == before.serial_number, "cached SVID served while the broker is down"
        assert during.not_valid_after_utc.timestamp() > time.time(), "and it is still valid"

        broker = Broker(sigil_bin, tmp_path / "data", port=broker.port).start()
        back_at = time.time()
        a.wait_for(lambda: read_cert(out / "svid" / "svid.pem").serial_number != file_serial, "output renewed after the broker returned")
        recovered_in = time.time() - back_at
        with WorkloadApiClient(f"unix://{sock}", default_timeout=10) as c:
            # A failed re-issue backs off for a few seconds; then the fresh SVID comes.
            a.wait_for(lambda: c.fetch_x509_svid().leaf.serial_number != before.serial_number, "fresh SVID on the socket")
            after = c.fetch_x509_svid().leaf
        assert after.not_valid_after_utc > before.not_valid_after_utc
        a.wait_for(lambda: requests.get(f"{health}/readyz", timeout=2).status_code == 200, "ready again")
        check_outputs(out)
        print(f"outage 11s; outputs renewed {recovered_in:.1f}s after the broker came back; {failures:.0f} failed x509 renewals counted")
    finally:
        if a:
            a.stop()
        broker.stop()


def test_kill_9_during_writes_never_leaves_a_partial_file_or_a_mismatched_key(sigil_bin, broker, tmp_path):
    token = setup_broker(broker, tmp_path)
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token,
                       "retry: {initial: 100ms, max: 500ms}\n" + outputs_yaml(out, "2s"))
    rng = random.Random(1234)
    stop = threading.Event()
    problems: list[str] = []
    reads = pairs = straddled = 0
    svid = out / "svid"

    def reader():
        nonlocal reads, pairs, straddled
        while not stop.is_set():
            if all_written(out):
                try:
                    check_outputs(out)
                    reads += 1
                    # Through the plain names, as most consumers read: unless `..data` switched
                    # between the two opens, the key must be the certificate's.
                    before = os.readlink(svid / "..data")
                    cert, key = (svid / "svid.pem").read_bytes(), (svid / "svid.key").read_bytes()
                    if os.readlink(svid / "..data") != before:
                        straddled += 1
                    elif not pair_matches(cert, key):
                        problems.append(f"live read: svid.key does not match svid.pem (generation {before})")
                    # Through one open of `..data`: always one generation.
                    if not pair_matches(*read_pair_through_data(svid)):
                        problems.append("live read through ..data: svid.key does not match svid.pem")
                    pairs += 1
                except FileNotFoundError:
                    pass  # a generation two switches old was removed while being read
                except Exception as e:  # noqa: BLE001 - any parse failure is a finding
                    problems.append(f"live read: {type(e).__name__}: {e}")

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    kills = 0
    try:
        for i in range(12):
            a = Agent(sigil_bin, cfg, tmp_path / f"agent{i}.log").start()
            a.wait_for(lambda: all_written(out), "first outputs")
            # SIGUSR1 makes the agent rewrite every output at once; kill it mid-stream.
            deadline = time.time() + rng.uniform(0.2, 1.0)
            while time.time() < deadline:
                a.signal(signal.SIGUSR1)
                time.sleep(0.01)
            a.kill9()
            kills += 1
            try:
                check_outputs(out)
                assert pair_matches((svid / "svid.pem").read_bytes(), (svid / "svid.key").read_bytes()), "key/cert mismatch after kill"
                read_identity(tmp_path / "state" / "identity")
            except Exception as e:  # noqa: BLE001
                problems.append(f"after kill {i}: {type(e).__name__}: {e}")
    finally:
        stop.set()
        t.join(timeout=5)
    assert not problems, problems[:5]
    assert kills == 12 and reads > 50 and pairs > 50, (kills, reads, pairs)
    # The last agent's renewal still works from the identity the killed ones left.
    a = Agent(sigil_bin, cfg, tmp_path / "agent-final.log").start()
    started = time.time()
    a.wait_for(lambda: (out / "svid" / "svid.pem").stat().st_mtime > started, "agent renews after the kills")
    check_outputs(out)
    a.stop()
    versions = [p for p in os.listdir(svid) if p.startswith("..v")]
    assert 1 <= len(versions) <= 2, f"old generations are cleaned up: {versions}"
    print(f"{kills} kill -9 during rewrites, {reads} complete reads, {pairs} key/cert pairs checked "
          f"({straddled} plain-name reads straddled a switch), 0 partial files, 0 mismatches")


def test_sigusr1_renews_identity_and_outputs_at_once(sigil_bin, broker, tmp_path):
    token = setup_broker(broker, tmp_path)
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token, "identity_ttl: 1h\n" + outputs_yaml(out, "1h"))
    a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
    try:
        a.wait_for(lambda: all_written(out), "outputs")
        serial = read_cert(out / "svid" / "svid.pem").serial_number
        ident = read_identity(out / "id" / "identity").serial_number
        gen = broker.sigil_json("whoami", identity=str(out / "id" / "identity"))["generation"]
        a.signal(signal.SIGUSR1)
        a.wait_for(lambda: read_cert(out / "svid" / "svid.pem").serial_number != serial, "x509-svid renewed on SIGUSR1", timeout=10)
        a.wait_for(lambda: read_identity(out / "id" / "identity").serial_number != ident, "identity renewed on SIGUSR1", timeout=10)
        new_gen = broker.sigil_json("whoami", identity=str(out / "id" / "identity"))["generation"]
        assert new_gen > gen, (gen, new_gen)
        assert "SIGUSR1" in a.log.read_text()
    finally:
        a.stop()
