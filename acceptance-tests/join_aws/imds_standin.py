"""A local stand-in for the EC2 instance metadata service, IMDSv2 only, on
loopback: `PUT /latest/api/token` (TTL header required, X-Forwarded-For
refused, as the real service does), then GETs that must carry the token.

It serves what the tests give it: role credentials (a callable returning the
fields IMDS returns, e.g. real credentials from moto's STS), the instance
identity document and its `rsa2048` signature. boto3/botocore reads it through
`AWS_EC2_METADATA_SERVICE_ENDPOINT`, which proves it speaks the real protocol
before Sigil is pointed at it (test_imds_standin_*).
"""
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREDS_PREFIX = "/latest/meta-data/iam/security-credentials/"


class Imds:
    def __init__(self, credentials=None, role="sigil-instance-role", document=None, rsa2048=None):
        self.credentials = credentials  # () -> dict(AccessKeyId, SecretAccessKey, Token, Expiration)
        self.role = role
        self.document = document  # bytes
        self.rsa2048 = rsa2048  # str (base64)
        self.requests = []  # (method, path, status)
        self.tokens = set()
        self.lock = threading.Lock()
        imds = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, body=b"", ctype="text/plain"):
                if isinstance(body, str):
                    body = body.encode()
                with imds.lock:
                    imds.requests.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                if self.path != "/latest/api/token":
                    return self._send(404, "not found")
                if self.headers.get("X-Forwarded-For"):
                    return self._send(403, "forbidden")
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                    return self._send(400, "missing or invalid X-aws-ec2-metadata-token-ttl-seconds")
                tok = secrets.token_urlsafe(32)
                with imds.lock:
                    imds.tokens.add(tok)
                self._send(200, tok)

            def do_GET(self):
                tok = self.headers.get("X-aws-ec2-metadata-token")
                with imds.lock:
                    ok = tok in imds.tokens
                if not ok:
                    return self._send(401, "unauthorized: IMDSv2 token required")
                p = self.path
                if p == CREDS_PREFIX and imds.credentials:
                    return self._send(200, imds.role)
                if p == CREDS_PREFIX + imds.role and imds.credentials:
                    c = dict(imds.credentials())
                    c.setdefault("Code", "Success")
                    c.setdefault("Type", "AWS-HMAC")
                    c.setdefault("LastUpdated", c.get("LastUpdated", "2026-01-01T00:00:00Z"))
                    return self._send(200, json.dumps(c), "application/json")
                if p == "/latest/dynamic/instance-identity/document" and imds.document is not None:
                    return self._send(200, imds.document, "application/json")
                if p == "/latest/dynamic/instance-identity/rsa2048" and imds.rsa2048 is not None:
                    return self._send(200, imds.rsa2048)
                if p == "/latest/meta-data/placement/region" and imds.document is not None:
                    return self._send(200, json.loads(imds.document)["region"])
                if p == "/latest/meta-data/placement/availability-zone" and imds.document is not None:
                    return self._send(200, json.loads(imds.document)["availabilityZone"])
                self._send(404, "not found")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, method, path_prefix, status=200):
        with self.lock:
            return sum(1 for m, p, s in self.requests if m == method and p.startswith(path_prefix) and s == status)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
