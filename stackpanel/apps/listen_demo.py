"""A program that starts its own server, for a `kind: command` node: `python -m stackpanel.apps.listen_demo`.

It listens where the node says (``HOST`` and ``PORT`` in its environment) and answers every GET
with one line naming its pid; the editor's new command nodes run it until you put your own
command there.
"""
from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from a command node, pid {os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "9000"))
    server = ThreadingHTTPServer((host, port), _Hello)
    print(f"listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
