#!/usr/bin/env python3
"""A chat-completions server that answers every request after a fixed delay.

The workload for `compare_reference.sh`: each reply is a valid ReAct turn
(`Thought: ...\nAction: look`), so every episode runs to its step limit and
both runners do exactly the same number of calls. Standard library only.

    python3 bench/fixed_latency_chat.py --port 8802 --latency-ms 50
"""
import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = "Thought: I should look around first.\nAction: look"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    latency = 0.05

    def log_message(self, *args):
        pass

    def _send(self, obj, status=200):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self._send({"object": "list", "data": [{"id": "fixed", "object": "model"}]})
        else:
            self._send({"error": "not found"}, 404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        req = json.loads(self.rfile.read(n) or b"{}")
        time.sleep(self.latency)
        k = int(req.get("n", 1) or 1)
        self._send({
            "id": "cmpl", "object": "chat.completion", "model": req.get("model", "fixed"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"} for i in range(k)],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
        })


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8802)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    a = ap.parse_args()
    Handler.latency = a.latency_ms / 1000.0
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 1024
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
