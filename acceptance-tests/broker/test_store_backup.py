"""`sigil store backup|restore|verify` for the embedded SQLite store (docs/reference/server.md,
"Backup and restore"): a backup taken while the broker serves restores into a broker that
keeps every resource, audit event and CA key, so identities issued before still work; a
damaged backup is refused and changes nothing."""
import os
import stat
import subprocess

from sigil_harness import ROOT, Broker


def sigil(sigil_bin, *args, check=True):
    p = subprocess.run([sigil_bin, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_a_live_backup_restores_resources_audit_and_keys_so_old_identities_still_work(sigil_bin, tmp_path):
    data = tmp_path / "data"
    b = Broker(sigil_bin, data)
    b.start()
    try:
        b.sigil("apply", "-f", str(ROOT / "examples" / "broker" / "ci-bot.yaml"))
        secret = b.sigil("token", "create", "--bot", "ci", "--ttl", "15m").stdout.strip()
        ident = tmp_path / "ci.identity"
        b.sigil("join", "--token", secret, "--ca-file", b.ca, "--out", str(ident))
        before = {k: b.sigil_json(k, "list") for k in ("role", "bot", "workload-identity")}
        audit_before = b.sigil_json("audit")
        backup = tmp_path / "backup.db"
        out = sigil(sigil_bin, "store", "backup", "--data-dir", str(data), "--out", str(backup)).stdout
        assert "audit_events=" in out and "ca_keys=" in out, out
        st = os.lstat(backup)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        again = sigil(sigil_bin, "store", "backup", "--data-dir", str(data), "--out", str(backup), check=False)
        assert again.returncode != 0 and "exists" in again.stderr, again.stderr
    finally:
        b.stop()

    # Lose the database (not the seal key), then restore.
    for name in ("sigil.db", "sigil.db-wal", "sigil.db-shm"):
        if (data / name).exists():
            (data / name).unlink()
    sigil(sigil_bin, "store", "restore", "--from", str(backup), "--data-dir", str(data))
    b2 = Broker(sigil_bin, data, port=b.port)
    b2.start()
    try:
        assert {k: b2.sigil_json(k, "list") for k in ("role", "bot", "workload-identity")} == before
        assert b2.sigil_json("audit")[: len(audit_before)] == audit_before
        # The identity issued before the backup still authenticates: same CA keys.
        who = b2.sigil("whoami", identity=str(ident)).stdout
        assert "ci" in who, who
        tok = b2.sigil("svid", "jwt", "--spiffe-id", "spiffe://sigil.local/ci/ci/deploy", "--audience", "sts.amazonaws.com",
                       identity=str(ident)).stdout.strip()
        assert tok.count(".") == 2
    finally:
        b2.stop()


def test_a_damaged_backup_is_refused_and_the_store_is_left_as_it_was(sigil_bin, tmp_path):
    data = tmp_path / "data"
    b = Broker(sigil_bin, data)
    b.start()
    b.stop()
    backup = tmp_path / "backup.db"
    sigil(sigil_bin, "store", "backup", "--data-dir", str(data), "--out", str(backup))
    damaged = tmp_path / "damaged.db"
    raw = backup.read_bytes()
    damaged.write_bytes(raw[: len(raw) // 2])
    db_before = (data / "sigil.db").read_bytes()
    p = sigil(sigil_bin, "store", "restore", "--from", str(damaged), "--data-dir", str(data), "--force", check=False)
    assert p.returncode != 0 and "not a usable Sigil store" in p.stderr, p.stderr
    assert (data / "sigil.db").read_bytes() == db_before
    assert sigil(sigil_bin, "store", "verify", str(damaged), check=False).returncode != 0
    p = sigil(sigil_bin, "store", "restore", "--from", str(backup), "--data-dir", str(data), check=False)
    assert p.returncode != 0 and "--force" in p.stderr, p.stderr
    sigil(sigil_bin, "store", "restore", "--from", str(backup), "--data-dir", str(data), "--force")
    assert any(n.startswith("sigil.db.before-restore-") for n in os.listdir(data))
    assert "ok" in sigil(sigil_bin, "store", "verify", str(data / "sigil.db")).stdout
