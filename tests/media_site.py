"""A small local video site for the crawl tests: real HTTP, real video files, pages that
yt-dlp's generic extractor reads (schema.org VideoObject JSON-LD), an RSS feed as the
playlist, and a count of every request, so a test can tell what was downloaded.

Range requests are served (yt-dlp resumes ``.part`` files with them).
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


import av
import numpy as np


def make_video(path: Path, width: int, height: int, seconds: float = 1.5, fps: int = 24,
               codec: str = "libx264", pix_fmt: str = "yuv420p", fmt: str | None = None) -> Path:
    """A short real video: a panning gradient with a moving block (cheap to encode)."""
    n = max(1, int(seconds * fps))
    yy, xx = np.mgrid[0:height, 0:width]
    base = ((xx * 3 + yy * 2) % 256).astype(np.uint8)
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            s.options = {"preset": "ultrafast"}
        for i in range(n):
            g = np.roll(base, 4 * i, axis=1)
            img = np.stack([g, np.roll(g, 40, axis=0), 255 - g], axis=-1)
            b = min(width, height) // 4
            x = (i * 7) % max(1, width - b)
            img[:b, x:x + b] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@dataclass
class Item:
    """One video on the site: its page, its file and the metadata its page declares."""

    slug: str
    title: str
    file: Path
    width: int
    height: int
    duration_s: float
    uploader: str = "Local Uploader"
    upload_date: str = "2024-05-01"


class MediaSite:
    """``/feed.xml`` (RSS of every page), ``/v/<slug>.html`` (a JSON-LD video page) and
    ``/media/<slug>.mp4`` (the file). ``gets[path]`` counts the GET requests per path."""

    def __init__(self, items: list[Item]) -> None:
        self.items = {i.slug: i for i in items}
        self.gets: Counter[str] = Counter()
        self.ranges: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802
                self._serve(head=True)

            def do_GET(self) -> None:  # noqa: N802
                site.gets[self.path.split("?")[0]] += 1
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                body, ctype = site.resource(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                start, end, status = 0, len(body), 200
                rng = self.headers.get("Range")
                m = re.match(r"bytes=(\d+)-(\d*)", rng or "")
                if m and not head:
                    site.ranges.append(f"{self.path} {rng}")
                    start = int(m.group(1))
                    end = int(m.group(2)) + 1 if m.group(2) else len(body)
                    status = 206
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(end - start))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")
                self.end_headers()
                if not head:
                    self.wfile.write(body[start:end])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def page_url(self, slug: str) -> str:
        return f"{self.base}/v/{slug}.html"

    def media_path(self, slug: str) -> str:
        return f"/media/{slug}.mp4"

    def resource(self, path: str) -> tuple[bytes | None, str]:
        if path == "/feed.xml":
            return self.feed().encode(), "application/rss+xml"
        m = re.fullmatch(r"/v/(.+)\.html", path)
        if m and m.group(1) in self.items:
            return self.page(self.items[m.group(1)]).encode(), "text/html; charset=utf-8"
        m = re.fullmatch(r"/media/(.+)\.mp4", path)
        if m and m.group(1) in self.items:
            return self.items[m.group(1)].file.read_bytes(), "video/mp4"
        return None, ""

    def page(self, it: Item) -> str:
        seconds = int(round(it.duration_s))
        ld = {"@context": "https://schema.org", "@type": "VideoObject", "name": it.title,
              "contentUrl": self.base + self.media_path(it.slug), "encodingFormat": "video/mp4",
              "duration": f"PT{seconds // 3600}H{seconds % 3600 // 60}M{seconds % 60}S",
              "uploadDate": it.upload_date, "author": {"@type": "Person", "name": it.uploader},
              "width": it.width, "height": it.height}
        # "</" must not close the script element early (a hostile title could try).
        blob = json.dumps(ld).replace("</", "<\\/")
        return (f"<!doctype html><html><head><title>{html.escape(it.title)}</title>"
                f'<script type="application/ld+json">{blob}</script></head>'
                f"<body><h1>{html.escape(it.title)}</h1></body></html>")

    def feed(self) -> str:
        items = "".join(
            f"<item><title>{html.escape(it.title)}</title><link>{html.escape(self.page_url(it.slug))}</link>"
            f"<guid>{html.escape(it.slug)}</guid></item>" for it in self.items.values())
        return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Local channel</title>'
                f"<link>{self.base}/</link><description>test</description>{items}</channel></rss>")

    def media_gets(self) -> dict[str, int]:
        return {p: n for p, n in self.gets.items() if p.startswith("/media/")}

    def __enter__(self) -> "MediaSite":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


