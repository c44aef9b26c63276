"""A replica added later, in production mode (`sigil server --config`), with a FRESH data directory, against a
PostgreSQL store another replica already serves (docs/reference/server.md, 'Several replicas'): it starts with
the CA kept (sealed) in the store, issues itself an admin identity (a new instance of the shared `admin` bot)
into its own data directory, and every replica's admin identity works on every replica; the earlier
replica's admin identity is not revoked by the newcomer's start."""
from cryptography import x509

from sigil_harness import Broker, Postgres, free_port


def replica(sigil_bin, tmp_path, name: str, pg: Postgres, seal) -> Broker:
    port = free_port()
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {tmp_path / name}\n"
                   f"seal_key_file: {seal}\nstore: {pg.url}\n")
    cfg.chmod(0o600)
    return Broker(sigil_bin, tmp_path / name, port=port, config=cfg).start()


def serial(identity) -> int:
    return x509.load_pem_x509_certificate(identity.read_bytes()).serial_number


def test_a_replica_with_a_fresh_data_dir_serves_with_the_shared_ca_and_every_admin_identity_works_everywhere(sigil_bin, tmp_path):
    pg = Postgres()
    seal = tmp_path / "seal.key"
    seal.write_text("5d" * 32)
    seal.chmod(0o600)
    started = []
    try:
        a = replica(sigil_bin, tmp_path, "a", pg, seal)
        started.append(a)
        (tmp_path / "bot.yaml").write_text("kind: role\nname: r\nallow: {spiffe_ids: [\"/x\"]}\n---\nkind: bot\nname: made-on-a\nroles: [r]\n")
        a.sigil("apply", "-f", str(tmp_path / "bot.yaml"))
        assert not (tmp_path / "b").exists()
        b = replica(sigil_bin, tmp_path, "b", pg, seal)
        started.append(b)

        assert (b.data_dir / "tls-ca.pem").read_text() == (a.data_dir / "tls-ca.pem").read_text(), "one CA, from the store"
        a_id, b_id = a.data_dir / "admin.identity", b.data_dir / "admin.identity"
        assert serial(a_id) != serial(b_id), "B issued its own admin identity"
        for server in (a, b):
            for ident in (a_id, b_id):
                # Both replicas trust the one internal CA: either tls-ca.pem verifies either server.
                who = server.sigil("whoami", identity=str(ident)).stdout
                assert "admin" in who, who
                assert "made-on-a" in server.sigil("bot", "list", identity=str(ident)).stdout
        out = tmp_path / "svid"
        out.mkdir()
        b.sigil("svid", "x509", "--spiffe-id", "spiffe://sigil.local/from-b", "--out", str(out), identity=str(a_id))
        assert (out / "svid.pem").exists()
    finally:
        for r in started:
            r.stop()
        pg.stop()
