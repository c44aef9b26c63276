"""Clients fail over between brokers: a comma-separated `--addr` / SIGIL_ADDR is
tried in order when a connection cannot be set up, never after a broker's answer;
`sigil join` retries connections that break before the broker answers."""
from __future__ import annotations

import socket
import threading
import time

from sigil_harness import free_port


def dead_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    return free_port()


class Listener:
    """A loopback TCP listener that closes the first `drop` connections at once and
    forwards later ones to `target` (or closes them too when `target` is None).
    Counts every connection it accepts."""

    def __init__(self, drop: int, target: int | None = None):
        self.drop, self.target = drop, target
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            if self.accepted <= self.drop or self.target is None:
                c.close()
                continue
            threading.Thread(target=self._forward, args=(c,), daemon=True).start()

    def _forward(self, c: socket.socket):
        try:
            up = socket.create_connection(("127.0.0.1", self.target), timeout=10)
        except OSError:
            c.close()
            return

        def pump(a, b):
            try:
                while (data := a.recv(65536)):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(c, up), daemon=True).start()
        pump(up, c)

    def close(self):
        self.stopped.set()
        self.sock.close()


def token(broker) -> str:
    f = broker.data_dir.parent / "fo.yaml"
    f.write_text("kind: role\nname: fo-role\nallow:\n  spiffe_ids: [/fo/*]\n---\nkind: bot\nname: fo\nroles: [fo-role]\n")
    broker.sigil("apply", "-f", str(f))
    return broker.sigil("token", "create", "--bot", "fo", "--name", f"fo{time.monotonic_ns()}", "--uses", "10").stdout.strip()


def test_the_cli_with_a_dead_first_address_reaches_the_live_broker(broker):
    p = broker.sigil("--addr", f"127.0.0.1:{dead_port()},{broker.addr}", "whoami")
    assert p.stdout.startswith("bot "), p.stdout


def test_a_dns_name_is_resolved_and_verified_against_the_broker_certificate(broker):
    p = broker.sigil("--addr", f"127.0.0.1:{dead_port()},localhost:{broker.port}", "whoami")
    assert p.stdout.startswith("bot "), p.stdout


def test_when_every_broker_is_unreachable_the_error_names_each_address_and_why(broker):
    a, b = dead_port(), dead_port()
    p = broker.sigil("--addr", f"127.0.0.1:{a},127.0.0.1:{b}", "whoami", check=False)
    assert p.returncode != 0
    assert f"127.0.0.1:{a}" in p.stderr and f"127.0.0.1:{b}" in p.stderr, p.stderr
    assert "refused" in p.stderr.lower(), p.stderr


def test_a_broker_refusal_is_not_retried_on_the_next_address(broker, tmp_path):
    spare = Listener(drop=0)  # counts any connection a client would make to "the next broker"
    try:
        # An RPC answer (NotFound) from the first broker is final.
        p = broker.sigil("--addr", f"{broker.addr},127.0.0.1:{spare.port}", "role", "get", "no-such-role", check=False)
        assert p.returncode != 0 and "not" in p.stderr.lower(), p.stderr
        # A refused join is final too: not retried on the next broker nor by `sigil join`'s retries.
        bad = tmp_path / "bad-token"
        bad.write_text("not-a-valid-token")
        p = broker.sigil("--addr", f"{broker.addr},127.0.0.1:{spare.port}", "join", "--token-file", str(bad),
                         "--ca-file", broker.ca, "--out", str(tmp_path / "bot.identity"), check=False)
        assert p.returncode != 0, p.stderr
        assert "retrying" not in p.stderr, p.stderr
        time.sleep(0.3)
        assert spare.accepted == 0, f"the next address was dialled {spare.accepted} time(s) after a broker's answer"
        assert not (tmp_path / "bot.identity").exists()
    finally:
        spare.close()


def test_sigil_join_retries_connections_dropped_before_the_handshake_and_succeeds(broker, tmp_path):
    secret = token(broker)
    flaky = Listener(drop=2, target=broker.port)
    try:
        tok = tmp_path / "token"
        tok.write_text(secret)
        out = tmp_path / "bot.identity"
        t0 = time.time()
        p = broker.sigil("--addr", f"127.0.0.1:{flaky.port}", "join", "--token-file", str(tok),
                         "--ca-file", broker.ca, "--out", str(out))
        assert out.exists()
        assert "join attempt 1/5 failed" in p.stderr and "join attempt 2/5 failed" in p.stderr, p.stderr
        assert flaky.accepted == 3, flaky.accepted
        print(f"joined after 2 dropped connections in {time.time() - t0:.2f}s")
    finally:
        flaky.close()


def test_sigil_join_gives_up_after_its_bounded_attempts(broker, tmp_path):
    secret = token(broker)
    dropper = Listener(drop=1_000_000)
    try:
        tok = tmp_path / "token"
        tok.write_text(secret)
        p = broker.sigil("--addr", f"127.0.0.1:{dropper.port}", "join", "--attempts", "3", "--token-file", str(tok),
                         "--ca-file", broker.ca, "--out", str(tmp_path / "bot.identity"), check=False)
        assert p.returncode != 0
        assert f"127.0.0.1:{dropper.port}" in p.stderr, p.stderr
        time.sleep(0.3)
        assert dropper.accepted == 3, dropper.accepted
    finally:
        dropper.close()
