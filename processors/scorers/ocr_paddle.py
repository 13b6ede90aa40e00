"""Optional PaddleOCR backend of the OCR text-area filter (SPEC.md §2), registry name ``paddleocr-det``.

Runs YOUR PaddleOCR 3.x installation (``paddleocr`` + ``paddlepaddle``, not dependencies of
this project: paddlepaddle's CPU wheel unpacks to about 720 MB, and paddleocr 3.7 pulls
paddlex, which pins numpy<2.4, PyYAML==6.0.2 and opencv-contrib-python==4.10) on a
LOCAL detector model folder, ``<scoring.weights_dir>/paddleocr-det/``: an official PP-OCR
text-detection inference model (``inference.json`` or ``inference.pdmodel``,
``inference.pdiparams``, ``inference.yml``), e.g. PP-OCRv5_mobile_det (what
``spatialvid models fetch paddleocr-det`` downloads), PP-OCRv5_server_det or
PP-OCRv4_mobile_det: copy or symlink the folder there. The model name is read from its
``inference.yml``; nothing is downloaded at run time (the model-hoster check is switched
off). Select it with ``scoring.ocr_backend = "paddleocr-det"``.

Only detection runs. The ratio is the rapidocr backend's (:func:`.ocr.text_area_ratio`:
text polygon area / frame area, both in the scored frame's pixels), the verdict its
:func:`.ocr.ocr_passes`; PaddleOCR returns the polygons in the input frame's coordinates.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from .ocr import ocr_passes, shape_batches, text_area_ratio

MODEL_DIR = "paddleocr-det"
PARAMS_FILE = f"{MODEL_DIR}/inference.pdiparams"
INSTALL = ('pip install paddlepaddle "paddleocr>=3" (GPU: paddlepaddle-gpu from paddlepaddle.org.cn); '
           "they are not dependencies of spatialvid-stream")


def paddle_input(rgb: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    """(frame size, the BGR frame PaddleOCR takes for an array input)."""
    return rgb.shape[:2], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def model_name_of(model_dir: Path) -> str:
    """``Global.model_name`` of a PaddleX-format model folder's ``inference.yml`` ("" if none)."""
    yml = model_dir / "inference.yml"
    if not yml.is_file():
        return ""
    # One key is needed; a line scan avoids requiring PyYAML's exact version here.
    in_global = False
    for line in yml.read_text(encoding="utf-8", errors="replace").splitlines():
        if re.match(r"^Global:\s*$", line):
            in_global = True
        elif in_global and (m := re.match(r"^\s+model_name:\s*['\"]?([^'\"#\s]+)", line)):
            return m.group(1)
        elif line and not line[0].isspace():
            in_global = False
    return ""


def paddle_device(device: str) -> str | None:
    """The project's device setting in PaddleOCR's words (``None``: PaddleOCR chooses)."""
    if device in ("", "auto"):
        return None
    if device.startswith("cuda"):
        return "gpu" + device[4:]
    return device


class PaddleOcrDetector:
    """PP-OCR text detection by PaddleOCR 3.x (``paddleocr.TextDetection``) on a local model folder."""

    model_id = "paddleocr-det"
    is_proxy = False
    reduce = "max"

    def __init__(self, model_dir: str | Path, version: str, device: str = "auto", threads: int = 2,
                 batch_size: int = 32, limit_side_len: int = 960, model_name: str = "") -> None:
        os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")  # offline: no hoster probe
        try:
            import paddleocr
        except ImportError as exc:
            raise ImportError(f"the paddleocr-det backend needs PaddleOCR: {INSTALL}") from exc
        if not hasattr(paddleocr, "TextDetection"):
            raise ImportError(f"paddleocr {getattr(paddleocr, '__version__', '?')} has no TextDetection "
                              f"(PaddleOCR 2.x); the paddleocr-det backend needs PaddleOCR 3: {INSTALL}")
        self.model_dir = Path(model_dir)
        self.model_name = model_name or model_name_of(self.model_dir)
        if not self.model_name:
            raise ValueError(f"{self.model_dir}: no Global.model_name in inference.yml; pass model_name "
                             "(e.g. PP-OCRv5_mobile_det) or use an official PP-OCR detector folder")
        self.device = device
        self.batch_size = max(1, batch_size)
        args: dict[str, Any] = {"model_name": self.model_name, "model_dir": str(self.model_dir),
                                "limit_side_len": limit_side_len, "limit_type": "max"}
        if (dev := paddle_device(device)) is not None:
            args["device"] = dev
        if threads > 0:
            args["cpu_threads"] = threads
        # Loads the model now, so a bad folder stops the stage at start-up.
        self.engine = paddleocr.TextDetection(**args)
        self.version = f"{version}:{self.model_name}@paddleocr-{getattr(paddleocr, '__version__', '?')}"

    def prepare(self, rgb: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
        return paddle_input(rgb)

    def preparer(self) -> Callable[[np.ndarray], tuple[tuple[int, int], np.ndarray]]:
        """:meth:`prepare` as a picklable function (for decode worker processes)."""
        return paddle_input

    def boxes(self, prepared: Sequence[tuple[tuple[int, int], np.ndarray]]) -> list[list[np.ndarray]]:
        """Text polygons (each N x 2) per prepared frame, in that frame's pixel coordinates;
        frames of one size go through PaddleOCR together, ``batch_size`` at a time."""
        out: list[list[np.ndarray]] = [[] for _ in prepared]
        for idx in shape_batches(prepared, 0):  # PaddleOCR batches each shape itself
            results = self.engine.predict([prepared[i][1] for i in idx], batch_size=self.batch_size)
            for i, res in zip(idx, results, strict=True):
                out[i] = [np.asarray(p, np.float64).reshape(-1, 2) for p in res["dt_polys"]]
        return out

    def score(self, prepared: Sequence[tuple[tuple[int, int], np.ndarray]]) -> np.ndarray:
        """Text-area ratio per prepared frame (the rapidocr backend's ratio)."""
        return np.array([text_area_ratio(b, *p[0]) for b, p in zip(self.boxes(prepared), prepared)], np.float64)

    @staticmethod
    def verdict(value: float, filters: Any) -> tuple[bool, str]:
        return ocr_passes(value, filters.ocr_max)


def build_paddleocr(files: dict[str, Path], version: str = "", device: str = "auto", threads: int = 2,
                    batch_size: int = 32, model_name: str = "", **_: Any) -> PaddleOcrDetector:
    """Registry builder for ``paddleocr-det``: the folder that holds the declared files."""
    from spatialvid.models import get_model_spec

    version = version or get_model_spec("paddleocr-det").version
    return PaddleOcrDetector(files[PARAMS_FILE].parent, version, device, threads, batch_size, model_name=model_name)
