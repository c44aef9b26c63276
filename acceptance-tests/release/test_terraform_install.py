"""Terraform 1.0.3 installs the released provider from the mirror tree scripts/release.sh
writes, through `provider_installation` alone (no dev_overrides), checks the published
hashes itself, and the installed provider then applies against a real broker."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from release_harness import (MIRROR_DIR, SOURCE, VERSION, ZIP, HttpsMirror, Terraform, filesystem_mirror,
                             lock_hashes, network_mirror)


def published_hashes(dist: Path) -> set[str]:
    doc = json.loads((dist / MIRROR_DIR / f"{VERSION}.json").read_text())
    return set(doc["archives"]["linux_amd64"]["hashes"])


def role_config(broker, name: str) -> str:
    return f'''
provider "sigil" {{
  addr          = "{broker.addr}"
  identity_file = "{broker.data_dir / "admin.identity"}"
}}

resource "sigil_role" "r" {{
  name        = "{name}"
  description = "installed from a mirror"
  rule {{
    resources = ["bot"]
    verbs     = ["read"]
  }}
}}
'''


def apply_creates_role(tf: Terraform, broker, name: str) -> None:
    tf.write(role_config(broker, name))
    tf.run("apply", "-auto-approve")
    assert broker.sigil_json("role", "get", name)["description"] == "installed from a mirror"


def tampered_mirror(dist: Path, dest: Path) -> Path:
    """A copy of the mirror tree whose zip is another valid provider zip (same names,
    different binary) while index.json and VERSION.json still list the real hashes."""
    shutil.copytree(dist / "mirror", dest)
    archive = dest / SOURCE / ZIP
    with zipfile.ZipFile(dist / ZIP) as z:
        (name,) = z.namelist()
        body = z.read(name)
    archive.unlink()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr(name, body + b"\0appended by an attacker")
    return dest


def test_init_from_a_filesystem_mirror_locks_the_published_h1_hash_and_apply_works(dist, release_broker, tmp_path):
    tf = Terraform(tmp_path / "tf", filesystem_mirror(dist / "mirror"))
    tf.write("")
    init = tf.run("init")
    # Nothing to check a first install from a filesystem mirror against: Terraform says so.
    assert f"Installed {SOURCE} v{VERSION} (unauthenticated)" in init.stdout, init.stdout
    # Terraform 1.0.3 locks the h1: hash it computes itself from the mirror's zip: it must be
    # the one the release published.
    published_h1 = {h for h in published_hashes(dist) if h.startswith("h1:")}
    assert lock_hashes(tf.lock()) == published_h1, tf.lock()
    apply_creates_role(tf, release_broker, "fs-mirror-role")


def test_init_from_a_loopback_https_network_mirror_locks_the_published_hashes_and_apply_works(
        dist, loopback_ca, release_broker, tmp_path):
    with HttpsMirror(dist / "mirror", loopback_ca) as mirror:
        tf = Terraform(tmp_path / "tf", network_mirror(mirror.url), {"SSL_CERT_FILE": str(loopback_ca.ca)})
        tf.write("")
        init = tf.run("init")
    assert f"Installed {SOURCE} v{VERSION} (verified checksum)" in init.stdout, init.stdout
    assert f"/{SOURCE}/{ZIP}" in mirror.requested, mirror.requested
    # Terraform 1.0.3 checks the zip against VERSION.json's hashes but locks only the h1:
    # hash it computes itself (zh: hashes are locked only from a registry's signed SHA256SUMS).
    assert lock_hashes(tf.lock()) == {h for h in published_hashes(dist) if h.startswith("h1:")}, tf.lock()
    apply_creates_role(tf, release_broker, "net-mirror-role")


def test_a_network_mirror_serving_a_zip_that_does_not_match_its_published_hashes_is_refused(
        dist, loopback_ca, tmp_path):
    root = tampered_mirror(dist, tmp_path / "mirror")
    with HttpsMirror(root, loopback_ca) as mirror:
        tf = Terraform(tmp_path / "tf", network_mirror(mirror.url), {"SSL_CERT_FILE": str(loopback_ca.ca)})
        tf.write("")
        init = tf.run("init", check=False)
    assert init.returncode != 0, init.stdout
    assert f"/{SOURCE}/{ZIP}" in mirror.requested, "Terraform never fetched the zip"
    out = " ".join((init.stdout + init.stderr).split())
    assert "provider package doesn't match the any of the expected checksums" in out, out  # sic, Terraform 1.0.3
    installed = list((tf.dir / ".terraform").rglob("terraform-provider-sigil_v*"))
    assert not installed, f"the tampered provider was installed: {installed}"


def test_terraform_accepts_the_published_zh_hash_alone_and_refuses_a_wrong_one(dist, loopback_ca, tmp_path):
    root = tmp_path / "mirror"
    shutil.copytree(dist / "mirror", root)
    doc_path = root / SOURCE / f"{VERSION}.json"
    doc = json.loads(doc_path.read_text())
    (zh,) = [h for h in doc["archives"]["linux_amd64"]["hashes"] if h.startswith("zh:")]
    outcomes = {}
    for label, hashes in (("published", [zh]), ("wrong", ["zh:" + "0" * 64])):
        doc["archives"]["linux_amd64"]["hashes"] = hashes
        doc_path.write_text(json.dumps(doc))
        with HttpsMirror(root, loopback_ca) as mirror:
            tf = Terraform(tmp_path / label, network_mirror(mirror.url), {"SSL_CERT_FILE": str(loopback_ca.ca)})
            tf.write("")
            outcomes[label] = tf.run("init", check=False)
    assert outcomes["published"].returncode == 0, outcomes["published"].stdout + outcomes["published"].stderr
    assert outcomes["wrong"].returncode != 0, outcomes["wrong"].stdout
    wrong = " ".join((outcomes["wrong"].stdout + outcomes["wrong"].stderr).split())
    assert f"doesn't match the expected checksum \"zh:{'0' * 64}\"" in wrong, wrong


def test_a_filesystem_mirror_zip_that_does_not_match_the_lock_file_is_refused(dist, tmp_path):
    root = tampered_mirror(dist, tmp_path / "mirror")
    tf = Terraform(tmp_path / "tf", filesystem_mirror(root))
    tf.write("")
    hashes = "".join(f'    "{h}",\n' for h in sorted(published_hashes(dist)))
    (tf.dir / ".terraform.lock.hcl").write_text(
        f'provider "{SOURCE}" {{\n  version = "{VERSION}"\n  hashes = [\n{hashes}  ]\n}}\n')
    init = tf.run("init", check=False)
    assert init.returncode != 0, init.stdout
    out = " ".join((init.stdout + init.stderr).split())
    assert "doesn't match any of the checksums previously recorded in the dependency lock file" in out, out
