"""`sigil svid revoke --instance` against a running `sigil agent` (issue 15):
the agent's current X.509-SVID and bot identity go on their CAs' CRLs
(openssl refuses the SVID with the served CRL), and the broker refuses the
revoked identity at the agent's next renewal; with its single-use join token
spent, the agent cannot come back."""
from __future__ import annotations

import json
import subprocess
import time

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from agent_harness import Agent, read_cert, read_identity, setup_broker, write_config
from sigil_harness import Broker, free_port, require_tool


def test_revoking_an_instance_revokes_the_agents_svid_and_identity_and_its_renewal_is_refused(sigil_bin, tmp_path):
    openssl = require_tool("openssl", "apt-get install openssl")
    curl = require_tool("curl", "apt-get install curl")
    port = free_port()
    data = tmp_path / "data"
    seal = tmp_path / "seal.key"
    seal.write_text("3b" * 32)
    seal.chmod(0o600)
    cfg = tmp_path / "server.yaml"
    cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {data}\nadmin_identity_ttl: 86400\n"
                   f"seal_key_file: {seal}\nrevocation: {{crl_distribution_points: true}}\n")
    broker = Broker(sigil_bin, data, port=port, config=cfg).start()
    agent = None
    try:
        token = setup_broker(broker, tmp_path, uses=1)
        out = tmp_path / "out"
        c = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token,
                         "identity_ttl: 20s\nretry: {initial: 200ms, max: 1s}\n"
                         f"outputs:\n  - type: identity\n    path: {out}/identity\n"
                         f"  - type: x509-svid\n    dir: {out}/svid\n    spiffe_id: spiffe://sigil.local/svc/app\n    ttl: 10m\n")
        agent = Agent(sigil_bin, c, tmp_path / "agent.log").start()
        agent.wait_for(lambda: (out / "svid" / "svid.pem").exists() and (out / "identity").exists(), "the agent's outputs")
        svid = read_cert(out / "svid" / "svid.pem")
        instances = broker.sigil_json("bot", "instance", "list", "--bot", "node1")
        assert len(instances) == 1, instances
        instance = instances[0]["id"]

        revoked = broker.sigil_json("svid", "revoke", "--instance", instance, "--reason", "keyCompromise")["revoked"]
        assert format(svid.serial_number, "032x") in revoked, revoked
        # The identity the agent holds now (renewed every few seconds: every one issued is revoked).
        identity = read_identity(out / "identity")
        assert format(identity.serial_number, "032x") in revoked, revoked

        # The SVID's CRL (the URL it names), fetched over HTTPS, makes openssl refuse it.
        url = svid.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value[0].full_name[0].value
        der = tmp_path / "crl.der"
        subprocess.run([curl, "-sS", "--fail", "--cacert", broker.ca, "-o", str(der), url], check=True, capture_output=True)
        subprocess.run([openssl, "crl", "-inform", "DER", "-in", str(der), "-out", str(tmp_path / "crl.pem")], check=True)
        (tmp_path / "bundle.pem").write_text(broker.sigil("bundle", "--format", "pem").stdout)
        r = subprocess.run([openssl, "verify", "-crl_check", "-CAfile", str(tmp_path / "bundle.pem"), "-CRLfile", str(tmp_path / "crl.pem"),
                            str(out / "svid" / "svid.pem")], capture_output=True, text=True)
        assert r.returncode != 0 and "certificate revoked" in r.stdout + r.stderr, r.stdout + r.stderr

        # The internal CA's CRL lists the identity.
        index = json.loads(subprocess.run([curl, "-sS", "--fail", "--cacert", broker.ca, f"{broker.url}/crl/index.json"],
                                          check=True, capture_output=True, text=True).stdout)
        internal = next(c for c in index["crls"] if c["purpose"] == "internal")
        pem = subprocess.run([curl, "-sS", "--fail", "--cacert", broker.ca, internal["pem_url"]], check=True, capture_output=True).stdout
        crl = x509.load_pem_x509_crl(pem)
        assert crl.get_revoked_certificate_by_serial_number(identity.serial_number) is not None

        # The agent's next renewal is refused as revoked; its join token is spent, so it stays out.
        agent.wait_for(lambda: "was revoked" in (tmp_path / "agent.log").read_text(), "the broker refusing the revoked identity", timeout=45)
        time.sleep(2)
        assert len(broker.sigil_json("bot", "instance", "list", "--bot", "node1")) == 1, "no second instance: the token is spent"
    finally:
        if agent:
            agent.stop()
        broker.stop()


def test_lock_create_with_revoke_locks_the_instance_and_revokes_what_it_holds(sigil_bin, tmp_path):
    port = free_port()
    data = tmp_path / "data"
    seal = tmp_path / "seal.key"
    seal.write_text("3c" * 32)
    seal.chmod(0o600)
    cfg = tmp_path / "server.yaml"
    cfg.write_text(f"trust_domain: sigil.local\nlisten: 127.0.0.1:{port}\ndata_dir: {data}\nadmin_identity_ttl: 86400\n"
                   f"seal_key_file: {seal}\n")
    broker = Broker(sigil_bin, data, port=port, config=cfg).start()
    agent = None
    try:
        token = setup_broker(broker, tmp_path, uses=1)
        out = tmp_path / "out"
        c = write_config(tmp_path / "agent.yaml", broker, tmp_path / "state", token,
                         "identity_ttl: 1h\nretry: {initial: 200ms, max: 1s}\n"
                         f"outputs:\n  - type: x509-svid\n    dir: {out}/svid\n    spiffe_id: spiffe://sigil.local/svc/app\n    ttl: 10m\n")
        agent = Agent(sigil_bin, c, tmp_path / "agent.log").start()
        agent.wait_for(lambda: (out / "svid" / "svid.pem").exists(), "the agent's SVID")
        svid = read_cert(out / "svid" / "svid.pem")
        instance = broker.sigil_json("bot", "instance", "list", "--bot", "node1")[0]["id"]
        shown = broker.sigil_json("lock", "create", "--instance", instance, "--reason", "stolen laptop", "--revoke",
                                  "--revoke-reason", "keyCompromise")
        assert shown["target"]["bot_instance"] == instance, shown
        assert format(svid.serial_number, "032x") in shown["revoked"], shown
        assert len(shown["revoked"]) == 2, "the SVID and the bot identity"
        # --revoke needs --instance.
        r = broker.sigil("lock", "create", "--bot", "node1", "--revoke", check=False)
        assert r.returncode != 0 and "--instance" in r.stderr, r.stderr
    finally:
        if agent:
            agent.stop()
        broker.stop()
