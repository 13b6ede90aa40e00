"""OCR text-area filter (SPEC.md §2): how much of a frame is covered by text.

Per sampled frame (640x360): detect text with the PP-OCR DB detector (PaddleOCR
family; only detection is needed), ratio = total area of the detected text polygons
/ frame area, both measured on that same frame. Clip value: the maximum over the
sampled frames; reject when it is above ``filters.ocr_max`` (0.3).

Fix of the reference (SPEC.md §2): it divides box areas measured on 640x360 frames by
the ORIGINAL frame area, so at 1080p the cut almost never fires. Here the boxes come
back in the coordinates of the frame that was scored and are divided by its area.

Backend: rapidocr 3.10, whose wheel ships ``models/PP-OCRv6_det_small.onnx``; it runs
offline on onnxruntime (the model path is passed explicitly, so rapidocr never tries to
download one). rapidocr_onnxruntime 1.4 also ships a detector (PP-OCRv4) but requires
the GUI ``opencv-python`` and Python < 3.13, so it is not used. The detector's input
size follows PaddleOCR's defaults (longest side capped at 960, both sides rounded to
multiples of 32), so a 640x360 frame is scored at 640x352 rather than upscaled as
rapidocr's own default (shortest side 736) would. Frames of one size are detected in
one onnxruntime call (a batch), then post-processed one by one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

DET_FILE = "models/PP-OCRv6_det_small.onnx"


def polygon_area(poly: np.ndarray) -> float:
    """Area of a simple polygon given as N x 2 points (shoelace formula)."""
    x, y = np.asarray(poly, np.float64).T
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def text_area_ratio(boxes: Sequence[np.ndarray], height: int, width: int) -> float:
    """Total text polygon area / frame area, both in the same frame's pixels."""
    return sum(polygon_area(b) for b in boxes) / float(height * width)


def ocr_passes(ratio: float, hi: float = 0.3) -> tuple[bool, str]:
    """Keep when the text-area ratio <= ``hi``; otherwise the reason."""
    if ratio > hi:
        return False, f"text covers {ratio:.1%} of a frame > {hi:.0%}"
    return True, ""


class RapidOcrDetector:
    """PP-OCR text detection on onnxruntime (CPU), batched over frames of one size."""

    model_id = "rapidocr-ppocrv6-det"
    is_proxy = False
    reduce = "max"
    device = "cpu"

    def __init__(self, model_path: str | Path, version: str, threads: int = 2, limit_side_len: int = 960) -> None:
        from rapidocr import RapidOCR

        self.version = version
        self.engine = RapidOCR(params={
            "Global.use_cls": False, "Global.use_rec": False, "Global.log_level": "error",
            "Det.model_path": str(model_path), "Det.limit_type": "max", "Det.limit_side_len": limit_side_len,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads if threads > 0 else -1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })
        # Load the ONNX graph now, so a bad file stops the stage at start-up.
        self.det = self.engine._load_det_model()
        self.preprocess = self.det.get_preprocess()

    def prepare(self, rgb: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
        """The detector's input for one RGB frame (PaddleOCR models take BGR)."""
        return rgb.shape[:2], self.preprocess(np.ascontiguousarray(rgb[..., ::-1]))

    def boxes(self, prepared: Sequence[tuple[tuple[int, int], np.ndarray]]) -> list[np.ndarray]:
        """Text polygons per prepared frame, in that frame's pixel coordinates."""
        out: list[np.ndarray] = [np.empty((0, 4, 2))] * len(prepared)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, (_, x) in enumerate(prepared):
            by_shape.setdefault(x.shape, []).append(i)
        for idx in by_shape.values():
            pred = self.det.session(np.concatenate([prepared[i][1] for i in idx]))
            for j, i in enumerate(idx):
                found, _ = self.det.postprocess_op(pred[j:j + 1], prepared[i][0])
                out[i] = np.asarray(found, np.float64).reshape(-1, 4, 2)
        return out

    def score(self, prepared: Sequence[tuple[tuple[int, int], np.ndarray]]) -> np.ndarray:
        """Text-area ratio per prepared frame."""
        return np.array([text_area_ratio(b, *p[0]) for b, p in zip(self.boxes(prepared), prepared)], np.float64)

    @staticmethod
    def verdict(value: float, filters: Any) -> tuple[bool, str]:
        return ocr_passes(value, filters.ocr_max)


def build_rapidocr(files: dict[str, Path], version: str = "", threads: int = 2, **_: Any) -> RapidOcrDetector:
    """Registry builder for ``rapidocr-ppocrv6-det``."""
    from spatialvid.models import get_model_spec

    return RapidOcrDetector(files[DET_FILE], version or get_model_spec("rapidocr-ppocrv6-det").version, threads)
