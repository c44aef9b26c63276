"""JWT-SVIDs verified with PyJWT using only keys fetched from the discovery
document's jwks_uri."""
import json

import jwt
import pytest
import requests


def discover(broker):
    d = requests.get(f"{broker.url}/.well-known/openid-configuration", verify=broker.ca, timeout=10)
    d.raise_for_status()
    return d.json()


def test_discovery_document_matches_the_issuer(broker):
    doc = discover(broker)
    assert doc["issuer"] == broker.url
    assert doc["jwks_uri"].startswith(broker.url + "/")
    assert doc["response_types_supported"] == ["id_token"]
    assert doc["subject_types_supported"] == ["public"]
    assert "RS256" in doc["id_token_signing_alg_values_supported"]
    keys = requests.get(doc["jwks_uri"], verify=broker.ca, timeout=10).json()["keys"]
    assert keys and all(k["use"] == "sig" and k["kid"] and k["alg"] == "RS256" for k in keys)


def test_jwt_svid_verifies_with_pyjwt_from_jwks_uri(broker):
    spiffe_id = "spiffe://sigil.local/ci/deploy"
    token = broker.sigil("svid", "jwt", "--spiffe-id", spiffe_id, "--audience", "sts.amazonaws.com").stdout.strip()
    doc = discover(broker)
    jwks = requests.get(doc["jwks_uri"], verify=broker.ca, timeout=10).json()
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "JWT"
    matching = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert len(matching) == 1, "kid must name exactly one published key"
    key = jwt.PyJWK(matching[0])
    claims = jwt.decode(
        token,
        key=key,
        algorithms=[matching[0]["alg"]],
        audience="sts.amazonaws.com",
        issuer=doc["issuer"],
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
    )
    assert claims["sub"] == spiffe_id
    assert claims["iss"] == broker.url
    assert 0 < claims["exp"] - claims["iat"] <= 300  # default JWT-SVID TTL 5m
    # A wrong audience is refused by the independent verifier.
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key=key, algorithms=["RS256"], audience="someone-else", issuer=doc["issuer"])


def test_jwt_ids_are_unique(broker):
    t1 = broker.sigil("svid", "jwt", "--spiffe-id", "spiffe://sigil.local/a", "--audience", "x").stdout.strip()
    t2 = broker.sigil("svid", "jwt", "--spiffe-id", "spiffe://sigil.local/a", "--audience", "x").stdout.strip()
    j1 = jwt.decode(t1, options={"verify_signature": False})
    j2 = jwt.decode(t2, options={"verify_signature": False})
    assert j1["jti"] != j2["jti"]


def test_spiffe_bundle_endpoint_serves_x509_and_jwt_keys(broker):
    b = requests.get(f"{broker.url}/.well-known/spiffe-bundle", verify=broker.ca, timeout=10).json()
    uses = sorted(k["use"] for k in b["keys"])
    assert uses == ["jwt-svid", "x509-svid"]
    assert b["spiffe_refresh_hint"] > 0 and "spiffe_sequence" in b
    x = next(k for k in b["keys"] if k["use"] == "x509-svid")
    assert x["x5c"] and x["kty"] == "EC"
    j = next(k for k in b["keys"] if k["use"] == "jwt-svid")
    assert j["kid"]
