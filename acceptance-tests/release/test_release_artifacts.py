"""scripts/release.sh writes the Terraform registry's files: checked with gpg, sha256sum
and unzip's view of the archive, not with our own code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from release_harness import Gpg, MANIFEST, MIRROR_DIR, SUMS, VERSION, ZIP, release
from sigil_harness import ROOT, require_tool


def test_release_writes_registry_files_with_the_binary_named_as_registry_providers_are(dist):
    for name in (ZIP, SUMS, SUMS + ".sig", MANIFEST):
        assert (dist / name).is_file(), f"{name} missing from {sorted(p.name for p in dist.iterdir())}"
    unzip = require_tool("unzip", "apt-get install unzip")
    listing = subprocess.run([unzip, "-Z", "-l", str(dist / ZIP)], capture_output=True, text=True, check=True).stdout
    entries = [line for line in listing.splitlines() if line.startswith(("-", "d", "l"))]
    assert len(entries) == 1, listing
    assert entries[0].startswith("-rwxr-xr-x") and entries[0].endswith(f" terraform-provider-sigil_v{VERSION}"), listing
    # A binary detached signature, as Terraform's registry installer reads it (not ASCII armor).
    assert not (dist / (SUMS + ".sig")).read_bytes().startswith(b"-----BEGIN")
    # SHA256SUMS lists the zip (what the registry reads) and the manifest, as HashiCorp's own releases do.
    listed = sorted(line.split()[1] for line in (dist / SUMS).read_text().splitlines())
    assert listed == sorted([ZIP, MANIFEST])


def test_manifest_lists_the_plugin_protocols_the_provider_source_declares(dist):
    main_rs = (ROOT / "provider" / "src" / "main.rs").read_text()
    declared = re.search(r"const PROTOCOL_VERSIONS: &\[u32\] = &\[([0-9, ]+)\];", main_rs)
    assert declared, "provider/src/main.rs no longer declares PROTOCOL_VERSIONS as the test expects"
    expected = [f"{int(v)}.0" for v in declared.group(1).split(",")]
    assert json.loads((dist / MANIFEST).read_text()) == {"version": 1, "metadata": {"protocol_versions": expected}}


def test_gpg_verify_accepts_the_sums_signature_and_refuses_modified_sums(dist, gpg, tmp_path):
    good = gpg.run("--verify", str(dist / (SUMS + ".sig")), str(dist / SUMS), check=False)
    assert good.returncode == 0, good.stderr
    assert "Good signature" in good.stderr and gpg.fingerprint[-16:] in good.stderr.replace(" ", ""), good.stderr
    text = (dist / SUMS).read_text()
    forged = tmp_path / SUMS
    forged.write_text(("1" if text[0] != "1" else "2") + text[1:])  # one hex digit of the zip's checksum
    bad = gpg.run("--verify", str(dist / (SUMS + ".sig")), str(forged), check=False)
    assert bad.returncode != 0
    assert "BAD signature" in bad.stderr, bad.stderr


def test_sha256sum_check_passes_on_the_release_and_fails_after_the_zip_is_tampered(dist, tmp_path):
    sha256sum = require_tool("sha256sum", "apt-get install coreutils")
    for name in (ZIP, SUMS, MANIFEST):
        shutil.copy(dist / name, tmp_path / name)
    ok = subprocess.run([sha256sum, "-c", SUMS], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{ZIP}: OK" in ok.stdout and f"{MANIFEST}: OK" in ok.stdout
    with open(tmp_path / ZIP, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad = subprocess.run([sha256sum, "-c", SUMS], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0
    assert f"{ZIP}: FAILED" in bad.stdout, bad.stdout


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory) -> Path:
    """A --no-sign release into a directory holding an earlier run's signature and a
    mirror index that already lists an earlier version."""
    out = tmp_path_factory.mktemp("unsigned")
    (out / (SUMS + ".sig")).write_bytes(b"stale signature from an earlier run")
    (out / MIRROR_DIR).mkdir(parents=True)
    (out / MIRROR_DIR / "index.json").write_text(json.dumps({"versions": {"0.0.9": {}}}))
    p = release(out, "--no-sign")
    (out / "stderr").write_text(p.stderr)
    return out


def test_no_sign_says_so_and_leaves_no_signature_behind(unsigned):
    assert "NOT signed" in (unsigned / "stderr").read_text()
    assert not (unsigned / (SUMS + ".sig")).exists(), "a stale signature survived --no-sign"


def test_the_same_binary_gives_a_byte_identical_zip_and_mirror_hashes(dist, unsigned):
    assert (unsigned / ZIP).read_bytes() == (dist / ZIP).read_bytes(), "two packagings of one binary differ"
    assert (unsigned / MIRROR_DIR / f"{VERSION}.json").read_text() == (dist / MIRROR_DIR / f"{VERSION}.json").read_text()


def test_a_new_version_is_added_to_the_mirror_index_beside_the_earlier_ones(unsigned):
    index = json.loads((unsigned / MIRROR_DIR / "index.json").read_text())
    assert index == {"versions": {"0.0.9": {}, VERSION: {}}}


def test_release_without_a_key_or_no_sign_refuses_and_names_both_options(tmp_path):
    p = release(tmp_path / "out", env={"SIGIL_RELEASE_GPG_KEY": ""}, check=False)
    assert p.returncode != 0
    assert "--gpg-key" in p.stderr and "--no-sign" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists(), "files were written before the refusal"


def test_source_for_another_provider_type_is_refused_naming_the_source(tmp_path):
    p = release(tmp_path / "out", "--no-sign", "--source", "sigil.test/sigil/other", check=False)
    assert p.returncode != 0
    assert "--source 'sigil.test/sigil/other'" in p.stderr and "type must be 'sigil'" in p.stderr, p.stderr


def test_a_signing_key_terraform_cannot_verify_is_refused_before_anything_is_written(tmp_path):
    # Terraform 1.0.3 cannot read EdDSA keys ("unsupported feature: public key type: 22"):
    # a release signed with one would fail every `terraform init` from a registry.
    home = Path(tempfile.mkdtemp(prefix="sigil-gpg-"))
    try:
        ed = Gpg(home, algo="ed25519")
        p = release(tmp_path / "out", "--gpg-key", ed.fingerprint, env={"GNUPGHOME": str(home)}, check=False)
        ed.stop_agent()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert p.returncode != 0
    assert f"--gpg-key {ed.fingerprint}" in p.stderr and "algorithm 22" in p.stderr and "RSA" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists(), "files were written before the refusal"
