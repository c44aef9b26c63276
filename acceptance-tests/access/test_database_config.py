"""The `database` agent output's config: schemas/agent-config.schema.json and `sigil agent --check`
agree (checked with the `jsonschema` package), and the example config is valid. The servers are
in test_databases.py."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_agent_config_is_valid(sigil_bin):
    cfg = ROOT / "examples" / "access" / "databases" / "agent.yaml"
    p = subprocess.run([sigil_bin, "agent", "--check", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr


# ------------------------------------------------------------------ config schema

CFG = "broker: 127.0.0.1:8443\nca_file: /tmp/ca.pem\nstate_dir: /tmp/state\njoin: {method: token, token_file: /tmp/t}\n"


@pytest.mark.parametrize("output, ok", [
    ("{type: database, dir: /run/db, protocol: postgres, user: app, host: db.internal, database: orders, ttl: 1h}", True),
    ("{type: database, dir: /run/db, protocol: mysql, user: app, host: 10.0.0.5, port: 3307, group: '0'}", True),
    ("{type: database, dir: /run/db, protocol: postgres, user: \"app\\nsslmode=disable\", host: db}", False),
    ("{type: database, dir: /run/db, protocol: postgres, user: \"a'b\", host: db}", False),
    ("{type: database, dir: /run/db, protocol: oracle, user: app, host: db}", False),
    ("{type: database, dir: /run/db, protocol: postgres, user: app}", False),
])
def test_database_output_config_agrees_with_the_schema(sigil_bin, tmp_path, output, ok):
    schema = json.loads((ROOT / "schemas" / "agent-config.schema.json").read_text())
    text = CFG + f"outputs:\n  - {output}\n"
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    p = subprocess.run([sigil_bin, "agent", "--check", "--config", str(f)], capture_output=True, text=True, timeout=30)
    if ok:
        jsonschema.validate(yaml.safe_load(text), schema)
        assert p.returncode == 0, p.stderr
    else:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(yaml.safe_load(text), schema)
        assert p.returncode != 0 and "invalid agent config" in p.stderr, p.stderr
