"""A local stand-in for a remote, paid OpenAI-compatible chat API (the vision model).

It speaks the real wire protocol over real HTTP: ``POST /v1/chat/completions`` with a
JSON body, ``messages`` whose content may be a list of parts (``{"type": "text"}``,
``{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,..."}}``), answers
in the OpenAI response shape with ``usage``, and OpenAI-style error bodies with status
codes (429 with ``Retry-After``, 5xx, 400). It checks every request it receives
(``problems`` lists protocol violations) and records them for the tests to inspect.

Answers are scripted: each request pops the next :class:`Reply` from ``script`` (a
reply can be a delay, an HTTP error, a raw body, or content), and falls back to
``default`` (a function of the request) when the script is empty.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np


@dataclass
class Reply:
    """One scripted answer."""

    content: str | None = None  # the assistant message text
    status: int = 200
    error: str = ""  # message of an OpenAI-style error body
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    raw: bytes | None = None  # a raw response body (e.g. broken JSON)
    refusal: str | None = None
    finish_reason: str = "stop"


@dataclass
class Seen:
    """One request as received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    images: list[tuple[int, int]]  # decoded (width, height) of each image part
    problems: list[str]


def _decode_image(url: str) -> tuple[int, int]:
    import cv2

    if not url.startswith("data:image/"):
        raise ValueError(f"image_url is not a data URL: {url[:40]!r}")
    header, b64 = url.split(",", 1)
    if ";base64" not in header:
        raise ValueError("image data URL is not base64")
    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64, validate=True), np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"image part does not decode ({header})")
    return img.shape[1], img.shape[0]


def check_request(body: Any) -> tuple[list[str], list[tuple[int, int]]]:
    """Protocol problems of a chat-completions request body, and the image sizes in it."""
    problems: list[str] = []
    images: list[tuple[int, int]] = []
    if not isinstance(body, dict):
        return ["body is not a JSON object"], images
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model missing")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        problems.append("messages missing or empty")
        msgs = []
    for m in msgs:
        if m.get("role") not in ("system", "user", "assistant"):
            problems.append(f"bad role {m.get('role')!r}")
        content = m.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            problems.append("content is neither a string nor a list of parts")
            continue
        for part in content:
            kind = part.get("type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    problems.append("text part without text")
            elif kind == "image_url":
                try:
                    images.append(_decode_image(part["image_url"]["url"]))
                except (KeyError, TypeError, ValueError) as exc:
                    problems.append(f"bad image part: {exc}")
            else:
                problems.append(f"unknown content part type {kind!r}")
    rf = body.get("response_format")
    if rf is not None and rf.get("type") not in ("json_schema", "json_object", "text"):
        problems.append(f"bad response_format type {rf.get('type')!r}")
    if rf is not None and rf.get("type") == "json_schema" and "schema" not in (rf.get("json_schema") or {}):
        problems.append("json_schema response_format without a schema")
    return problems, images


class StandInServer:
    """The stand-in server on a free loopback port (use as a context manager)."""

    def __init__(self, default: Callable[[Seen], Reply] | None = None, reject_formats: tuple[str, ...] = ()) -> None:
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        self.default = default or (lambda seen: Reply(content=json.dumps({"CamMotion": "The camera holds still.",
                                                                           "SceneDesc": "A plain test scene."})))
        self.reject_formats = reject_formats  # response_format types answered with HTTP 400
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                    problems, images = check_request(body)
                except ValueError:
                    body, problems, images = {}, ["body is not JSON"], []
                if self.path != "/v1/chat/completions":
                    problems.append(f"unexpected path {self.path}")
                seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body, images, problems)
                with server._lock:
                    server.seen.append(seen)
                    reply = server.script.pop(0) if server.script else None
                rf_type = (body.get("response_format") or {}).get("type") if isinstance(body, dict) else None
                if reply is None and rf_type in server.reject_formats:
                    reply = Reply(status=400, error=f"response_format type {rf_type} is not supported")
                if reply is None:
                    reply = server.default(seen)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if problems and reply.status == 200:
                    reply = Reply(status=400, error="; ".join(problems))
                self._send(reply, body, images)

            def _send(self, reply: Reply, body: dict[str, Any], images: list[tuple[int, int]]) -> None:
                if reply.raw is not None:
                    data = reply.raw
                elif reply.status != 200:
                    data = json.dumps({"error": {"message": reply.error or "error", "type": "invalid_request_error",
                                                 "code": reply.status}}).encode()
                else:
                    # about 4 characters a token for text, a fixed 258 tokens an image (Gemini's count)
                    texts = [m.get("content") if isinstance(m.get("content"), str) else
                             " ".join(p.get("text", "") for p in m.get("content") or [] if isinstance(p, dict))
                             for m in body.get("messages", [])]
                    prompt_chars = sum(len(t or "") for t in texts) + 4 * 258 * len(images)
                    data = json.dumps({
                        "id": "chatcmpl-standin", "object": "chat.completion", "created": int(time.time()),
                        "model": body.get("model", ""),
                        "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                                     "message": {"role": "assistant", "content": reply.content,
                                                 "refusal": reply.refusal}}],
                        "usage": {"prompt_tokens": prompt_chars // 4, "completion_tokens": len(reply.content or "") // 4,
                                  "total_tokens": prompt_chars // 4 + len(reply.content or "") // 4},
                    }).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "StandInServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)
