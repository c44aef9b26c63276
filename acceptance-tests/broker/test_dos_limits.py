"""Denial of service at the broker's edges, against the real `sigil server --dev` binary.

Bounded floods (count and time) on loopback only. The attacker connects from
127.0.0.2 / 127.0.0.3, the victim (admin, health check) from 127.0.0.1. After
each flood the broker must answer an allowed request within 1 s, stay under
128 MB resident, and its data directory must grow less than a stated bound.
"""
import socket
import ssl
import time
from pathlib import Path

import grpc

from sigil_harness import Broker, limit_fds, rss_kb, send_head_slowly

RSS_BOUND_KB = 128 * 1024


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_string(field: int, value: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(value)) + value


def anonymous_channel(b: Broker) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(root_certificates=Path(b.ca).read_bytes())
    # The serving certificate names localhost; connect to the address, check the name.
    opts = [("grpc.ssl_target_name_override", "localhost"), ("grpc.default_authority", "localhost")]
    return grpc.secure_channel(b.addr, creds, options=opts)


def allowed_request_seconds(b: Broker) -> float:
    """`sigil whoami` as the admin: the allowed request, timed."""
    t = time.monotonic()
    out = b.sigil("whoami").stdout
    elapsed = time.monotonic() - t
    assert "admin" in out, out
    return elapsed


def test_anonymous_join_refusal_flood_cannot_fill_the_disk(broker):
    """12.1: 1000 refused Joins with a 60 KB token name and 3000 with distinct 200-byte names
    (Join and BeginJoin) used to add ~350 MB and break `sigil audit`."""
    data = broker.data_dir
    before = dir_bytes(data)
    ch = anonymous_channel(broker)
    join = ch.unary_unary("/sigil.v1.Sigil/Join", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    begin = ch.unary_unary("/sigil.v1.Sigil/BeginJoin", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    big = b"n" * 60_000
    requests = [(join, pb_string(1, b"iam") + pb_string(3, big)) for _ in range(1000)]
    requests += [(join, pb_string(1, b"iam") + pb_string(3, f"t{i:04d}-".encode() + b"x" * 194)) for i in range(1500)]
    requests += [(begin, pb_string(1, b"iam") + pb_string(2, f"b{i:04d}-".encode() + b"y" * 194)) for i in range(1500)]
    started = time.monotonic()
    refused = 0
    for i in range(0, len(requests), 100):
        futures = [call.future(req, timeout=20) for call, req in requests[i:i + 100]]
        for f in futures:
            try:
                f.result()
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
                                    grpc.StatusCode.NOT_FOUND), e
                refused += 1
        assert time.monotonic() - started < 60, "flood took too long"
    ch.close()
    flood_secs = time.monotonic() - started
    assert refused == len(requests)

    answered = allowed_request_seconds(broker)
    rss = rss_kb(broker.proc.pid)
    time.sleep(0.5)  # let the checkpointer copy the WAL
    grown = dir_bytes(data) - before
    print(f"\n4000 refused joins in {flood_secs:.1f} s; admin answered in {answered:.3f} s; "
          f"RSS {rss // 1024} MB; data dir grew {grown // 1024} KiB")
    assert answered < 1.0, f"admin request took {answered:.2f} s after the flood"
    assert rss < RSS_BOUND_KB, f"broker RSS {rss} KiB"
    assert grown < 4 * 1024 * 1024, f"data directory grew {grown} bytes"

    # The audit log still lists, and the refusals it holds are cut to size.
    events = broker.sigil_json("audit", "--limit", "100000")
    refusals = [e for e in events if e["outcome"] == "denied" and e["actor"] == "anonymous"]
    assert 0 < len(refusals) <= 20, f"{len(refusals)} refusal rows: the per-peer rate limit did not hold"
    assert all(len(e["resource"]) <= 300 for e in events)


def tls_connect(port: int, source: str, ctx: ssl.SSLContext, timeout: float) -> ssl.SSLSocket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        t = ctx.wrap_socket(s, server_hostname="localhost")
        return t
    except OSError:
        s.close()
        return None


def client_ctx(b: Broker, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=b.ca)
    ctx.set_alpn_protocols(alpn)
    return ctx


def healthz_seconds(b: Broker) -> float:
    t = time.monotonic()
    s = tls_connect(b.port, "127.0.0.1", client_ctx(b, ["http/1.1"]), 2)
    assert s is not None, "health check could not connect"
    with s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        body = b""
        while chunk := s.recv(4096):
            body += chunk
    assert b" 200 " in body.split(b"\r\n")[0] and body.endswith(b"ok"), body
    return time.monotonic() - t


def assert_served_during_flood(b: Broker, flood: str) -> None:
    """The admin and /healthz answer within 1 s while the flood's connections are held, and the
    broker stays under its RSS bound; prints the figures after `flood` (what was done, how fast)."""
    answered = allowed_request_seconds(b)
    health = healthz_seconds(b)
    rss = rss_kb(b.proc.pid)
    print(f"\n{flood}; admin answered in {answered:.3f} s, /healthz in {health:.3f} s; RSS {rss // 1024} MB")
    assert answered < 1.0, f"admin request took {answered:.2f} s during the flood ({flood})"
    assert health < 1.0, f"/healthz took {health:.2f} s"
    assert rss < RSS_BOUND_KB, f"broker RSS {rss} KiB"


def test_idle_tls_connections_cannot_exhaust_the_broker_fds(sigil_bin, tmp_path):
    """12.2: idle TLS connections beyond the fd limit stopped the broker from accepting
    (health checks and admin calls timed out). Broker limited to 256 fds; 400 idle
    connections from two attacker addresses."""
    b = Broker(sigil_bin, tmp_path / "data", preexec_fn=limit_fds(256)).start()
    held = []
    try:
        ctx = client_ctx(b, ["h2"])
        started = time.monotonic()
        for source in ("127.0.0.2", "127.0.0.3"):
            timeouts = 0
            for _ in range(200):
                s = tls_connect(b.port, source, ctx, 1.0)
                if s is None:
                    timeouts += 1
                    if timeouts >= 5:  # the broker stopped answering handshakes
                        break
                    continue
                held.append(s)
            assert time.monotonic() - started < 40, "flood took too long"
        # The connections stay open (idle) while the allowed requests run.
        assert_served_during_flood(b, f"{len(held)} idle TLS connections opened in {time.monotonic() - started:.1f} s")
    finally:
        for s in held:
            s.close()
        b.stop()


def test_a_request_head_sent_slowly_is_cut_off(broker):
    """12.2: hyper was built without a timer, which silently disables its header-read
    timeout: a connection sending its request head a line at a time was held forever."""
    s = tls_connect(broker.port, "127.0.0.2", client_ctx(broker, ["http/1.1"]), 2)
    assert s is not None
    with s:
        s.settimeout(1)
        closed, waited = send_head_slowly(s, b"GET /healthz HTTP/1.1\r\n")
    print(f"\nslow request head cut off after {waited:.1f} s")
    assert closed, f"the broker still held the connection after {waited:.0f} s"


def test_connections_stalled_before_the_tls_handshake_cannot_lock_out_the_admin(sigil_bin, tmp_path):
    """12.2: connections that never send a ClientHello count until the handshake timeout (10 s);
    from two addresses they filled every slot the fd limit allows. They are anonymous and idle:
    a newcomer closes the oldest of the peer holding the most."""
    b = Broker(sigil_bin, tmp_path / "data", preexec_fn=limit_fds(256)).start()
    held = []
    try:
        started = time.monotonic()
        for source in ("127.0.0.2", "127.0.0.3"):
            for _ in range(200):
                s = socket.socket()
                s.settimeout(0.5)
                try:
                    s.bind((source, 0))
                    s.connect(("127.0.0.1", b.port))
                    held.append(s)
                except OSError:
                    s.close()
        time.sleep(0.3)  # let the broker accept them all
        assert_served_during_flood(b, f"{len(held)} stalled connections in {time.monotonic() - started:.1f} s")
    finally:
        for s in held:
            s.close()
        b.stop()
