"""`sigil store migrate --from sqlite:PATH --to postgres://...` (docs/reference/server.md, "Moving to
PostgreSQL"): a populated single-node broker's store is copied into a real PostgreSQL 15 (started here,
loopback, user postgres), the counts printed for the source and the target match `sigil store verify`,
the source is not changed, a non-empty target is refused, the password is never printed; then the agent
that joined the SQLite broker keeps renewing against two brokers on PostgreSQL without joining again."""
import hashlib
import re
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.x509.oid import NameOID
from sigil_harness import Broker, Postgres, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
from agent_harness import Agent, read_identity, setup_broker, write_config  # noqa: E402


def run(sigil_bin, *args, env=None):
    return subprocess.run([sigil_bin, *args], capture_output=True, text=True, timeout=120, env=env)


def counts(text: str, prefix: str) -> str:
    """The `table=N` figures of the output line starting with `prefix`, without the checks."""
    for line in text.splitlines():
        if line.startswith(prefix):
            return " ".join(re.findall(r"\b[a-z_]+=\d+", line))
    raise AssertionError(f"no line starting with {prefix!r} in:\n{text}")


def generation(identity_file) -> int:
    """The bot identity generation: the certificate's subject serialNumber."""
    cert = read_identity(identity_file)
    return int(cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def populated_sqlite_broker(sigil_bin, tmp_path, also: str | None = None):
    """A dev broker with resources, a joined agent writing its identity (configured with the broker
    address `also` after the broker's, if given), and audit events; returns (broker, agent, identity
    output path). The broker still runs, so does the agent."""
    b = Broker(sigil_bin, tmp_path / "data").start()
    token = setup_broker(b, tmp_path)
    ident = tmp_path / "out" / "identity"
    cfg = write_config(tmp_path / "agent.yaml", b, tmp_path / "state", token,
                       "identity_ttl: 30s\nretry: {initial: 200ms, max: 1s}\n"
                       f"outputs:\n  - type: identity\n    path: {ident}\n")
    if also:
        cfg.write_text(cfg.read_text().replace(f"broker: {b.addr}\n", f"broker: [{b.addr}, {also}]\n"))
    a = Agent(sigil_bin, cfg, tmp_path / "agent.log").start()
    a.wait_for(lambda: ident.exists() and generation(ident) >= 1, "the agent joined and wrote its identity")
    extra = tmp_path / "extra.yaml"
    extra.write_text("\n---\n".join(f"kind: role\nname: extra{i}\nallow: {{spiffe_ids: [/x/{i}], audiences: [a]}}" for i in range(5)))
    b.sigil("apply", "-f", str(extra))
    return b, a, ident


def test_migrate_copies_a_populated_sqlite_store_and_refuses_a_non_empty_target(sigil_bin, tmp_path):
    pg = Postgres()
    b, a = None, None
    try:
        b, a, _ = populated_sqlite_broker(sigil_bin, tmp_path)
        b.stop()
        db = tmp_path / "data" / "sigil.db"
        before = [digest(db), digest(tmp_path / "data" / "sigil.db-wal")]
        verified = run(sigil_bin, "store", "verify", str(db))
        assert verified.returncode == 0, verified.stderr
        want = counts(verified.stdout, str(db))
        assert "bot_instances=" in want and "audit_events=0" not in want, want

        secret = "pw-NEVER-PRINTED-7781"
        url = pg.url.replace("postgres@", f"postgres:{secret}@")
        p = run(sigil_bin, "store", "migrate", "--from", f"sqlite:{tmp_path / 'data'}", "--to", url)
        print(p.stdout)
        assert p.returncode == 0, p.stderr
        assert secret not in p.stdout + p.stderr
        assert counts(p.stdout, "source ") == want
        assert counts(p.stdout, "target ") == want
        assert "verified" in p.stdout
        assert [digest(db), digest(tmp_path / "data" / "sigil.db-wal")] == before, "the source is not changed"

        # Again into the same database: refused, nothing changes, the password stays unprinted.
        again = run(sigil_bin, "store", "migrate", "--from", f"sqlite:{db}", "--to", url)
        assert again.returncode != 0
        assert "not empty" in again.stderr and "--replace" in again.stderr, again.stderr
        assert secret not in again.stdout + again.stderr
        replaced = run(sigil_bin, "store", "migrate", "--from", f"sqlite:{db}", "--to", url, "--replace")
        assert replaced.returncode == 0, replaced.stderr
        assert counts(replaced.stdout, "target ") == want
    finally:
        if a:
            a.stop()
        if b:
            b.stop()
        pg.stop()



def test_after_migrate_the_agent_keeps_renewing_against_the_postgres_brokers_without_rejoining(sigil_bin, tmp_path):
    pg = Postgres()
    b, a, b2, b3 = None, None, None, None
    try:
        # The agent knows two addresses: the SQLite broker's, and one where the second replica will be.
        port_b = free_port()
        b, a, ident = populated_sqlite_broker(sigil_bin, tmp_path, also=f"127.0.0.1:{port_b}")
        resources = {k: b.sigil_json(k, "list") for k in ("role", "bot", "workload-identity")}
        audit_before = b.sigil_json("audit", "--limit", "100000")
        b.stop()
        gen_before = generation(ident)
        p = run(sigil_bin, "store", "migrate", "--from", f"sqlite:{tmp_path / 'data'}", "--to", pg.url)
        print(p.stdout)
        assert p.returncode == 0, p.stderr
        assert counts(p.stdout, "source ") == counts(p.stdout, "target ")

        # Two PostgreSQL brokers: the same seal key (moved out of dev mode's data dir), each its own data dir;
        # the first on the SQLite broker's address.
        seal = tmp_path / "seal.key"
        seal.write_bytes((tmp_path / "data" / "seal.key").read_bytes())
        seal.chmod(0o600)

        def pg_broker(name, port):
            cfg = tmp_path / f"{name}.yaml"
            cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {tmp_path / name}\n"
                           f"seal_key_file: {seal}\nstore: {pg.url}\n")
            return Broker(sigil_bin, tmp_path / name, port=port, config=cfg).start()

        b2 = pg_broker("data-pg-a", b.port)
        b3 = pg_broker("data-pg-b", port_b)
        dev_admin = b2.sigil("role", "list", identity=str(tmp_path / "data" / "admin.identity"), check=False)
        assert dev_admin.returncode != 0, "the week-long dev admin identity does not survive the move"
        # The same internal CA (sealed in the store): the agent's ca_file still verifies the brokers.
        for d in ("data-pg-a", "data-pg-b"):
            assert (tmp_path / d / "tls-ca.pem").read_bytes() == (tmp_path / "data" / "tls-ca.pem").read_bytes()

        # Renew now (SIGUSR1) against the first, then with the first gone, against the second:
        # the generation goes on from where it was, no join.
        a.signal(signal.SIGUSR1)
        a.wait_for(lambda: generation(ident) >= gen_before + 1, "renewal against the first PostgreSQL broker", timeout=60)
        b2.stop()
        a.signal(signal.SIGUSR1)
        a.wait_for(lambda: generation(ident) >= gen_before + 2, "renewal against the second PostgreSQL broker", timeout=60)
        assert "joining again" not in a.log.read_text(), "the agent did not join again"
        assert {k: b3.sigil_json(k, "list") for k in ("role", "bot", "workload-identity")} == resources
        audit_after = b3.sigil_json("audit", "--limit", "100000")
        assert audit_after[: len(audit_before)] == audit_before, "every audit event is there, with its id"
        assert audit_after[-1]["id"] > audit_before[-1]["id"], "ids continue"
        since = audit_after[len(audit_before):]
        renewals = [e for e in since if e["kind"] == "identity.renew" and e["outcome"] == "ok"]
        assert len(renewals) >= 2, [(e["kind"], e["outcome"]) for e in since]
        assert not [e for e in since if e["kind"] == "join"], "no join on the PostgreSQL brokers"
        print(f"generation {gen_before} -> {generation(ident)}; audit {len(audit_before)} -> {len(audit_after)}; "
              f"renewals on PostgreSQL {len(renewals)}")
    finally:
        if a:
            a.stop()
        for x in (b, b2, b3):
            if x:
                x.stop()
        pg.stop()
