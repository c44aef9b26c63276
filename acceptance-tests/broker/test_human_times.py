"""Human (text) output shows times as RFC 3339; `--output json` keeps Unix seconds.

Each human time must parse as RFC 3339 (UTC) and name the same second as the
JSON output of the same object.
"""
import json
import re
from datetime import datetime, timezone

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def seconds(text: str) -> int:
    """The Unix seconds of an RFC 3339 UTC time; fails on anything else (a raw number included)."""
    assert RFC3339_UTC.fullmatch(text), f"not an RFC 3339 UTC time: {text!r}"
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert t.tzinfo == timezone.utc
    return int(t.timestamp())


def expires_at_in(line: str) -> str:
    m = re.search(r"expires at ([^\s);]+)", line)
    assert m, f"no 'expires at' in {line!r}"
    return m.group(1)


def test_human_output_shows_rfc3339_times_equal_to_json_seconds(broker, tmp_path):
    created = broker.sigil("token", "create", "--bot", "admin", "--name", "times", "--ttl", "2h")
    as_json = broker.sigil_json("token", "get", "times")["expires_at"]
    assert isinstance(as_json, int)
    assert seconds(expires_at_in(created.stderr)) == as_json

    # `token get`: YAML for a reader, the expiry as RFC 3339.
    got = dict(line.split(": ", 1) for line in broker.sigil("token", "get", "times").stdout.splitlines() if ": " in line)
    assert seconds(got["expires_at"]) == as_json

    who = broker.sigil("whoami").stdout
    assert seconds(expires_at_in(who)) == broker.sigil_json("whoami")["expires_at"]

    x509 = broker.sigil("svid", "x509", "--spiffe-id", "spiffe://sigil.local/times", "--out", str(tmp_path / "svid"))
    seconds(expires_at_in(x509.stderr))

    # The audit log: one JSON object per line, `time` as RFC 3339 in text, seconds in JSON.
    text_rows = [json.loads(l) for l in broker.sigil("audit", "--limit", "1000").stdout.splitlines()]
    json_rows = broker.sigil_json("audit", "--limit", "1000")
    assert text_rows and len(text_rows) == len(json_rows)
    for t, j in zip(text_rows, json_rows):
        assert t["id"] == j["id"] and isinstance(j["time"], int)
        assert seconds(t["time"]) == j["time"]
