"""The score stage with all four filters: one row per clip, batch independence, start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the LAION backend needs torch (pip install -e '.[models]')")
pytest.importorskip("rapidocr", reason="the OCR backend needs rapidocr (pip install -e '.[models]')")

from spatialvid.config import Config  # noqa: E402
from spatialvid.models import CorruptWeights, MissingWeights  # noqa: E402
from spatialvid.processors.score import ScoreStage  # noqa: E402
from spatialvid.schemas.records import ClipRecord, ScoreRecord  # noqa: E402
from tests.test_aesthetic import write_official_checkpoints  # noqa: E402


def clips_of(sample_videos: dict[str, Path]) -> list[ClipRecord]:
    out = []
    for name, ranges in (("walk", [(0, 48), (48, 96), (96, 144)]), ("dark", [(0, 48)]), ("static", [(24, 72)])):
        for k, (a, b) in enumerate(ranges):
            out.append(ClipRecord(clip_id=f"{name}_{k}", video_id=name, index=k, num_clips=len(ranges),
                                  uri=str(sample_videos[name]), frame_start=a, frame_end=b, timestamp_start=a / 24,
                                  timestamp_end=b / 24, fps=24, width=640, height=360, method="test"))
    return out


def stage_with(cfg: Config, aesthetic: str, weights: Path, batch: int = 32) -> ScoreStage:
    cfg.scoring.aesthetic_backend, cfg.scoring.weights_dir, cfg.scoring.device = aesthetic, str(weights), "cpu"
    cfg.scoring.model_batch = batch
    stage = ScoreStage(cfg)
    stage.setup()
    return stage


def test_one_row_per_clip_with_all_four_filters(sample_videos, tmp_path: Path) -> None:
    write_official_checkpoints(tmp_path)
    stage = stage_with(Config(), "laion-aesthetic-vit-l14", tmp_path)
    clips = clips_of(sample_videos)
    results = stage.process_batch(clips)
    stage.teardown()
    assert [len(r) for r in results] == [1] * len(clips)
    rows: list[ScoreRecord] = [r[0] for r in results]
    for clip, row in zip(clips, rows):
        assert row.clip_id == clip.clip_id
        assert None not in (row.aesthetic, row.aesthetic_pass, row.luminance_mean, row.ocr_ratio, row.ocr_pass,
                            row.motion, row.motion_pass), row
        assert row.aesthetic_proxy is None and row.aesthetic_model == "laion-aesthetic-vit-l14"
        assert row.ocr_model == "rapidocr-ppocrv6-det"
        assert row.model_version == stage.model_version and "clip-vit-l14" in row.model_version
        verdicts = [row.aesthetic_pass, row.luminance_pass, row.ocr_pass, row.motion_pass]
        assert row.passed == all(verdicts) and len(row.reject_reasons) == verdicts.count(False), row
    dark = rows[3]
    assert not dark.luminance_pass and any("too dark" in r for r in dark.reject_reasons)


def test_the_offline_proxy_is_labelled_and_never_stored_as_the_laion_score(sample_videos, tmp_path: Path) -> None:
    cfg = Config()
    stage = stage_with(cfg, "auto", tmp_path / "no-weights-here")  # auto without LAION files: the proxy
    (row,) = stage.process_batch(clips_of(sample_videos)[:1])[0]
    stage.teardown()
    assert row.aesthetic is None and row.aesthetic_proxy is not None
    assert row.aesthetic_model == "brisque-proxy" and row.model_id.startswith("brisque-proxy+")
    assert row.aesthetic_pass == (row.aesthetic_proxy <= cfg.filters.brisque_max)


def test_scores_do_not_depend_on_the_batch_size(sample_videos, tmp_path: Path) -> None:
    """The same clips scored one per micro-batch (model batch 1) and 32 per micro-batch (model batch 32)."""
    write_official_checkpoints(tmp_path)
    clips = clips_of(sample_videos)
    many = (clips * 7)[:32]
    big = stage_with(Config(), "laion-aesthetic-vit-l14", tmp_path, batch=32)
    batched = [r[0] for r in big.process_batch(many)]
    big.teardown()
    small = stage_with(Config(), "laion-aesthetic-vit-l14", tmp_path, batch=1)
    alone = {c.clip_id: small.process_batch([c])[0][0] for c in clips}
    small.teardown()
    for row in batched:
        ref = alone[row.clip_id]
        for col in ("aesthetic", "ocr_ratio", "luminance_mean", "motion"):
            assert getattr(row, col) == pytest.approx(getattr(ref, col), rel=1e-5, abs=1e-6), f"{row.clip_id} {col}"
        assert (row.passed, row.reject_reasons) == (ref.passed, ref.reject_reasons), row.clip_id


def test_missing_or_corrupt_weights_stop_the_stage_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(MissingWeights, match="ViT-L-14.pt"):
        stage_with(Config(), "laion-aesthetic-vit-l14", tmp_path)
    write_official_checkpoints(tmp_path)
    (tmp_path / "ViT-L-14.pt").write_bytes((tmp_path / "ViT-L-14.pt").read_bytes()[:5000])  # truncated
    with pytest.raises(CorruptWeights, match="ViT-L-14.pt"):
        stage_with(Config(), "laion-aesthetic-vit-l14", tmp_path)


def test_a_filter_can_be_switched_off(sample_videos, tmp_path: Path) -> None:
    cfg = Config()
    cfg.scoring.ocr_backend = "none"
    stage = stage_with(cfg, "none", tmp_path)
    (row,) = stage.process_batch(clips_of(sample_videos)[:1])[0]
    stage.teardown()
    assert (row.aesthetic, row.aesthetic_proxy, row.aesthetic_pass, row.ocr_ratio, row.ocr_pass) == (None,) * 5
    assert row.model_id == "luminance+vmaf-motion"


def test_decoding_in_worker_processes_gives_the_same_rows(sample_videos, tmp_path: Path) -> None:
    """scoring.decode_processes: the same rows, in the same order, as decoding on threads."""
    write_official_checkpoints(tmp_path)
    clips = clips_of(sample_videos)[:3]
    threads = stage_with(Config(), "laion-aesthetic-vit-l14", tmp_path)
    expected = [r[0] for r in threads.process_batch(clips)]
    threads.teardown()
    cfg = Config()
    cfg.scoring.decode_processes = True
    procs = stage_with(cfg, "laion-aesthetic-vit-l14", tmp_path)
    got = [r[0] for r in procs.process_batch(clips)]
    procs.teardown()
    assert [r.clip_id for r in got] == [c.clip_id for c in clips]
    _rows_equal(got, expected, 1e-5, 1e-6)


def _rows_equal(got: list[ScoreRecord], expected: list[ScoreRecord], rel: float, abs_: float) -> None:
    assert [r.clip_id for r in got] == [r.clip_id for r in expected]
    for a, b in zip(got, expected):
        da, db = a.model_dump(exclude={"scored_at"}), b.model_dump(exclude={"scored_at"})
        assert da.keys() == db.keys()
        for k in da:  # model batches may be composed differently: floats within the batch tolerance
            want = pytest.approx(db[k], rel=rel, abs=abs_) if isinstance(db[k], float) else db[k]
            assert da[k] == want, (a.clip_id, k)


def test_model_inputs_made_from_the_uploaded_frames_give_the_same_rows(sample_videos, tmp_path: Path) -> None:
    """The CUDA path's input route (the workers send the sampled frames; CLIP's crop and the
    detector's resize are made by torch: scorers/resample.py), here on the CPU."""
    pytest.importorskip("onnx", reason="the torch detector reads the ONNX graph with the onnx package")
    from spatialvid.models import get_model

    write_official_checkpoints(tmp_path)
    clips = clips_of(sample_videos)
    rows = {}
    for on_device in (False, True):
        stage = ScoreStage(Config())
        sc = stage.cfg.scoring
        sc.aesthetic_backend, sc.weights_dir, sc.device = "laion-aesthetic-vit-l14", str(tmp_path), "cpu"
        stage.setup()
        # the detector on torch's CPU path (on the CPU the stage loads onnxruntime's, which
        # has no device inputs): both runs use it
        stage.ocr = get_model("rapidocr-ppocrv6-det", device="torch-cpu", post_processes=0)
        stage._device_inputs = on_device
        rows[on_device] = [r[0] for r in stage.process_batch(clips)]
        stage.teardown()
    _rows_equal(rows[True], rows[False], 1e-6, 1e-7)


def test_cuda_stage_makes_the_model_inputs_on_the_gpu_with_the_same_rows(sample_videos, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here; bench/device_score.sh runs this on the GPU host")
    write_official_checkpoints(tmp_path)
    clips = clips_of(sample_videos)
    rows = {}
    for on_device in (False, None):
        cfg = Config()
        cfg.scoring.aesthetic_backend, cfg.scoring.weights_dir, cfg.scoring.device = (
            "laion-aesthetic-vit-l14", str(tmp_path), "cuda")
        cfg.scoring.decode_processes = True
        stage = ScoreStage(cfg)
        stage.device_inputs = on_device
        stage.setup()
        assert stage._device_inputs == (on_device is None)
        rows[on_device] = [r[0] for r in stage.process_batch(clips)]
        stage.teardown()
    _rows_equal(rows[None], rows[False], 1e-3, 1e-3)  # fp16 networks: batch composition moves ~1e-4
