"""The `application` output (agent) and `sigil app cert` (one-shot) against
peers we did not write: nginx (Debian nginx-light) and curl.

- nginx with `ssl_verify_client on` and `ssl_client_certificate` = the output's
  `ca.pem` accepts the agent's `tls.crt`/`tls.key` (and the renewed one after
  half-life), refuses a certificate from another CA and a request without one;
- nginx serving the one-shot's `tls.crt`/`tls.key` (`ssl_certificate`) is
  verified by curl with `ca.pem` and the workload identity's DNS SAN; another
  name or another CA is refused by curl.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from sigil_harness import free_port, require_tool, stop_process, wait_port

HERE = Path(__file__).resolve().parent
DNS = "web.internal"

RESOURCES = """
kind: role
name: apps
allow:
  spiffe_ids: ["/app/**"]
  workload_identities: ["web", "api"]
  max_x509_ttl_seconds: 3600
---
kind: bot
name: web1
roles: [apps]
---
kind: workload_identity
name: web
spiffe_id: /app/web/{{bot.name}}
dns_sans: [web.internal]
allow:
  - attribute: bot.name
    values: [web1]
---
kind: workload_identity
name: api
spiffe_id: /app/api/{{bot.name}}
dns_sans: [api.internal]
allow:
  - attribute: bot.name
    values: [web1]
"""


@pytest.fixture
def apps(broker, tmp_path) -> str:
    """The role, bot and workload identities; returns a join token secret for bot web1."""
    f = tmp_path / "resources.yaml"
    f.write_text(RESOURCES)
    broker.sigil("apply", "-f", str(f))
    return broker.sigil("token", "create", "--bot", "web1", "--name", "web1-token", "--uses", "10").stdout.strip()


def bot_identity(broker, tmp_path: Path, token: str) -> str:
    path = tmp_path / "web1.identity"
    broker.sigil("join", "--token", token, "--ca-file", broker.ca, "--out", str(path))
    return str(path)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(c: x509.Certificate) -> tuple[list[str], list[str]]:
    v = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return v.get_values_for_type(x509.DNSName), v.get_values_for_type(x509.UniformResourceIdentifier)


def other_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA that is not ours and a client certificate it signed (openssl)."""
    openssl = require_tool("openssl", "apt-get install openssl")
    d = tmp_path / "other-ca"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run = lambda *a: subprocess.run([openssl, *a], check=True, capture_output=True, timeout=30)  # noqa: E731
    run("req", "-x509", *ec, "-days", "1", "-subj", "/CN=Other CA", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    run("req", *ec, "-subj", f"/CN={DNS}", "-addext", f"subjectAltName=DNS:{DNS},URI:spiffe://sigil.local/app/web/web1",
        "-keyout", str(d / "tls.key"), "-out", str(d / "req.pem"))
    ext = d / "ext.cnf"
    ext.write_text(f"subjectAltName=DNS:{DNS},URI:spiffe://sigil.local/app/web/web1\nextendedKeyUsage=clientAuth,serverAuth\n")
    run("x509", "-req", "-in", str(d / "req.pem"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"), "-set_serial", "7",
        "-days", "1", "-extfile", str(ext), "-out", str(d / "tls.crt"))
    return d / "ca.pem", d / "tls.crt", d / "tls.key"


class Nginx:
    """nginx on a loopback port, run by the test (no daemon; no master process
    unless `master`, which a reload on SIGHUP needs)."""

    def __init__(self, prefix: Path, server_cert: Path, server_key: Path, client_ca: Path | None, allow_cn: str | None = None,
                 master: bool = False):
        self.nginx = require_tool("nginx", "apt-get install nginx-light")
        self.prefix, self.port = prefix, free_port()
        (prefix / "logs").mkdir(parents=True)
        verify = f"ssl_client_certificate {client_ca};\n        ssl_verify_client on;\n        ssl_verify_depth 2;" if client_ca else ""
        # Authorization by name: the CN of an application certificate is its
        # workload identity's first DNS name (adding one needs `escalate`).
        authz = f'if ($ssl_client_s_dn !~ "(^|,)CN={allow_cn}(,|$)") {{ return 403 "not allowed\\n"; }}' if allow_cn else ""
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(f"""
daemon off;
master_process {"on" if master else "off"};
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        server_name {DNS};
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        {verify}
        {authz}
        location / {{ return 200 "client=$ssl_client_verify serial=$ssl_client_serial\\n"; }}
    }}
}}
""")
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Nginx":
        self.proc = subprocess.Popen([self.nginx, "-p", str(self.prefix), "-c", str(self.conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, self.proc, "nginx")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        stop_process(self.proc)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    @property
    def error_log(self) -> str:
        return (self.prefix / "logs" / "error.log").read_text()

    def curl(self, cacert: Path, name: str = DNS, cert: Path | None = None, key: Path | None = None) -> subprocess.CompletedProcess:
        curl = require_tool("curl", "apt-get install curl")
        args = [curl, "-sS", "--max-time", "20", "-w", "\n%{http_code}", "--cacert", str(cacert),
                "--resolve", f"{name}:{self.port}:127.0.0.1", f"https://{name}:{self.port}/"]
        if cert:
            args += ["--cert", str(cert), "--key", str(key)]
        return subprocess.run(args, capture_output=True, text=True, timeout=30)


def self_signed_server(tmp_path: Path) -> tuple[Path, Path]:
    """nginx's own serving certificate for the client-verification test (curl trusts it with --cacert)."""
    openssl = require_tool("openssl", "apt-get install openssl")
    d = tmp_path / "server"
    d.mkdir()
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                    "-subj", f"/CN={DNS}", "-addext", f"subjectAltName=DNS:{DNS}",
                    "-keyout", str(d / "server.key"), "-out", str(d / "server.pem")], check=True, capture_output=True, timeout=30)
    return d / "server.pem", d / "server.key"


def start_agent(sigil_bin: str, broker, tmp_path: Path, token: str, out: Path, extra: str = "") -> subprocess.Popen:
    """`sigil agent` with an `application` output (ttl 8s) into OUT; `extra`: more lines of that output."""
    tok = tmp_path / "token"
    tok.write_text(token)
    tok.chmod(0o600)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"broker: {broker.addr}\nca_file: {broker.ca}\nstate_dir: {tmp_path / 'state'}\n"
        f"join: {{method: token, token_file: {tok}}}\n"
        "identity_ttl: 1h\nretry: {initial: 200ms, max: 1s}\n"
        f"outputs:\n  - type: application\n    dir: {out}\n    workload_identity: web\n    ttl: 8s\n{extra}"
    )
    log = open(tmp_path / "agent.log", "ab")
    return subprocess.Popen([sigil_bin, "agent", "--config", str(cfg)], stdout=log, stderr=log)


def wait_for(cond, what: str, proc: subprocess.Popen, log: Path, timeout: float = 30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"agent exited: {log.read_text()}"
        try:
            if cond():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {log.read_text()[-3000:]}")


def test_nginx_verifying_clients_with_the_bundle_accepts_the_agents_application_output_and_refuses_others(sigil_bin, broker, apps, tmp_path):
    out = tmp_path / "app"
    log = tmp_path / "agent.log"
    agent = start_agent(sigil_bin, broker, tmp_path, apps, out)
    try:
        wait_for(lambda: cert(out / "tls.crt") is not None, "the application output", agent, log)
        gen = Path(os.path.realpath(out / "..data"))  # one generation, whatever renews meanwhile
        first = cert(gen / "tls.crt")
        dns, uris = sans(first)
        assert dns == [DNS] and uris == ["spiffe://sigil.local/app/web/web1"], (dns, uris)
        # tls-chain.pem starts with the leaf; ca.pem is the X.509-SVID bundle (what signed the leaf).
        assert x509.load_pem_x509_certificates((gen / "tls-chain.pem").read_bytes())[0] == first
        bundle = x509.load_pem_x509_certificates((gen / "ca.pem").read_bytes())
        assert any(first.verify_directly_issued_by(ca) is None for ca in bundle if ca.subject == first.issuer)
        assert (out / "tls.key").stat().st_mode & 0o777 == 0o600
        server_cert, server_key = self_signed_server(tmp_path)
        bad_ca, bad_cert, bad_key = other_ca(tmp_path)
        with Nginx(tmp_path / "nginx", server_cert, server_key, client_ca=out / "ca.pem") as nginx:
            # Certificate and key from one generation (the agent renews every ~4 s):
            # `..data` resolved once, as docs/agent.md advises readers.
            gen = Path(os.path.realpath(out / "..data"))
            first = cert(gen / "tls.crt")
            ok = nginx.curl(server_cert, cert=gen / "tls.crt", key=gen / "tls.key")
            assert ok.stdout.endswith("\n200") and "client=SUCCESS" in ok.stdout, (ok.stdout, ok.stderr, nginx.error_log)
            served = re.search(r"serial=([0-9A-Fa-f]+)", ok.stdout)
            assert served and int(served.group(1), 16) == first.serial_number, ok.stdout  # nginx pads to whole bytes
            # A certificate from another CA, with the same names: nginx answers 400.
            other = nginx.curl(server_cert, cert=bad_cert, key=bad_key)
            assert other.stdout.endswith("\n400") and "client=" not in other.stdout, other.stdout
            assert "client SSL certificate verify error" in nginx.error_log, nginx.error_log
            # No certificate at all: 400 as well.
            none = nginx.curl(server_cert)
            assert none.stdout.endswith("\n400") and "No required SSL certificate was sent" in none.stdout, none.stdout
            # The agent's own bot identity (signed by the broker's internal CA, not
            # the X.509-SVID CA) is no key to the app: ca.pem holds the SVID CA only.
            ident = (tmp_path / "state" / "identity").read_text()
            key_at = ident.index("-----BEGIN PRIVATE KEY-----")
            (tmp_path / "bot.crt").write_text(ident[:ident.index("-----END CERTIFICATE-----") + 26])
            (tmp_path / "bot.key").write_text(ident[key_at:ident.index("-----END PRIVATE KEY-----") + 26])
            bot = nginx.curl(server_cert, cert=tmp_path / "bot.crt", key=tmp_path / "bot.key")
            assert bot.stdout.endswith("\n400") and "client=" not in bot.stdout, (bot.stdout, bot.stderr)
            # Renewal at half-life (ttl 8s): a new certificate in place, accepted without touching nginx.
            wait_for(lambda: cert(out / "tls.crt").serial_number != first.serial_number, "the renewed certificate", agent, log, timeout=20)
            gen = Path(os.path.realpath(out / "..data"))
            renewed = nginx.curl(server_cert, cert=gen / "tls.crt", key=gen / "tls.key")
            assert renewed.stdout.endswith("\n200") and "client=SUCCESS" in renewed.stdout, (renewed.stdout, renewed.stderr)
            second = cert(gen / "tls.crt")
            assert second.serial_number != first.serial_number
            lifetime = (first.not_valid_after_utc - first.not_valid_before_utc).total_seconds()
            assert lifetime <= 8 + 60, lifetime  # not_before is backdated for clock skew
    finally:
        stop_process(agent)


def test_nginx_serving_the_one_shot_certificate_is_verified_by_curl_with_ca_pem_and_the_dns_san(sigil_bin, broker, apps, tmp_path):
    identity = bot_identity(broker, tmp_path, apps)
    server, client = tmp_path / "server-tls", tmp_path / "client-tls"
    p = broker.sigil("app", "cert", "--workload-identity", "web", "--dir", str(server), "--ttl", "10m", identity=identity)
    assert "tls.crt, tls.key, tls-chain.pem, ca.pem" in p.stderr, p.stderr
    # --group as for a server's worker processes: files 0640 of that group.
    broker.sigil("app", "cert", "--workload-identity", "api", "--dir", str(client), "--ttl", "10m", "--group", str(os.getgid()), identity=identity)
    assert (client / "tls.key").stat().st_mode & 0o777 == 0o640 and (client / "tls.key").stat().st_gid == os.getgid()
    for name in ["tls.crt", "tls.key", "tls-chain.pem", "ca.pem"]:
        assert (server / name).is_symlink() and (server / name).stat().st_mode & 0o777 == 0o600, name
    assert sans(cert(server / "tls.crt"))[0] == [DNS]
    bad_ca, bad_cert, bad_key = other_ca(tmp_path)
    # Both sides from Sigil: nginx serves tls.crt and verifies clients with ca.pem.
    with Nginx(tmp_path / "nginx", server / "tls.crt", server / "tls.key", client_ca=server / "ca.pem", allow_cn="api.internal") as nginx:
        ok = nginx.curl(client / "ca.pem", cert=client / "tls.crt", key=client / "tls.key")
        assert ok.returncode == 0 and ok.stdout.endswith("\n200") and "client=SUCCESS" in ok.stdout, (ok.stdout, ok.stderr, nginx.error_log)
        # Another workload of the same trust domain passes ssl_verify_client, and
        # is refused by the name check: the CA alone authorizes nobody.
        web = nginx.curl(client / "ca.pem", cert=server / "tls.crt", key=server / "tls.key")
        assert web.stdout.endswith("\n403") and "not allowed" in web.stdout, (web.stdout, web.stderr)
        # The certificate names web.internal only: curl refuses it for another name.
        wrong_name = nginx.curl(client / "ca.pem", name="api.internal", cert=client / "tls.crt", key=client / "tls.key")
        assert wrong_name.returncode == 60 and "api.internal" in wrong_name.stderr, (wrong_name.returncode, wrong_name.stderr)
        # A client trusting another CA refuses our server.
        wrong_ca = nginx.curl(bad_ca, cert=client / "tls.crt", key=client / "tls.key")
        assert wrong_ca.returncode == 60, (wrong_ca.returncode, wrong_ca.stderr)
        # And the one-shot's ca.pem refuses a client from another CA, as the agent's does.
        other = nginx.curl(client / "ca.pem", cert=bad_cert, key=bad_key)
        assert other.stdout.endswith("\n400"), other.stdout


def test_the_application_output_config_is_accepted_by_schema_and_agent(sigil_bin, tmp_path):
    import json

    import jsonschema
    import yaml

    schema = json.loads((HERE.parents[1] / "schemas" / "agent-config.schema.json").read_text())
    base = "broker: 127.0.0.1:8443\nca_file: /tmp/ca.pem\nstate_dir: /tmp/state\njoin: {method: token, token_file: /tmp/t}\n"
    good = base + "outputs:\n  - type: application\n    dir: /tmp/app\n    workload_identity: web\n    ttl: 1h\n    group: '0'\n    mode: '0640'\n"
    bad = {
        "no_target": base + "outputs:\n  - type: application\n    dir: /tmp/app\n",
        "unknown_field": base + "outputs:\n  - type: application\n    dir: /tmp/app\n    spiffe_id: spiffe://a/b\n    dns_names: [x]\n",
        "not_a_spiffe_id": base + "outputs:\n  - type: application\n    dir: /tmp/app\n    spiffe_id: web\n",
    }

    def check(text: str) -> subprocess.CompletedProcess:
        f = tmp_path / "agent.yaml"
        f.write_text(text)
        return subprocess.run([sigil_bin, "agent", "--check", "--config", str(f)], capture_output=True, text=True, timeout=30)

    jsonschema.validate(yaml.safe_load(good), schema)
    assert check(good).returncode == 0, check(good).stderr
    for name, text in bad.items():
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(yaml.safe_load(text), schema)
        p = check(text)
        assert p.returncode != 0 and "invalid agent config" in p.stderr, (name, p.stderr)


def test_the_applications_example_runs(sigil_bin):
    """examples/access/applications/demo.sh: agent.yaml, resources.yaml and
    nginx.conf as shipped, with nginx and curl (api 200, another workload 403,
    no certificate 400)."""
    require_tool("nginx", "apt-get install nginx-light")
    require_tool("curl", "apt-get install curl")
    demo = HERE.parents[1] / "examples" / "access" / "applications" / "demo.sh"
    p = subprocess.run(["bash", str(demo)], env={**os.environ, "SIGIL": sigil_bin}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.rstrip().endswith("OK"), p.stdout + p.stderr
    assert "api:          200 hello CN=api.internal" in p.stdout, p.stdout
