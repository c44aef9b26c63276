"""Recovering an EC2 instance bound to a lost bot instance: `sigil bot binding`.

An agent's state dir is wiped (or its identity expired while the instance was
stopped): its instance is still bound to the old bot instance, so the `ec2` join
refuses it. An admin lists the binding and releases it; the instance joins again
without `allow_rejoin` on the join token. Reuses the signer, IMDS stand-in and
agent helpers of test_ec2_join.py (the document signed by a test key, checked by
openssl there first).

Proves: the wiped agent's rejoin is refused; `sigil bot binding list` shows the
binding (method, ACCOUNT:INSTANCE subject, bot, bot instance id); a bot without
`delete` on `bot_instance` cannot release it (PermissionDenied, audited); the
admin's release is audited (actor, binding, old bot instance) and the rejoin
succeeds, binding the instance to the new bot instance; the old bot instance is
left as it is.
"""
import json

from imds_standin import Imds
from sigil_harness import JOIN_REFUSED
from test_ec2_join import ACCOUNT, _agent, _apply, _claims, _document, _join_cli, signer  # noqa: F401 (signer: the fixture)

INSTANCE = "i-0b1b1b1b1b1b1b1b1"


def _audit(broker):
    events, after = [], 0
    while True:
        page = broker.sigil_json("audit", "--after", str(after), "--limit", "1000")
        if not page:
            return events
        after = page[-1]["id"]
        events.extend(page)


def test_an_admin_releases_the_binding_of_a_wiped_agent_and_it_joins_again_and_a_plain_bot_cannot(broker, signer, tmp_path):
    _apply(broker, tmp_path, signer)
    admin = broker.sigil_json("whoami")["bot"]
    doc = _document(INSTANCE)
    imds = Imds(document=doc, rsa2048=signer.sign(doc))
    other_doc = _document("i-0b2b2b2b2b2b2b2b2")
    other = Imds(document=other_doc, rsa2048=signer.sign(other_doc))
    try:
        p, _, _ = _agent(broker, tmp_path, imds, "first")
        assert p.returncode == 0, p.stderr
        [old] = broker.sigil_json("bot", "instance", "list", "--bot", "fleet")

        # The state dir is gone (a new one): the instance's second join is refused.
        p, _, _ = _agent(broker, tmp_path, imds, "wiped")
        assert p.returncode != 0 and JOIN_REFUSED in p.stderr, p.stderr

        subject = f"{ACCOUNT}:{INSTANCE}"
        listed = broker.sigil_json("bot", "binding", "list", "--bot", "fleet")
        assert [(b["method"], b["subject"], b["bot"], b["bot_instance"]) for b in listed] == [("ec2", subject, "fleet", old["id"])], listed
        assert broker.sigil_json("bot", "binding", "list", "--method", "ec2") == listed
        assert broker.sigil_json("bot", "binding", "list", "--bot", "nobody") == []
        text = broker.sigil("bot", "binding", "list").stdout
        assert subject in text and old["id"] in text, text

        # A bot with no admin rules (the fleet's own identity, joined from another instance) cannot release it.
        p, fleet_identity = _join_cli(broker, tmp_path, other, "plain")
        assert p.returncode == 0, p.stderr
        refused = broker.sigil("bot", "binding", "release", "--method", "ec2", "--subject", subject, identity=str(fleet_identity), check=False)
        assert refused.returncode != 0 and "PermissionDenied" in refused.stderr and "bot_instance" in refused.stderr, refused.stderr
        refused = broker.sigil("bot", "binding", "list", identity=str(fleet_identity), check=False)
        assert refused.returncode != 0 and "PermissionDenied" in refused.stderr, refused.stderr
        assert [b["subject"] for b in broker.sigil_json("bot", "binding", "list", "--bot", "fleet")].count(subject) == 1

        # Bad input names the culprit.
        bad = broker.sigil("bot", "binding", "release", "--method", "ec3", "--subject", subject, check=False)
        assert bad.returncode != 0 and "method" in bad.stderr, bad.stderr

        released = broker.sigil_json("bot", "binding", "release", "--method", "ec2", "--subject", subject)
        assert (released["subject"], released["bot_instance"]) == (subject, old["id"]), released
        again = broker.sigil("bot", "binding", "release", "--method", "ec2", "--subject", subject, check=False)
        assert again.returncode != 0 and "NotFound" in again.stderr, again.stderr

        # The instance joins again, with the same join token (no allow_rejoin), as a new bot instance.
        p, svid, want = _agent(broker, tmp_path, imds, "after-release")
        assert p.returncode == 0, p.stderr
        assert _claims(broker, svid.read_text())["sub"] == want
        instances = {i["id"]: i for i in broker.sigil_json("bot", "instance", "list", "--bot", "fleet")}
        assert old["id"] in instances and not instances[old["id"]]["locked"], "the release leaves the old bot instance as it is"
        [rebound] = [b for b in broker.sigil_json("bot", "binding", "list", "--method", "ec2") if b["subject"] == subject]
        assert rebound["bot_instance"] in instances and rebound["bot_instance"] != old["id"], rebound

        events = _audit(broker)
        key = f"ec2:{subject}"
        ok = [e for e in events if e["kind"] == "instance_binding.release" and e["outcome"] == "ok"]
        assert len(ok) == 1 and ok[0]["actor"] == admin and ok[0]["resource"] == key, ok
        assert (ok[0]["detail"]["bot"], ok[0]["detail"]["bot_instance"]) == ("fleet", old["id"]), ok
        denied = [e for e in events if e["kind"] == "instance_binding.release" and e["outcome"] == "denied"]
        assert [(e["actor"], e["resource"]) for e in denied] == [("fleet", key)], denied
    finally:
        imds.close()
        other.close()
