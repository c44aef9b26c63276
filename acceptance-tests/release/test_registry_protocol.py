"""The registry's files as a registry host serves them: Terraform 1.0.3 installs the
release through the provider registry protocol (service discovery, versions, download),
checking the zip against SHA256SUMS and SHA256SUMS against its GPG signature with the
public key the registry hands out, the way registry.terraform.io or a private registry
delivers a release uploaded with these files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from release_harness import MANIFEST, SOURCE, SUMS, VERSION, ZIP, HttpsMirror, Terraform, lock_hashes


def registry_tree(dist: Path, root: Path, public_key: str, key_id: str) -> Path:
    """Static documents of the provider registry protocol, built from the release's files."""
    protocols = json.loads((dist / MANIFEST).read_text())["metadata"]["protocol_versions"]
    shasum = next(line.split()[0] for line in (dist / SUMS).read_text().splitlines() if line.split()[1] == ZIP)
    files = root / "files"
    files.mkdir(parents=True)
    for name in (ZIP, SUMS, SUMS + ".sig"):
        shutil.copy(dist / name, files / name)
    api = root / "v1" / "providers" / "sigil" / "sigil"
    (root / ".well-known").mkdir()
    (root / ".well-known" / "terraform.json").write_text(json.dumps({"providers.v1": "/v1/providers/"}))
    api.mkdir(parents=True)
    (api / "versions").write_text(json.dumps({"versions": [
        {"version": VERSION, "protocols": protocols, "platforms": [{"os": "linux", "arch": "amd64"}]}]}))
    download = api / VERSION / "download" / "linux"
    download.mkdir(parents=True)
    (download / "amd64").write_text(json.dumps({
        "protocols": protocols, "os": "linux", "arch": "amd64", "filename": ZIP,
        "download_url": f"/files/{ZIP}", "shasums_url": f"/files/{SUMS}",
        "shasums_signature_url": f"/files/{SUMS}.sig", "shasum": shasum,
        "signing_keys": {"gpg_public_keys": [{"key_id": key_id, "ascii_armor": public_key}]},
    }))
    return root


def registry_terraform(tmp_path: Path, label: str, registry: HttpsMirror, ca) -> Terraform:
    host = f"localhost:{registry.port}"
    tf = Terraform(tmp_path / label, f'  direct {{\n    include = ["{host}/*/*"]\n  }}\n', {"SSL_CERT_FILE": str(ca.ca)})
    tf.source = f"{host}/sigil/sigil"
    tf.write("")
    return tf


def test_terraform_installs_the_release_from_a_registry_and_verifies_its_gpg_signed_checksums(
        dist, gpg, loopback_ca, tmp_path):
    key_id = gpg.fingerprint[-16:]
    public_key = gpg.run("--armor", "--export", gpg.fingerprint).stdout
    root = registry_tree(dist, tmp_path / "registry", public_key, key_id)
    with HttpsMirror(root, loopback_ca, host="localhost") as registry:
        tf = registry_terraform(tmp_path, "tf", registry, loopback_ca)
        init = tf.run("init")
    out = " ".join(init.stdout.split())
    assert f"(self-signed, key ID {key_id})" in out, out
    # From a registry, Terraform 1.0.3 locks the h1: it computes and a zh: for every line of
    # the signed SHA256SUMS (the manifest's line too: its name has the provider's prefix).
    listed = {"zh:" + line.split()[0] for line in (dist / SUMS).read_text().splitlines()}
    published_h1 = {h for h in json.loads((dist / "mirror" / SOURCE / f"{VERSION}.json").read_text())
                    ["archives"]["linux_amd64"]["hashes"] if h.startswith("h1:")}
    assert lock_hashes(tf.lock()) == listed | published_h1, tf.lock()


def test_terraform_refuses_a_registry_release_whose_checksums_do_not_match_the_signature(
        dist, gpg, loopback_ca, tmp_path):
    key_id = gpg.fingerprint[-16:]
    public_key = gpg.run("--armor", "--export", gpg.fingerprint).stdout
    root = registry_tree(dist, tmp_path / "registry", public_key, key_id)
    sums = root / "files" / SUMS
    lines = sums.read_text().splitlines(keepends=True)
    # Alter only the manifest's line: the zip still matches its checksum, the signature no longer does.
    sums.write_text("".join(("0" * 64 + line[64:]) if MANIFEST in line else line for line in lines))
    with HttpsMirror(root, loopback_ca, host="localhost") as registry:
        tf = registry_terraform(tmp_path, "tf", registry, loopback_ca)
        init = tf.run("init", check=False)
    assert init.returncode != 0, init.stdout
    out = " ".join((init.stdout + init.stderr).split())
    assert "error checking signature" in out, out
    assert not list((tf.dir / ".terraform").rglob("terraform-provider-sigil_v*")), "installed despite a bad signature"
