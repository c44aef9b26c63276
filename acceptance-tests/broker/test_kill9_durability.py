"""kill -9 of the broker in a loop under concurrent writes: nothing acknowledged is lost.

Writers run `sigil` against the real broker while it is SIGKILLed at random moments and
restarted on the same data directory and port. A write counts as acknowledged when the
command exited 0; what it returned is recorded. After the last restart every acknowledged
resource write, single-use token redemption and SVID issuance (its audit event, matched by
certificate serial / JWT jti) must be there.
"""
import base64
import json
import random
import subprocess
import threading
import time

import pytest
from cryptography import x509

from sigil_harness import JOIN_REFUSED, Broker, Postgres, free_port

BACKENDS = ["sqlite", "postgres"]
KILLS = 12
MAX_KILLS = 20
# Each writer kind runs in this many threads.
THREADS = 2
CMD_TIMEOUT = 20

SETUP = """
kind: role
name: k9
allow: {spiffe_ids: ["/k9/**"], audiences: ["kill9"]}
---
kind: bot
name: issuer
roles: [k9]
---
kind: bot
name: joiner
roles: [k9]
"""


class Writers:
    """Concurrent writers recording what the broker acknowledged (exit 0)."""

    def __init__(self, b: Broker, tmp, issuer_identity: str):
        self.b, self.tmp, self.issuer = b, tmp, issuer_identity
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.roles = {}        # role name -> list of acknowledged versions (in order)
        self.created_roles = []
        self.tokens = []       # acknowledged token creations
        self.redeemed = []     # secrets whose redemption was acknowledged
        self.serials = []      # X.509-SVID serials acknowledged
        self.jtis = []         # JWT-SVID jtis acknowledged
        self.attempts = 0

    def all_kinds_acknowledged(self) -> bool:
        with self.lock:
            return all((self.roles, self.tokens, self.redeemed, self.serials, self.jtis))

    def run(self, *args, identity=None, input=None):
        with self.lock:
            self.attempts += 1
        try:
            return subprocess.run([self.b.bin, *args], env=self.b.env(identity), capture_output=True, text=True,
                                  input=input, timeout=CMD_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None

    def resources(self, t: int):
        name = f"kw{t}"
        f = self.tmp / f"res{t}.yaml"
        i = 0
        while not self.stop.is_set():
            i += 1
            f.write_text(f"kind: role\nname: {name}\nallow: {{spiffe_ids: [\"/k9/v{i}\"], audiences: [\"a{i}\"]}}\n"
                         f"---\nkind: role\nname: kc{t}-{i}\nallow: {{spiffe_ids: [\"/k9/c\"], audiences: [\"x\"]}}\n")
            p = self.run("apply", "-f", str(f))
            if p and p.returncode == 0:
                with self.lock:
                    self.roles.setdefault(name, []).append(i)
                    self.created_roles.append(f"kc{t}-{i}")

    def tokens_and_joins(self, t: int):
        i = 0
        while not self.stop.is_set():
            i += 1
            name = f"tk{t}-{i}"
            p = self.run("token", "create", "--bot", "joiner", "--name", name)
            if not (p and p.returncode == 0):
                continue
            secret = p.stdout.strip()
            with self.lock:
                self.tokens.append(name)
            p = self.run("join", "--token", secret, "--ca-file", self.b.ca, "--out", str(self.tmp / f"j-{name}.identity"))
            if p and p.returncode == 0:
                with self.lock:
                    self.redeemed.append((name, secret))

    def x509_svids(self, t: int):
        i = 0
        while not self.stop.is_set():
            i += 1
            out = self.tmp / f"x{t}-{i}"
            p = self.run("svid", "x509", "--spiffe-id", f"spiffe://sigil.local/k9/x{t}/{i}", "--out", str(out), identity=self.issuer)
            if p and p.returncode == 0:
                cert = x509.load_pem_x509_certificate((out / "svid.pem").read_bytes())
                with self.lock:
                    self.serials.append(cert.serial_number)

    def jwt_svids(self, t: int):
        i = 0
        while not self.stop.is_set():
            i += 1
            p = self.run("svid", "jwt", "--spiffe-id", f"spiffe://sigil.local/k9/j{t}/{i}", "--audience", "kill9", identity=self.issuer)
            if p and p.returncode == 0:
                payload = p.stdout.strip().split(".")[1]
                claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                with self.lock:
                    self.jtis.append(claims["jti"])


def all_audit(b: Broker) -> list:
    events, after = [], 0
    while True:
        page = b.sigil_json("audit", "--after", str(after), "--limit", "1000")
        if not page:
            return events
        events += page
        after = page[-1]["id"]


def start_broker(sigil_bin, tmp_path, backend: str, pg: Postgres | None) -> Broker:
    """Dev mode on SQLite; on PostgreSQL, `--config` with `store: postgres://...`."""
    if backend == "sqlite":
        return Broker(sigil_bin, tmp_path / "data").start()
    port = free_port()
    seal = tmp_path / "seal.key"
    seal.write_text("11" * 32)
    seal.chmod(0o600)
    cfg = tmp_path / "server.yaml"
    cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {tmp_path / 'data'}\n"
                   f"seal_key_file: {seal}\nadmin_identity_ttl: 86400\nstore: {pg.url}\n")
    return Broker(sigil_bin, tmp_path / "data", port=port, config=cfg).start()


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill9_in_a_loop_loses_no_acknowledged_write_or_svid_audit_event(sigil_bin, tmp_path, backend):
    started = time.monotonic()
    rng = random.Random()
    pg = Postgres() if backend == "postgres" else None
    b = None
    try:
        b = start_broker(sigil_bin, tmp_path, backend, pg)
        setup = tmp_path / "setup.yaml"
        setup.write_text(SETUP)
        b.sigil("apply", "-f", str(setup))
        secret = b.sigil("token", "create", "--bot", "issuer").stdout.strip()
        issuer = tmp_path / "issuer.identity"
        b.sigil("join", "--token", secret, "--ca-file", b.ca, "--out", str(issuer))

        w = Writers(b, tmp_path, str(issuer))
        threads = [threading.Thread(target=fn, args=(t,), daemon=True)
                   for fn in (w.resources, w.tokens_and_joins, w.x509_svids, w.jwt_svids) for t in range(THREADS)]
        for th in threads:
            th.start()
        kills = 0
        while True:
            time.sleep(rng.uniform(0.3, 1.5))
            b.proc.kill()  # SIGKILL
            b.proc.wait()
            kills += 1
            # On a slow machine, go on (bounded) until every kind of write was acknowledged once.
            if kills >= MAX_KILLS or (kills >= KILLS and w.all_kinds_acknowledged()):
                break
            b.start()
        w.stop.set()
        for th in threads:
            th.join(timeout=CMD_TIMEOUT + 5)
            assert not th.is_alive(), "a writer did not stop"
        b.start()

        # Resources: every acknowledged write is there, at least at its revision.
        for name, versions in w.roles.items():
            role = b.sigil_json("role", "get", name)
            stored = int(role["allow"]["audiences"][0][1:])
            assert stored >= versions[-1], f"role {name}: acknowledged version {versions[-1]}, stored {stored}"
            assert role["revision"] >= len(versions), f"role {name}: {len(versions)} acknowledged writes, revision {role['revision']}"
        roles = {r["name"] for r in b.sigil_json("role", "list")}
        lost = [r for r in w.created_roles if r not in roles]
        assert not lost, f"acknowledged role creations lost: {lost}"

        # Tokens: created ones exist; redeemed single-use ones are used up.
        tokens = {t["name"] for t in b.sigil_json("token", "list")}
        lost = [t for t in w.tokens if t not in tokens]
        assert not lost, f"acknowledged token creations lost: {lost}"
        for name, secret in w.redeemed:
            p = b.sigil("join", "--token", secret, "--ca-file", b.ca, "--out", str(tmp_path / "again.identity"), check=False)
            assert p.returncode != 0 and JOIN_REFUSED in p.stderr, f"token {name} was redeemed (acknowledged) but could be redeemed again"

        # SVIDs and joins: every acknowledged one has its audit event.
        events = all_audit(b)
        serials = {int(e["detail"]["serial"], 16) for e in events if e["kind"] == "svid.x509" and e["outcome"] == "ok"}
        jtis = {e["detail"]["jti"] for e in events if e["kind"] == "svid.jwt" and e["outcome"] == "ok"}
        joins = [e for e in events if e["kind"] == "join" and e["outcome"] == "ok" and e["resource"] == "joiner"]
        lost = [s for s in w.serials if s not in serials]
        assert not lost, f"{len(lost)} of {len(w.serials)} acknowledged X.509-SVIDs have no audit event"
        lost = [j for j in w.jtis if j not in jtis]
        assert not lost, f"{len(lost)} of {len(w.jtis)} acknowledged JWT-SVIDs have no audit event"
        assert len(joins) >= len(w.redeemed), f"{len(w.redeemed)} acknowledged joins, {len(joins)} join events"

        acked = {"role writes": sum(len(v) for v in w.roles.values()), "tokens": len(w.tokens), "redemptions": len(w.redeemed),
                 "x509": len(w.serials), "jwt": len(w.jtis)}
        print(f"{backend}: kills={kills} attempts={w.attempts} acknowledged={acked} seconds={time.monotonic() - started:.1f}")
        # The run must have exercised every kind of write, or it proves nothing.
        assert kills >= 10 and all(n > 0 for n in acked.values()), acked
    finally:
        if b:
            b.stop()
        if pg:
            pg.stop()
