"""A small serving application over the runtime alone (numpy + the standard library): one loaded
artifact, a pool of sessions, JSON over HTTP.

    python examples/ci/serve.py model.lwr --port 8080 --sessions 2
    curl -s localhost:8080/v1/model                                       # the signature
    curl -s -d '{"inputs": {"x": [[...]]}}' localhost:8080/v1/infer       # outputs as nested lists
    curl -s localhost:8080/healthz

Bad requests (unknown inputs, wrong shapes or dtypes, malformed JSON) are 400 with a one-line error; the
server keeps serving. Each session serialises its own calls, so ``--sessions N`` handles N requests at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a source tree

import runtime  # noqa: E402


class Pool:
    def __init__(self, path, sessions: int, threads: int | None):
        self.sessions: queue.Queue = queue.Queue()
        first = None
        for _ in range(sessions):
            first = runtime.load(path, threads=threads)
            self.sessions.put(first)
        self.signature = {"target": first.target,
                          "inputs": [vars(i) | {"shape": list(i.shape)} for i in first.inputs],
                          "outputs": [vars(o) | {"shape": list(o.shape)} for o in first.outputs]}
        self.dtypes = {i.name: np.dtype(i.dtype) for i in first.inputs}

    def infer(self, feed: dict) -> dict:
        arrays = {}
        for name, value in feed.items():
            if name not in self.dtypes:
                raise runtime.InvalidInputError(f"unknown input '{name}'")
            arrays[name] = np.asarray(value, dtype=self.dtypes[name])
        sess = self.sessions.get()
        try:
            outs = sess.run(None, arrays)
            return {o.name: v.tolist() for o, v in zip(sess.outputs, outs)}
        finally:
            self.sessions.put(sess)


def make_handler(pool: Pool):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - the http.server API
            if self.path == "/healthz":
                self._send(200, {"ok": True})
            elif self.path == "/v1/model":
                self._send(200, pool.signature)
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self):  # noqa: N802
            if self.path != "/v1/infer":
                return self._send(404, {"error": f"no route {self.path}"})
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if not 0 <= length <= 64 << 20:
                    raise ValueError("request body must be at most 64 MiB")
                request = json.loads(self.rfile.read(length))
                feed = request.get("inputs") if isinstance(request, dict) else None
                if not isinstance(feed, dict):
                    raise ValueError('the body must be {"inputs": {name: nested list}}')
                self._send(200, {"outputs": pool.infer(feed)})
            except (ValueError, TypeError, runtime.InvalidInputError) as exc:
                self._send(400, {"error": " ".join(str(exc).split())})

        def log_message(self, fmt, *args):
            logging.getLogger("serve").info(fmt, *args)

    return Handler


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads per session")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        pool = Pool(args.artifact, max(args.sessions, 1), args.threads)
    except runtime.RuntimeLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = ThreadingHTTPServer((args.host, args.port), make_handler(pool))
    print(f"serving {args.artifact} ({pool.signature['target']}) on http://{args.host}:{server.server_port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
