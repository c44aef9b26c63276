"""docs/provider against what Terraform itself sees: every attribute Terraform
reports for a type is documented on its page, and every example validates."""

from __future__ import annotations

import json
import re

from tf_harness import REPO, Terraform

DOCS = REPO / "docs" / "provider"


def page_for(type_name: str, kind: str):
    return DOCS / kind / f"{type_name.removeprefix('sigil_')}.md"


def documented(page) -> set[str]:
    return set(re.findall(r"^- `([a-z0-9_]+)`", page.read_text(), re.M)) | set(
        re.findall(r"^### `([a-z0-9_]+)` blocks", page.read_text(), re.M)
    )


def test_every_attribute_terraform_sees_is_documented(tmp_path, provider_binary):
    tf = Terraform(tmp_path / "schema", provider_binary.parent)
    tf.write("")
    schemas = next(iter(json.loads(tf.run("providers", "schema", "-json").stdout)["provider_schemas"].values()))
    checked = 0
    for kind, key in [("resources", "resource_schemas"), ("data-sources", "data_source_schemas")]:
        for name, schema in schemas[key].items():
            page = page_for(name, kind)
            assert page.exists(), f"no docs page for {name} at {page}"
            block = schema["block"]
            want = set(block.get("attributes", {})) | set(block.get("block_types", {}))
            missing = want - documented(page)
            assert not missing, f"{page.name} does not document {sorted(missing)}"
            for bname, btype in block.get("block_types", {}).items():
                assert set(btype["block"]["attributes"]) <= documented(page), f"{page.name}: {bname} attributes"
            checked += 1
    assert checked == 9
    provider_attrs = set(schemas["provider"]["block"]["attributes"])
    assert provider_attrs <= documented(DOCS / "index.md")


def test_every_docs_example_validates(tmp_path, provider_binary):
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        blocks += re.findall(r"```hcl\n(.*?)```", page.read_text(), re.S)
    assert len(blocks) == 10
    tf = Terraform(tmp_path / "examples", provider_binary.parent)
    tf.write("\n".join(blocks))
    out = tf.run("validate")
    assert "Success! The configuration is valid" in out.stdout
