#!/usr/bin/env python3
"""A tiny HTTP backend for the demo: answers every GET with its pool name.

    backend.py --port 8001 --name green [--error-rate 0.3]

The body is one line, `<pool>\n` (`blue` or `green`), so that the traffic
generator can tell which pool answered. With --error-rate, that share of the
answers are 500s (the body still names the pool): `DEMO_BREAK=1 demo/run`
uses it to show a rollback.
"""
import argparse
import random
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--error-rate", type=float, default=0.0)
    a = p.parse_args()
    body = f"{a.name}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            code = 500 if random.random() < a.error_rate else 200
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128
        daemon_threads = True

    Server(("127.0.0.1", a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
