"""A Workload API client process built on py-spiffe (the PyPI package `spiffe`).

Usage: wl_client.py SOCKET [--as-uid N]

Imports everything first, then (with --as-uid) drops to that uid/gid with no
supplementary groups before it connects, so the agent sees a different peer.
Prints one JSON line: what it fetched, or the error it got.
"""
import json
import os
import sys

import grpc  # noqa: F401 - imported before dropping privileges
from spiffe import WorkloadApiClient
from spiffe.svid.jwt_svid import JwtSvid

sock = sys.argv[1]
if "--as-uid" in sys.argv:
    uid = int(sys.argv[sys.argv.index("--as-uid") + 1])
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)

out = {"uid": os.getuid()}
try:
    with WorkloadApiClient(f"unix://{sock}", default_timeout=20) as c:
        svid = c.fetch_x509_svid()
        out["x509_spiffe_id"] = str(svid.spiffe_id)
        bundles = c.fetch_x509_bundles()
        out["x509_bundle_tds"] = sorted(str(b.trust_domain) for b in bundles.bundles)
        tok = c.fetch_jwt_svid(audience={"sts.amazonaws.com"})
        out["jwt_spiffe_id"] = str(tok.spiffe_id)
        out["validated_by_agent"] = str(c.validate_jwt_svid(tok.token, "sts.amazonaws.com").spiffe_id)
        jb = c.fetch_jwt_bundles().get_bundle_for_trust_domain(tok.spiffe_id.trust_domain)
        out["validated_locally"] = str(JwtSvid.parse_and_validate(tok.token, jb, {"sts.amazonaws.com"}).spiffe_id)
except Exception as e:  # noqa: BLE001 - report any failure to the test
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
