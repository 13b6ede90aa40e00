"""The optional PaddleOCR backend of the OCR filter (``paddleocr-det``).

paddlepaddle + paddleocr are not installed here (paddlepaddle's CPU wheel unpacks to
~720 MB; paddleocr 3.7's paddlex pins numpy<2.4 and opencv-contrib-python==4.10, below
the project's), and PP-OCR models cannot be downloaded. What is tested: the registry
record, the start-up errors, selection through the config, and the adapter itself with a
stand-in ``paddleocr`` module whose ``TextDetection`` has PaddleOCR 3's call shape
(``TextDetection(model_name=, model_dir=, ...)``, ``.predict(list of BGR arrays,
batch_size=)`` -> results with ``dt_polys``) and runs the same PP-OCR DB detector through
rapidocr, on a model folder laid out as PaddleOCR's. Paddle's own inference is not run.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spatialvid.config import FilterConfig, load_config
from spatialvid.models import MissingPackage, MissingWeights, get_model, get_model_spec, list_models
from spatialvid.processors.scorers.ocr import text_area_ratio
from spatialvid.processors.scorers.ocr_paddle import PaddleOcrDetector, model_name_of, paddle_device

INFERENCE_YML = """\
Global:
  model_name: PP-OCRv5_mobile_det
Hpi:
  backend_configs:
    paddle_infer:
      trt_dynamic_shapes: {x: [[1, 3, 32, 32], [1, 3, 736, 736], [1, 3, 4000, 4000]]}
PreProcess:
  transform_ops:
  - DecodeImage: {channel_first: false, img_mode: BGR}
  - DetResizeForTest: {resize_long: 960}
PostProcess:
  name: DBPostProcess
  thresh: 0.3
  box_thresh: 0.6
  unclip_ratio: 1.5
"""


def model_folder(weights_dir: Path, yml: str = INFERENCE_YML) -> Path:
    """A folder laid out as an official PaddleOCR 3 detector (the files' contents are stand-ins)."""
    d = weights_dir / "paddleocr-det"
    d.mkdir(parents=True)
    (d / "inference.json").write_text("{}")
    (d / "inference.pdiparams").write_bytes(b"\0" * 64)
    (d / "inference.yml").write_text(yml)
    return d


class FakeTextDetection:
    """PaddleOCR 3's TextDetection call shape; detection by rapidocr's PP-OCR detector."""

    made: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        type(self).made.append(kwargs)
        if not (Path(kwargs["model_dir"]) / "inference.pdiparams").is_file():
            raise FileNotFoundError(kwargs["model_dir"])
        self.det = get_model("rapidocr-ppocrv6-det", threads=1, device="cpu")
        self.calls: list[tuple[int, int]] = []

    def predict(self, input: list[np.ndarray], batch_size: int = 1) -> list[dict[str, Any]]:
        self.calls.append((len(input), batch_size))
        out = []
        for bgr in input:
            assert bgr.dtype == np.uint8 and bgr.ndim == 3
            (polys,) = self.det.boxes([self.det.prepare(np.ascontiguousarray(bgr[..., ::-1]))])
            out.append({"input_img": bgr, "dt_polys": polys.astype(np.int16), "dt_scores": [0.9] * len(polys)})
        return out


@pytest.fixture
def fake_paddleocr(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Stand-ins for the ``paddleocr`` (3.x API) and ``paddle`` modules."""
    mods = {}
    for name in ("paddleocr", "paddle"):
        m = types.ModuleType(name)
        m.__spec__ = importlib.machinery.ModuleSpec(name, None)
        m.__version__ = "3.7.0-fake"
        monkeypatch.setitem(sys.modules, name, m)
        mods[name] = m
    mods["paddleocr"].TextDetection = FakeTextDetection  # type: ignore[attr-defined]
    FakeTextDetection.made = []
    return mods["paddleocr"]


def frame_with_text(seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(60, 160, (360, 640, 3), dtype=np.uint8), (0, 0), 3)
    cv2.rectangle(img, (10, 20), (420, 80), (20, 20, 20), -1)
    cv2.putText(img, "BREAKING NEWS", (16, 68), cv2.FONT_HERSHEY_DUPLEX, 1.6, (255, 255, 255), 3, cv2.LINE_AA)
    return img


def test_registered_with_its_weights_record() -> None:
    spec = get_model_spec("paddleocr-det")
    assert spec.task == "ocr" and spec.weights.license == "Apache-2.0"
    assert [f.filename for f in spec.weights.files] == [
        "paddleocr-det/inference.json", "paddleocr-det/inference.pdiparams", "paddleocr-det/inference.yml"]
    assert all(f.url.startswith("https://huggingface.co/PaddlePaddle/PP-OCRv5_mobile_det/") for f in spec.weights.files)
    assert "PP-OCRv5_server_det" in spec.weights.source and "PP-OCRv4_mobile_det" in spec.weights.source
    assert set(spec.requires) == {"paddleocr", "paddle"}
    assert "paddleocr-det" in [s.name for s in list_models("ocr")]


def test_without_paddleocr_start_up_fails_naming_what_to_install(tmp_path: Path) -> None:
    if importlib.util.find_spec("paddleocr") is not None:
        pytest.skip("paddleocr is installed here")
    model_folder(tmp_path)
    with pytest.raises(MissingPackage, match=r"'paddleocr' is not installed \(pip install paddlepaddle \"paddleocr>=3\""):
        get_model("paddleocr-det", tmp_path)


def test_a_missing_model_folder_names_the_files_and_fetch(fake_paddleocr: types.ModuleType, tmp_path: Path) -> None:
    with pytest.raises(MissingWeights) as err:
        get_model("paddleocr-det", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "paddleocr-det" / "inference.pdiparams") in msg
    assert "spatialvid models fetch paddleocr-det" in msg


def test_paddleocr_2_is_refused_with_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                     fake_paddleocr: types.ModuleType, tmp_path: Path) -> None:
    monkeypatch.delattr(fake_paddleocr, "TextDetection")
    with pytest.raises(ImportError, match=r"PaddleOCR 2\.x.*paddleocr>=3"):
        PaddleOcrDetector(model_folder(tmp_path), "v")


def test_model_name_comes_from_the_folder(tmp_path: Path) -> None:
    d = model_folder(tmp_path, INFERENCE_YML.replace("PP-OCRv5_mobile_det", "'PP-OCRv4_mobile_det'  # name"))
    assert model_name_of(d) == "PP-OCRv4_mobile_det"
    (d / "inference.yml").write_text("PostProcess:\n  model_name: not-this\n")
    assert model_name_of(d) == ""
    assert paddle_device("auto") is None and paddle_device("cuda:1") == "gpu:1" and paddle_device("cpu") == "cpu"


def test_selected_by_the_config_and_built_on_the_local_folder(fake_paddleocr: types.ModuleType, tmp_path: Path) -> None:
    from spatialvid.processors.score import load_scorers

    folder = model_folder(tmp_path)
    cfg = load_config(env={"SPATIALVID_SCORING__OCR_BACKEND": "paddleocr-det",
                           "SPATIALVID_SCORING__AESTHETIC_BACKEND": "none",
                           "SPATIALVID_SCORING__WEIGHTS_DIR": str(tmp_path),
                           "SPATIALVID_SCORING__DEVICE": "cpu"})
    aesthetic, ocr = load_scorers(cfg)
    assert aesthetic is None and isinstance(ocr, PaddleOcrDetector)
    (made,) = FakeTextDetection.made
    assert made["model_dir"] == str(folder) and made["model_name"] == "PP-OCRv5_mobile_det"
    assert made["device"] == "cpu" and made["limit_type"] == "max" and made["limit_side_len"] == 960
    assert ocr.model_id == "paddleocr-det"
    assert ocr.version == "paddleocr-ppocr-det:PP-OCRv5_mobile_det@paddleocr-3.7.0-fake"


def test_ratio_is_the_rapidocr_backends(fake_paddleocr: types.ModuleType, tmp_path: Path) -> None:
    """Same polygons in, same ratio out: the adapter's colour order, polygon format and
    frame size are right, and the ratio is :func:`text_area_ratio` of the scored frame."""
    model_folder(tmp_path)
    paddle = get_model("paddleocr-det", tmp_path, device="cpu", batch_size=2)
    rapid = get_model("rapidocr-ppocrv6-det", threads=1, device="cpu")
    text, plain = frame_with_text(0), frame_with_text(1)
    plain[:] = plain.mean(axis=(0, 1)).astype(np.uint8)  # no text at all
    frames = [text, plain, text[:180, :320].copy()]  # two sizes: two predict calls
    prepared = [paddle.prepare(f) for f in frames]
    ratios = paddle.score(prepared)
    reference = rapid.score([rapid.prepare(f) for f in frames])
    assert ratios == pytest.approx(reference, abs=2e-3)  # the fake rounds the polygons to integers
    assert ratios[0] > 0.05 and ratios[1] == 0.0
    assert sorted(paddle.engine.calls) == [(1, 2), (2, 2)]
    boxes = paddle.boxes(prepared)
    assert ratios[0] == text_area_ratio(boxes[0], 360, 640)
    assert paddle.verdict(0.31, FilterConfig())[0] is False and paddle.verdict(ratios[0], FilterConfig())[0] is True
    assert paddle.preparer()(text)[1].tobytes() == text[..., ::-1].tobytes(), "BGR, as PaddleOCR takes arrays"
