"""The AWS shared credentials file `sigil federation aws assume-role --credentials-file` and
`sigil aws credential-process --credentials-file` merge one profile into, with something
already planted at the path (docs/security.md, "Hardening pass (issue 13)"): a symlink to
another file is refused, never read (merging would copy that file into this one) nor
written through; a file left readable by everyone comes out a regular 0600 file with its
other profiles kept."""
import pytest
from plants import PLANTS, assert_read_back_verdict, assert_victim_untouched, plant, victim_file

from test_roles_anywhere import credential_process_line, ra_endpoint, ra_svid  # noqa: F401 (fixtures)

VICTIM_TEXT = "[theirs]\naws_access_key_id = THEIRS\n"
LOOSE_TEXT = "[default]\naws_access_key_id = KEEP\n"


def plant_credentials(tmp_path, how):
    victim = victim_file(tmp_path, text=VICTIM_TEXT)
    creds = tmp_path / "credentials"
    plant(creds, how, victim, LOOSE_TEXT)
    return creds, victim


def check(p, creds, victim, how, profile):
    assert_victim_untouched(victim, VICTIM_TEXT)
    assert_read_back_verdict(p, creds, how, "the credentials file was read through a planted link")
    if how != "symlink":
        text = creds.read_text()
        assert LOOSE_TEXT in text and f"[{profile}]" in text, text


@pytest.mark.parametrize("how", PLANTS)
def test_a_planted_symlink_at_the_assume_role_credentials_file_is_refused_and_a_loose_one_rewritten_private(
        broker, sts, verifier, clean_aws_env, tmp_path, how):
    creds, victim = plant_credentials(tmp_path, how)
    p = broker.sigil("federation", "aws", "assume-role", "--spiffe-id", "spiffe://sigil.local/ci/deploy",
                     "--role-arn", "arn:aws:iam::123456789012:role/sigil-ci", "--endpoint", sts.url + "/",
                     "--credentials-file", str(creds), "--profile", "sigil", check=False)
    check(p, creds, victim, how, "sigil")


@pytest.mark.parametrize("how", PLANTS)
def test_a_planted_symlink_at_the_credential_process_credentials_file_is_refused_and_a_loose_one_rewritten_private(
        broker, ra_svid, ra_endpoint, pki, tmp_path, how):  # noqa: F811
    creds, victim = plant_credentials(tmp_path, how)
    line = credential_process_line(broker, ra_svid, ra_endpoint, pki).split(" ")[1:]
    p = broker.sigil(*line, "--credentials-file", str(creds), "--profile", "ra", check=False)
    check(p, creds, victim, how, "ra")
