"""docs/guides/provider-distribution.md against the real tools: its CLI configurations load
in Terraform 1.0.3 without complaint, and its options table is what release.sh accepts."""

from __future__ import annotations

import re
import subprocess

from release_harness import Terraform, terraform_binary
from sigil_harness import ROOT

GUIDE = ROOT / "docs" / "guides" / "provider-distribution.md"


def test_every_cli_configuration_in_the_guide_loads_in_terraform(tmp_path):
    blocks = [b for b in re.findall(r"```hcl\n(.*?)```", GUIDE.read_text(), re.S) if "provider_installation" in b]
    assert len(blocks) == 2, "the guide's filesystem and network mirror configurations"
    for i, block in enumerate(blocks):
        rc = tmp_path / f"rc{i}"
        rc.write_text(block)
        tf = Terraform(tmp_path / f"tf{i}", "")
        tf.env["TF_CLI_CONFIG_FILE"] = str(rc)
        p = subprocess.run([terraform_binary(), "version"], env=tf.env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and "problems with the CLI configuration" not in p.stdout + p.stderr, block + p.stderr


def test_the_guide_documents_exactly_the_options_release_sh_accepts():
    documented = set(re.findall(r"^\| `(--[a-z-]+)", GUIDE.read_text(), re.M))
    help_text = subprocess.run(["bash", str(ROOT / "scripts" / "release.sh"), "--help"], capture_output=True,
                               text=True, check=True, timeout=30).stdout
    accepted = set(re.findall(r"^  (--[a-z-]+)", help_text, re.M))
    assert documented == accepted, f"guide only: {documented - accepted}, release.sh only: {accepted - documented}"
