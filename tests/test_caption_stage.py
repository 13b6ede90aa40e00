"""The `caption` stage as a real `spatialvid process caption` worker: annotation records in
(real broker), caption rows out in `clip_captions` (real chDB through the real sink),
caption.json beside the annotations, failures as dead letters with the server's error."""

from __future__ import annotations

import json
import signal
from pathlib import Path


from spatialvid.config import Config
from spatialvid.kafka import RecordProducer
from spatialvid.pipeline import spawn_stage
from spatialvid.processors.caption.export import CAPTION_KEYS
from spatialvid.schemas.records import AnnotationRecord

from .caption_data import annotated_clip
from .caption_standin import Reply, Seen, StandInServer
from .conftest import SinkThread, wait_for


def count(client, sql: str) -> int:  # type: ignore[no-untyped-def]
    return int(client.query(sql).result_rows[0][0])


def run_caption_stage(cfg: Config, warehouse, tmp_path: Path, records: list[AnnotationRecord], raw: list[bytes],  # type: ignore[no-untyped-def]
                      rows: int, dead: int) -> None:
    db = cfg.warehouse.database
    worker = spawn_stage(cfg, "caption", tmp_path / "logs")
    try:
        with SinkThread(cfg, warehouse):
            producer = RecordProducer(cfg)
            for r in records:
                producer.send(r)
            for value in raw:
                producer.send_raw("annotations", b"broken", value)
            producer.flush()
            wait_for(lambda: count(warehouse, f"SELECT count() FROM {db}.clip_captions") >= rows
                     and count(warehouse, f"SELECT count() FROM {db}.deadletters WHERE stage = 'caption'") >= dead,
                     90, f"{rows} caption rows and {dead} caption dead letters")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, (tmp_path / "logs" / "caption.log").read_text()[-2000:]


def test_offline_captions_flow_into_clip_captions(cfg: Config, warehouse, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = cfg.warehouse.database
    art = tmp_path / "annotations"
    anns = [annotated_clip(art, f"v_{m}", m) for m in ("left", "forward", "static")]
    failed = AnnotationRecord(clip_id="v_failed", video_id="v", model_id="test-path", model_version="1", success=False)
    run_caption_stage(cfg, warehouse, tmp_path, anns + [failed], [b'{"clip_id": "no other fields"}'], rows=3, dead=1)

    got = warehouse.query(
        f"SELECT clip_id, opt_cam_motion, opt_cam_motion_words, scene_desc, scene_desc_words, caption_mode, "
        f"vision_generated, refine_generated, tags_generated, geometry_check_passed, motion_trends, lighting "
        f"FROM {db}.clip_captions ORDER BY clip_id").result_rows
    assert [r[0] for r in got] == ["v_forward", "v_left", "v_static"], "one row per annotated clip, none for the failure"
    for clip_id, text, words, desc, desc_words, mode, vis, ref, tags, ok, trends, lighting in got:
        assert words == len(text.split()) > 5, (clip_id, text)
        assert (desc, desc_words, mode, vis, ref, tags, lighting) == ("", 0, "offline", False, False, False, "Unknown")
        assert ok is True, clip_id
    assert "moves to the left" in got[1][1] and got[1][10] == ["left translate"]
    (dl,) = warehouse.query(f"SELECT error_class, error_message FROM {db}.deadletters WHERE stage = 'caption'").result_rows
    assert dl[0] == "MalformedRecord" and "missing fields" in dl[1]
    for a in anns:  # the released caption.json, beside the other annotation files
        cj = json.loads((Path(a.artifacts_uri) / "caption.json").read_text())
        assert tuple(cj) == CAPTION_KEYS and cj["OptCamMotion"] and cj["SceneDesc"] == "" and cj["LLM"] == ""


def flaky_llm(seen: Seen) -> Reply:
    """A remote language model that is overloaded for one clip and talks nonsense for another."""
    prompt = seen.body["messages"][0]["content"]
    lines = {ln[0]: [int(v) for v in ln[2:].split()] for ln in prompt.splitlines() if ln[:2] in ("x:", "y:", "z:")}
    if not any(v for vs in lines.values() for v in vs):  # the static clip
        return Reply(status=503, error="upstream overloaded")
    if min(lines["z"]) < 0:  # the clip moving backward
        return Reply(content="Sorry, as a language model I prefer prose.")
    direction = "left" if min(lines["x"]) < 0 else "forward"
    return Reply(content=json.dumps({"OptCamMotion": f"The camera moves steadily {direction}.",
                                     "MotionTrends": [f"{direction} translate"]}))


def test_api_failures_become_dead_letters_and_the_stage_goes_on(cfg: Config, warehouse, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = cfg.warehouse.database
    art = tmp_path / "annotations"
    anns = [annotated_clip(art, f"v_{m}", m) for m in ("left", "static", "backward", "forward")]
    with StandInServer(default=flaky_llm) as srv:
        cfg.caption.llm_base_url = srv.base_url
        cfg.caption.llm_model = "remote-llm"
        cfg.caption.max_retries = 1
        cfg.caption.backoff_s = 0.01
        cfg.caption.answer_retries = 1
        run_caption_stage(cfg, warehouse, tmp_path, anns, [], rows=2, dead=2)
    got = dict(warehouse.query(f"SELECT clip_id, opt_cam_motion FROM {db}.clip_captions").result_rows)
    assert got == {"v_left": "The camera moves steadily left.", "v_forward": "The camera moves steadily forward."}
    modes = warehouse.query(f"SELECT DISTINCT caption_mode, refine_generated, llm, api_requests FROM {db}.clip_captions").result_rows
    assert modes == [("llm", True, "remote-llm", 1)]
    dls = dict(warehouse.query(f"SELECT source_key, error_class || ': ' || error_message FROM {db}.deadletters "
                               f"WHERE stage = 'caption'").result_rows)
    assert set(dls) == {"v_static", "v_backward"}
    assert dls["v_static"].startswith("APIError: HTTP 503") and "upstream overloaded" in dls["v_static"], dls
    assert dls["v_backward"].startswith("AnswerError:") and "no JSON object in the answer" in dls["v_backward"], dls
