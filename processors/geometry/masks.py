"""Dynamic masks (SPEC.md §3): what moves in the world, not just in the image.

1. **Motion probability** (:func:`motion_probability`): dense optical flow (OpenCV DIS)
   between an annotated frame and its neighbour, checked against the camera motion the
   backend estimated. A static point must land on its epipolar line
   (``F = K2^-T [t]x R K1^-1``); the Sampson distance ``r`` of the flow end point from
   that line is the residual, and ``p = r^2 / (r^2 + sigma^2)`` maps it to [0, 1]
   (``sigma``: ``mask_flow_sigma_px`` at 640 pixels wide, scaled with the frame). When
   the camera barely translates, the homography of the rotation ``K2 R K1^-1`` predicts
   the flow of every static point instead. Pixels whose flow leaves the frame or fails
   the forward-backward check (occlusions, uncovered background) get probability 0.
   Motion along an epipolar line is invisible
   to this test (a known limit of any two-view residual without depth); a backend that
   gives dense depth can supply its own map (``GeometryResult.motion_prob``).
2. **Regions** (:func:`mask_from_probability`), as the reference: threshold
   ``min + 0.4 (max - min)``; an empty mask when the threshold exceeds ``max - 0.1``;
   candidate regions are the outer contours of the thresholded map; ``mask_prompts``
   evenly spaced points of each contour prompt SAM2 when a refiner is given, else the
   filled contour is the region; regions over 30 % of the frame are dropped; sky regions
   are skipped; the rest are OR-ed.
   Sky: the reference asks SAM2's caller to skip sky; with no semantic model here a
   region is taken as sky when it touches the top edge and the image inside it is
   nearly flat (mean gradient under 2 grey levels per pixel): a heuristic, stated.
3. **Refiners**: :class:`Sam2Refiner` (the ``sam2`` package with a local checkpoint and
   config, GPU machine), and :class:`PersonSegmenter` (mediapipe's selfie/person
   segmentation, offline, the model ships in the wheel) whose person pixels are OR-ed
   in as a fallback when SAM2 is absent.

dynamicRatio is ``metrics.dynamic_ratio`` over the masks (every 5th frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from .poses import intrinsics_matrix, poses7_to_w2c

__all__ = [
    "MaskConfig",
    "flow",
    "motion_probability",
    "mask_from_probability",
    "dynamic_masks",
    "Refiner",
    "Sam2Refiner",
    "PersonSegmenter",
    "mask_iou",
]


@dataclass(frozen=True)
class MaskConfig:
    """Dynamic-mask settings; defaults are SPEC.md §3's (``annotate.mask_*`` in the config)."""

    threshold: float = 0.4  # threshold = min + 0.4 (max - min)
    empty_margin: float = 0.1  # empty mask when threshold > max - 0.1
    max_area: float = 0.3  # drop regions over 30 % of the frame
    prompts: int = 4  # contour points per region given to SAM2
    sigma_px: float = 1.5  # residual (pixels at 640 wide) where the probability is 0.5
    min_area: float = 0.001  # regions under 0.1 % of the frame are flow noise
    min_translation: float = 1e-3  # below this (backend units), use the rotation homography
    work_width: int = 640  # flow is computed at this width at most
    fb_tolerance_px: float = 2.0  # forward-backward flow disagreement (at 640 wide) = occlusion


class Refiner(Protocol):
    """Turns prompt points on an image into a region mask (SAM2's role)."""

    def __call__(self, image: NDArray[np.uint8], points: NDArray[np.float32]) -> NDArray[np.bool_]: ...


def _gray(img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img


def flow(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Dense optical flow ``(H, W, 2)`` from image ``a`` to image ``b`` (OpenCV DIS, medium preset)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(_gray(a), _gray(b), None)


def _skew(t: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])


def motion_probability(
    a: NDArray[np.uint8],
    b: NDArray[np.uint8],
    pose_a: NDArray[np.float64],
    pose_b: NDArray[np.float64],
    K_a: NDArray[np.float64],
    K_b: NDArray[np.float64],
    cfg: MaskConfig = MaskConfig(),
) -> NDArray[np.float32]:
    """Probability ``(H, W)`` that each pixel of frame ``a`` moves in the world.

    ``pose_*``: w2c rows ``[t, q]``; ``K_*``: pixel ``[fx, fy, cx, cy]`` of the frames as given.
    """
    h, w = a.shape[:2]
    s = min(1.0, cfg.work_width / w)
    if s < 1.0:
        size = (int(round(w * s)), int(round(h * s)))
        a_s, b_s = cv2.resize(a, size, interpolation=cv2.INTER_AREA), cv2.resize(b, size, interpolation=cv2.INTER_AREA)
    else:
        a_s, b_s = a, b
    hs, ws = a_s.shape[:2]
    f = flow(a_s, b_s).astype(np.float64)
    scale = np.array([s, s, s, s])
    Ka, Kb = intrinsics_matrix(np.asarray(K_a) * scale), intrinsics_matrix(np.asarray(K_b) * scale)
    Ta, Tb = poses7_to_w2c(pose_a), poses7_to_w2c(pose_b)
    R = Tb[:, :3] @ Ta[:, :3].T  # camera a -> camera b
    t = Tb[:, 3] - R @ Ta[:, 3]
    u, v = np.meshgrid(np.arange(ws, dtype=np.float64), np.arange(hs, dtype=np.float64))
    x1 = np.stack([u, v, np.ones_like(u)], axis=-1)
    x2 = np.stack([u + f[..., 0], v + f[..., 1], np.ones_like(u)], axis=-1)
    if np.linalg.norm(t) < cfg.min_translation:
        H = Kb @ R @ np.linalg.inv(Ka)
        p = x1 @ H.T
        pred = p[..., :2] / p[..., 2:3]
        r = np.linalg.norm(pred - x2[..., :2], axis=-1)
    else:
        F = np.linalg.inv(Kb).T @ _skew(t) @ R @ np.linalg.inv(Ka)
        Fx1 = x1 @ F.T
        Ftx2 = x2 @ F
        num = np.einsum("...i,...i->...", x2, Fx1) ** 2
        den = Fx1[..., 0] ** 2 + Fx1[..., 1] ** 2 + Ftx2[..., 0] ** 2 + Ftx2[..., 1] ** 2
        r = np.sqrt(num / np.maximum(den, 1e-12))  # Sampson distance, pixels
    sigma = cfg.sigma_px * ws / 640.0
    prob = (r**2 / (r**2 + sigma**2)).astype(np.float32)
    # Where the flow cannot be trusted there is no evidence of motion: end points outside
    # the frame (content leaving the view) and pixels that fail the forward-backward check
    # (occluded or disoccluded in b, e.g. the background an object uncovers).
    back = flow(b_s, a_s)
    mx, my = (u + f[..., 0]).astype(np.float32), (v + f[..., 1]).astype(np.float32)
    fb = cv2.remap(back, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = np.linalg.norm(f + fb, axis=-1)
    inside = (mx >= 0) & (mx <= ws - 1) & (my >= 0) & (my <= hs - 1)
    trusted = inside & (err < cfg.fb_tolerance_px * ws / 640.0 + 0.05 * np.linalg.norm(f, axis=-1))
    prob[~trusted] = 0.0
    prob = cv2.medianBlur(prob, 5)  # single-pixel flow glitches are not objects
    if s < 1.0:
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
    return prob


def _is_sky(region: NDArray[np.bool_], image: NDArray[np.uint8] | None) -> bool:
    if image is None or not region[0].any():
        return False
    g = _gray(image).astype(np.float32)
    grad = np.abs(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))
    return float(grad[region].mean()) < 2.0 * 8.0  # Sobel 3x3 scales a unit step by 4 per axis


def mask_from_probability(
    prob: NDArray[np.float32],
    image: NDArray[np.uint8] | None = None,
    cfg: MaskConfig = MaskConfig(),
    refiner: Refiner | None = None,
) -> NDArray[np.bool_]:
    """The dynamic mask of one frame from its motion-probability map (SPEC.md §3)."""
    h, w = prob.shape
    lo, hi = float(prob.min()), float(prob.max())
    thr = lo + cfg.threshold * (hi - lo)
    out = np.zeros((h, w), bool)
    if thr > hi - cfg.empty_margin:
        return out
    binary = (prob > thr).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    for c in contours:
        if cv2.contourArea(c) < cfg.min_area * h * w:
            continue
        if refiner is not None and image is not None:
            pts = c[:, 0, :]
            pick = np.linspace(0, len(pts), cfg.prompts, endpoint=False).astype(int)
            region = np.asarray(refiner(image, pts[pick].astype(np.float32)), bool)
        else:
            canvas = np.zeros((h, w), np.uint8)
            cv2.drawContours(canvas, [c], -1, 1, thickness=-1)
            region = canvas.astype(bool)
        if region.sum() > cfg.max_area * h * w or _is_sky(region, image):
            continue
        out |= region
    return out


def dynamic_masks(
    frames: NDArray[np.uint8],
    poses: NDArray[np.float64],
    intrinsics: NDArray[np.float64],
    cfg: MaskConfig = MaskConfig(),
    refiner: Refiner | None = None,
    person: "PersonSegmenter | None" = None,
    motion_prob: NDArray[np.float32] | None = None,
) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
    """Masks ``(N, H, W)`` and motion probabilities of annotated frames: frame i is compared
    with frame i+1 (the last with the one before). ``motion_prob``: use the backend's map."""
    n = len(frames)
    h, w = frames.shape[1:3]
    masks = np.zeros((n, h, w), bool)
    probs = np.zeros((n, h, w), np.float32)
    if n < 2:
        return masks, probs
    for i in range(n):
        j = i + 1 if i + 1 < n else i - 1
        if motion_prob is not None:
            p = motion_prob[i]
        else:
            p = motion_probability(frames[i], frames[j], poses[i], poses[j], intrinsics[i], intrinsics[j], cfg)
        probs[i] = p
        masks[i] = mask_from_probability(p, frames[i], cfg, refiner)
        if person is not None:
            masks[i] |= person(frames[i])
    return masks, probs


def mask_iou(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


class Sam2Refiner:
    """SAM2 point-prompted segmentation (``sam2`` package, local checkpoint; GPU machine).

    ``checkpoint``: the ``.pt`` file (e.g. ``sam2.1_hiera_large.pt`` from the SAM2
    release); ``config``: its model config name (e.g. ``configs/sam2.1/sam2.1_hiera_l.yaml``).
    """

    def __init__(self, checkpoint: str, config: str, device: str = "cuda") -> None:
        try:
            from sam2.build_sam import build_sam2
            from sam2.sam2_image_predictor import SAM2ImagePredictor
        except ImportError as exc:
            raise ImportError("SAM2 refinement needs the sam2 package (pip install sam2, on a GPU machine) "
                              "and annotate.sam2_checkpoint / annotate.sam2_config") from exc
        self.predictor = SAM2ImagePredictor(build_sam2(config, checkpoint, device=device))
        self._image_id: int | None = None

    def __call__(self, image: NDArray[np.uint8], points: NDArray[np.float32]) -> NDArray[np.bool_]:
        if self._image_id != id(image):
            self.predictor.set_image(image)
            self._image_id = id(image)
        masks, scores, _ = self.predictor.predict(point_coords=points, point_labels=np.ones(len(points), np.int32),
                                                  multimask_output=False)
        return np.asarray(masks[0], bool)


class PersonSegmenter:
    """People as dynamic regions, offline: mediapipe's selfie segmentation (the legacy
    ``mp.solutions`` graph, landscape model ``selfie_segmentation_landscape.tflite``, which
    ships inside the mediapipe 0.10.14 wheel; 0.10.30 and later wheels ship no models).
    ``threshold`` on its foreground probability; ``image``: RGB uint8.

    Install: ``pip install "spatialvid-stream[masks]"`` then ``pip install --no-deps
    mediapipe==0.10.14``. mediapipe's metadata pins ``protobuf<5`` (and pulls jax and the GUI
    ``opencv-contrib-python``); with the resolver that downgrades onnx and protobuf. Its
    selfie graph runs on the project's numpy 2 and protobuf >= 6 (tests/test_masks.py).
    """

    def __init__(self, threshold: float = 0.5) -> None:
        mp = _import_mediapipe()
        self._seg: Any = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=1)
        self.threshold = threshold

    def __call__(self, image: NDArray[np.uint8]) -> NDArray[np.bool_]:
        res = self._seg.process(np.ascontiguousarray(image))
        if res.segmentation_mask is None:
            return np.zeros(image.shape[:2], bool)
        return np.asarray(res.segmentation_mask) > self.threshold

    def close(self) -> None:
        self._seg.close()


MEDIAPIPE_INSTALL = 'pip install "spatialvid-stream[masks]" && pip install --no-deps mediapipe==0.10.14'


def _import_mediapipe() -> Any:
    """``import mediapipe``, less the one line its bindings print on protobuf >= 5.

    mediapipe 0.10.14's pybind11_protobuf probes ``MessageFactory.GetPrototype`` (removed in
    protobuf 5) at import and prints the AttributeError; protos then cross by serialisation,
    which is all the selfie graph needs. Anything else written to stderr is passed on.
    """
    import contextlib
    import io
    import sys

    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            import mediapipe as mp
    except ImportError as exc:
        raise ImportError(f"the person-segmentation fallback needs mediapipe 0.10.14: {MEDIAPIPE_INSTALL}") from exc
    finally:
        sys.stderr.writelines(line for line in buf.getvalue().splitlines(keepends=True) if "GetPrototype" not in line)
    if not hasattr(getattr(mp, "solutions", None), "selfie_segmentation"):
        raise ImportError(f"mediapipe {getattr(mp, '__version__', '?')} has no bundled selfie-segmentation model "
                          f"(mp.solutions was removed in 0.10.30); {MEDIAPIPE_INSTALL}")
    return mp
