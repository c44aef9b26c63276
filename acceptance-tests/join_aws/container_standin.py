"""A local stand-in for the ECS / EKS Pod Identity container credentials
endpoint, on loopback: `GET <any path>` answers the task role's credentials
(`AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`, as ECS and the EKS
Pod Identity agent do), and, when the stand-in has an authorization token,
only to a request whose `Authorization` header carries it (401 otherwise).

boto3/botocore reads it through `AWS_CONTAINER_CREDENTIALS_FULL_URI` +
`AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, which proves it speaks the real
protocol before Sigil is pointed at it (test_chain_standins.py).
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Container:
    def __init__(self, credentials, token=None, path="/v1/credentials"):
        self.credentials = credentials  # () -> dict(AccessKeyId, SecretAccessKey, Token, Expiration)
        self.token = token
        self.path = path
        self.requests = []  # (path, status)
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, body):
                body = body.encode() if isinstance(body, str) else body
                with stand_in.lock:
                    stand_in.requests.append((self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if stand_in.token is not None and self.headers.get("Authorization") != stand_in.token:
                    return self._send(401, json.dumps({"Message": "missing or wrong authorization token"}))
                if self.path != stand_in.path:
                    return self._send(404, json.dumps({"Message": "not found"}))
                self._send(200, json.dumps(dict(stand_in.credentials())))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, status=200):
        with self.lock:
            return sum(1 for _, s in self.requests if s == status)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
