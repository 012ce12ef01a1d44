"""A tiny HTTP server on 127.0.0.1 for what the fake provider does not do: /v1/models,
/v1/usage, budget and plan errors, tool calls, and a stream that watches for the client
hanging up.

Each route is a function (request) -> Reply or StreamReply; every request is recorded.
"""

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Reply:
    status: int
    body: object
    headers: dict = field(default_factory=dict)


@dataclass
class StreamReply:
    """SSE: `events` (dicts become `data: <json>`, strings are sent as is) one every
    `interval` seconds; `done` sends `data: [DONE]` at the end; `headers` go with the answer."""

    events: list
    interval: float = 0.0
    done: bool = True
    headers: dict = field(default_factory=dict)


@dataclass
class StreamOutcome:
    sent: int = 0
    disconnected_at: float | None = None
    finished: bool = False


class ScriptedServer:
    def __init__(self, routes):
        self.routes = routes
        self.requests = []
        self.streams = []
        self._lock = threading.Lock()
        self._stream_event = threading.Condition(self._lock)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with outer._lock:
                    outer.requests.append(req)
                route = outer.routes.get((self.command, self.path.split("?")[0]))
                reply = route(req) if route else Reply(404, {"error": {"message": "no route"}})
                if isinstance(reply, StreamReply):
                    self._stream(reply)
                else:
                    data = json.dumps(reply.body).encode()
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.send_header("x-request-id", f"req_scripted_{len(outer.requests)}")
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)

            def _stream(self, reply):
                outcome = StreamOutcome()
                with outer._lock:
                    outer.streams.append(outcome)
                self.close_connection = True
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("x-request-id", "req_scripted_stream")
                self.send_header("connection", "close")
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.flush()
                sock = self.connection
                events = list(reply.events) + (["data: [DONE]\n\n"] if reply.done else [])
                for ev in events:
                    # A readable socket with nothing to read is the client hanging up.
                    readable, _, _ = select.select([sock], [], [], reply.interval)
                    if readable:
                        try:
                            gone = sock.recv(1, socket.MSG_PEEK) == b""
                        except OSError:
                            gone = True
                        if gone:
                            break
                    data = ev if isinstance(ev, str) else f"data: {json.dumps(ev)}\n\n"
                    try:
                        self.wfile.write(data.encode())
                        self.wfile.flush()
                    except OSError:
                        break
                    with outer._lock:
                        outcome.sent += 1
                else:
                    with outer._stream_event:
                        outcome.finished = True
                        outer._stream_event.notify_all()
                    return
                with outer._stream_event:
                    outcome.disconnected_at = time.monotonic()
                    outer._stream_event.notify_all()

            do_GET = _handle
            do_POST = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self):
        host, port = self._server.server_address
        return f"http://{host}:{port}/v1"

    def wait_for_stream_end(self, timeout):
        """The first stream's outcome once it ended (finished or the client hung up)."""
        deadline = time.monotonic() + timeout
        with self._stream_event:
            while True:
                if self.streams and (
                    self.streams[0].finished or self.streams[0].disconnected_at is not None
                ):
                    return self.streams[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the stream did not end in time")
                self._stream_event.wait(left)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def chunk(content=None, finish=None, role=None):
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "storycad-fast",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def error_body(status_type, code, message):
    return {"error": {"message": message, "type": status_type, "code": code, "param": None}}
