"""`sigil store migrate --from sqlite:PATH --to postgres://...` (docs/reference/server.md, "Moving to
PostgreSQL"): a populated single-node broker's store is copied into a real PostgreSQL 15 (started here,
loopback, user postgres), the counts printed for the source and the target match `sigil store verify`,
the source is not changed, a non-empty target is refused, the password is never printed."""
import hashlib
import re
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.x509.oid import NameOID
from sigil_harness import Broker, Postgres

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


def populated_sqlite_broker(sigil_bin, tmp_path):
    """A dev broker with resources, a joined agent writing its identity, and audit events; returns
    (broker, agent, identity output path). The broker is stopped, the agent still runs."""
    b = Broker(sigil_bin, tmp_path / "data").start()
    token = setup_broker(b, tmp_path)
    ident = tmp_path / "out" / "identity"
    cfg = write_config(tmp_path / "agent.yaml", b, tmp_path / "state", token,
                       "identity_ttl: 30s\nretry: {initial: 200ms, max: 1s}\n"
                       f"outputs:\n  - type: identity\n    path: {ident}\n")
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

