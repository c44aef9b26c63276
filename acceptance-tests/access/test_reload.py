"""`outputs[].reload` against a real reader: nginx (Debian nginx-light) reads
its `ssl_certificate` only at start and on SIGHUP. With `reload` the agent
tells it after each renewal, so nginx serves the renewed certificate (read back
from the TLS handshake, verified by curl with the output's `ca.pem`); both
forms: `signal: HUP` + `pid_file`, and `command: [nginx, -s, reload]`.
Without `reload` nginx keeps serving the first certificate (the control)."""
from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509

from sigil_harness import require_tool, stop_process
from test_application import DNS, Nginx, apps, cert, start_agent, wait_for  # noqa: F401 (apps: a fixture)


def served(port: int) -> x509.Certificate:
    """The leaf nginx presents (read from the handshake; curl verifies it separately)."""
    return x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", port), timeout=10).encode())


def reload_lines(form: str, prefix: Path) -> str:
    nginx = require_tool("nginx", "apt-get install nginx-light")
    if form == "signal":
        return f"    reload: {{signal: HUP, pid_file: {prefix / 'nginx.pid'}}}\n"
    if form == "command":
        return f"    reload: {{command: [{nginx}, -p, {prefix}, -c, {prefix / 'nginx.conf'}, -s, reload], timeout: 10s}}\n"
    return ""


@pytest.mark.parametrize("form", ["signal", "command", "none"])
def test_nginx_serves_the_renewed_certificate_only_when_the_agent_reloads_it(form, sigil_bin, broker, apps, tmp_path):
    out, prefix = tmp_path / "app", tmp_path / "nginx"
    log = tmp_path / "agent.log"
    agent = start_agent(sigil_bin, broker, tmp_path, apps, out, reload_lines(form, prefix))
    try:
        wait_for(lambda: cert(out / "tls.crt") is not None, "the application output", agent, log)
        with Nginx(prefix, out / "tls.crt", out / "tls.key", client_ca=None, master=True) as nginx:
            first = served(nginx.port)
            # Renewal at half-life (ttl 8s): wait for two renewals of the files.
            seen = {cert(out / "tls.crt").serial_number}
            wait_for(lambda: seen.add(cert(out / "tls.crt").serial_number) or len(seen) >= 3, "two renewals", agent, log, timeout=30)
            now = served(nginx.port)
            if form == "none":
                assert now.serial_number == first.serial_number, "nginx re-read its certificate without a reload"
                return
            started = time.time()
            while served(nginx.port).serial_number == first.serial_number:
                assert time.time() - started < 10, f"nginx still serves the first certificate: {log.read_text()[-3000:]}"
                time.sleep(0.2)
            now = served(nginx.port)
            assert now.serial_number in seen, "nginx serves a certificate the agent wrote"
            assert now.not_valid_before_utc >= first.not_valid_before_utc
            ok = nginx.curl(out / "ca.pem")
            assert ok.stdout.endswith("\n200"), (ok.stdout, ok.stderr, nginx.error_log)
            assert "reload done after the files changed" in log.read_text()
            assert "signal 1 (SIGHUP) received" in nginx.error_log or "reconfiguring" in nginx.error_log, nginx.error_log
            print(f"{form}: nginx served {len(seen) - 1} renewed certificate(s) of {DNS} after the agent's reload")
    finally:
        stop_process(agent)


def test_a_reload_whose_pid_file_others_could_write_is_refused_and_the_files_stay(sigil_bin, broker, apps, tmp_path):
    """A pid file writable by others would let a local user choose what the agent
    (often root) signals: the reload is refused, the output still renews."""
    out = tmp_path / "app"
    pid = tmp_path / "planted.pid"
    pid.write_text("1\n")
    pid.chmod(0o666)
    log = tmp_path / "agent.log"
    agent = start_agent(sigil_bin, broker, tmp_path, apps, out, f"    reload: {{signal: HUP, pid_file: {pid}}}\n")
    try:
        wait_for(lambda: cert(out / "tls.crt") is not None, "the application output", agent, log)
        wait_for(lambda: "reload failed" in log.read_text(), "the refused reload", agent, log)
        text = log.read_text()
        assert "writable by group or others" in text, text[-3000:]
        first = cert(out / "tls.crt").serial_number
        wait_for(lambda: cert(out / "tls.crt").serial_number != first, "a renewal after the refused reload", agent, log, timeout=20)
    finally:
        stop_process(agent)


def test_reload_is_accepted_by_schema_and_agent_in_both_forms_and_refused_otherwise(sigil_bin, tmp_path):
    import json
    import subprocess

    import jsonschema
    import yaml

    schema = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "agent-config.schema.json").read_text())
    base = ("broker: 127.0.0.1:8443\nca_file: /tmp/ca.pem\nstate_dir: /tmp/state\njoin: {method: token, token_file: /tmp/t}\n"
            "outputs:\n  - type: identity\n    path: /tmp/id\n    reload: ")
    good = ["{signal: HUP, pid_file: /run/nginx.pid}", "{signal: SIGUSR2, pid_file: /run/haproxy.pid}",
            "{command: [/usr/bin/systemctl, reload, ssh], timeout: 1m}"]
    bad = {"both": "{command: [/bin/true], signal: HUP, pid_file: /p}", "relative_command": "{command: [nginx, -s, reload]}",
           "no_pid_file": "{signal: HUP}", "kill": "{signal: KILL, pid_file: /p}", "typo": "{comand: [/bin/true]}",
           "relative_pid_file": "{signal: HUP, pid_file: run/x.pid}", "timeout_with_signal": "{signal: HUP, pid_file: /p, timeout: 1s}"}

    def check(text: str) -> subprocess.CompletedProcess:
        f = tmp_path / "agent.yaml"
        f.write_text(text)
        return subprocess.run([sigil_bin, "agent", "--check", "--config", str(f)], capture_output=True, text=True, timeout=30)

    for g in good:
        jsonschema.validate(yaml.safe_load(base + g + "\n"), schema)
        p = check(base + g + "\n")
        assert p.returncode == 0, (g, p.stderr)
    for name, b in bad.items():
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(yaml.safe_load(base + b + "\n"), schema)
        p = check(base + b + "\n")
        assert p.returncode != 0 and "invalid agent config" in p.stderr, (name, p.stderr)
        assert "reload" in p.stderr or "comand" in p.stderr, (name, p.stderr)
