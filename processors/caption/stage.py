"""Stage ``caption``: annotations -> captions (SPEC.md §5; issue 7).

Consumes :class:`AnnotationRecord` (topic ``annotations``), emits one
:class:`CaptionRecord` per successfully annotated clip (topic ``captions``, table
``clip_captions``) and writes the released ``caption.json`` beside the clip's other
annotation files. A clip whose annotation failed (``success`` false) has no geometry to
ground a caption in and is skipped. A clip whose captioning fails (the server's error
after the retries, answers that never become valid, missing artifacts) becomes a dead
letter carrying that reason; the stage carries on with the rest of the batch.

The work is almost all waiting on the model servers, so a worker keeps
``caption.concurrency`` clips in flight on threads (the HTTP client bounds the requests
per server to the same number).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from spatialvid.runtime import Resources, Result, Stage, register_stage
from spatialvid.schemas.records import AnnotationRecord, CaptionRecord

from .captioner import Captioner, ClipRef
from .export import caption_json

log = logging.getLogger(__name__)


class WarehouseClips:
    """Clip id -> where its frames are, from the warehouse's ``clips`` table (cached)."""

    def __init__(self, cfg) -> None:  # type: ignore[no-untyped-def]
        self.cfg = cfg
        self._cache: dict[str, ClipRef] = {}
        self._lock = threading.Lock()

    def __call__(self, clip_id: str) -> ClipRef:
        with self._lock:
            if clip_id in self._cache:
                return self._cache[clip_id]
        from spatialvid.warehouse import query

        out = query(self.cfg, "SELECT uri, frame_start, frame_end, fps FROM clips WHERE clip_id = {c:String} LIMIT 1",
                    {"c": clip_id})
        if not out["rows"]:
            raise LookupError(f"clip {clip_id} is not in the warehouse's clips table; the vision step needs its video")
        uri, start, end, fps = out["rows"][0]
        ref = ClipRef(str(uri), int(start), int(end), float(fps))
        with self._lock:
            self._cache[clip_id] = ref
        return ref


@register_stage
class CaptionStage(Stage[AnnotationRecord]):
    """Captions and category tags of annotated clips, grounded in their camera geometry."""

    name = "caption"
    input = AnnotationRecord
    outputs = (CaptionRecord,)
    resources = Resources(cpus=0.5)

    def setup(self) -> None:
        self.captioner = Captioner(self.cfg.caption, clip_resolver=WarehouseClips(self.cfg))
        # offline is a warning: the run's captions then hold no scene text, and the log should say so
        log.log(logging.WARNING if self.captioner.mode == "offline" else logging.INFO, self.captioner.describe())
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.cfg.caption.concurrency), thread_name_prefix="caption")

    def teardown(self) -> None:
        self._pool.shutdown()
        self.captioner.close()

    def process_batch(self, items: Sequence[AnnotationRecord]) -> list[Result]:
        return list(self._pool.map(self.caption_or_error, items))

    def caption_or_error(self, ann: AnnotationRecord) -> Result:
        """The clip's caption record (and caption.json), [] for a failed annotation, or
        the exception that becomes its dead letter."""
        if not ann.success:
            log.info("caption: skipping %s: its annotation failed, no geometry to ground a caption", ann.clip_id)
            return []
        try:
            rec = self.captioner.caption(ann)
            if self.cfg.caption.write_caption_json and ann.artifacts_uri:
                from spatialvid.sinks.release import write_caption_json

                write_caption_json(ann.artifacts_uri, caption_json(rec))
            return [rec]
        except Exception as exc:  # one clip's failure must not stop the others: a dead letter with the reason
            log.warning("caption: %s failed: %s: %s", ann.clip_id, type(exc).__name__, exc)
            return exc
