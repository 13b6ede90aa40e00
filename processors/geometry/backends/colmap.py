"""The default geometry backend: COLMAP through pycolmap, offline, on CPU (or CUDA).

Pipeline (COLMAP's own tools, nothing learned): SIFT features on every sampled frame,
one shared camera per clip (``SIMPLE_PINHOLE`` by default, the released layout has no
distortion terms) whose focal length bundle adjustment refines; sequential matching
(each frame against the next ``overlap`` frames) with geometric verification;
incremental mapping. The largest reconstruction is kept; frames outside it are
unregistered (see ``base.fill_gaps``).

Scale convention: translations are in units of the median depth of the sparse scene
points seen by the annotated frames (that median is 1.0); the world frame is the first
annotated camera. SfM cannot know metres: the reference's metric thresholds (distLevel,
anomaly) read these units as if they were metres, which is right for a scene whose
median depth is about 1 m and compresses motion in larger scenes. Stated in every
record through the backend's version string and in docs/method.md.

Failure reasons: too few features (textureless frames), no initial pair or too few
frames registered, and a camera that barely moves (static, pan in place, pure zoom):
its translation is not observable, so the poses would be noise.

Device: ``device="auto"`` uses CUDA for SIFT extraction and matching when the pycolmap
build has it (the ``pycolmap-cuda12`` wheel) and the CPU otherwise; mapping is on the
CPU in both cases.
"""

from __future__ import annotations

import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from ..poses import w2c_to_poses7
from .base import (
    GeometryBackend,
    GeometryError,
    GeometryResult,
    baseline_ratio,
    fill_gaps,
    rebase_to_first,
    register_backend,
    survey_pairs,
)


@dataclass(frozen=True)
class ColmapOptions:
    """Settings of the COLMAP backend (from ``annotate.*`` in the configuration)."""

    camera_model: str = "SIMPLE_PINHOLE"
    max_features: int = 4096
    overlap: int = 10  # sequential matching: each frame against the next 10 (2 s at 5 fps)
    num_threads: int = -1  # -1: all cores
    device: str = "auto"  # auto | cpu | cuda (feature extraction and matching)
    min_registered_share: float = 0.8
    max_gap: int = 2  # interpolate at most this many consecutive unregistered frames
    min_baseline: float = 0.02  # camera extent / median scene depth below this: no baseline
    min_features: int = 300  # median SIFT features per frame below this: textureless (720p flat walls: ~95)
    self_calibrate: bool = True  # focal prior by self-calibration (base.survey_pairs)
    init_max_forward_motion: float = 1.0  # COLMAP's default is 0.95
    max_homography_share: float = 0.9  # pairs a homography explains this well: no parallax
    init_min_tri_angle: float = 4.0  # degrees; COLMAP's default is 16
    mapper: str = "incremental"  # incremental (COLMAP) | global (GLOMAP)
    # Incremental mapping tuned for sequential video (COLMAP's defaults are for photo
    # collections; measured on the rendered 720p clips, see docs/method.md):
    ba_global_ratio: float = 3.0  # global BA when frames or points grew by this factor (COLMAP: 1.1)
    ba_global_max_refinements: int = 1  # retriangulate + global BA rounds (COLMAP: 5)
    ba_global_max_iterations: int = 15  # solver iterations of one global BA (COLMAP: 50)
    ba_local_num_images: int = 4  # frames in a local BA (COLMAP: 6)
    ba_ignore_redundant_points: bool = True  # global BA skips points that add no coverage (COLMAP: off)
    # With a self-calibrated prior: the focal stays at the prior while mapping, then one
    # bundle adjustment of the whole reconstruction refines it (see _run_colmap).
    focal_in_final_ba: bool = True
    # ... unless the final BA moved it more than this share from the prior: then the prior
    # was off and the clip is mapped again with the focal refined throughout, on COLMAP's
    # global-BA schedule (slower, robust to a bad prior). Not lower: the 720p handheld clip
    # moves 6 % and is exact on the fast path (ATE 0.006 %, 4 runs of 4), while COLMAP's
    # schedule there lands in a wrong focal minimum in 1 run of 3 (ATE 3 %, focal 57 % off;
    # multi-threaded mapping is not deterministic).
    refocus_share: float = 0.1
    fix_calibrated_focal: bool = False  # True: keep a self-calibrated focal fixed in bundle adjustment
    jpeg_quality: int = 95


class _Unsuccessful(Exception):
    """The clip cannot be annotated; the message is the reason."""


def _pycolmap() -> Any:
    # pycolmap's glog installs a failure handler for SIGTERM/SIGINT when it is imported,
    # which would kill a stage worker with a stack dump instead of letting the runtime
    # finish its batch and commit: put the Python handlers back afterwards.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        import pycolmap
    except ImportError as exc:
        raise GeometryError("the colmap backend needs pycolmap, a core dependency: pip install 'pycolmap>=4.2,<5' "
                            "(or pycolmap-cuda12 on a CUDA 12 machine)") from exc
    for sig, handler in saved.items():
        if handler is not None:
            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread: nothing to restore there
                pass
    return pycolmap


@register_backend
class ColmapBackend(GeometryBackend):
    """SIFT + sequential matching + incremental mapping (pycolmap)."""

    name = "colmap"
    scale_convention = "median sparse-point depth = 1; world = first annotated camera"

    def __init__(self, options: ColmapOptions | None = None) -> None:
        self.options = options or ColmapOptions()
        self.timings: dict[str, float] = {}
        self.focal_prior: float | None = None

    def setup(self) -> None:
        pc = _pycolmap()
        if self.options.device == "cuda" and not pc.has_cuda:
            raise GeometryError("annotate.device = 'cuda' but this pycolmap has no CUDA: install pycolmap-cuda12")

    def version(self) -> str:
        pc = _pycolmap()
        o = self.options
        return (f"pycolmap-{pc.__version__}/{o.camera_model}/sift{o.max_features}/seq{o.overlap}"
                + ("/selfcal" if o.self_calibrate else "")
                + (f"/gba{o.ba_global_ratio:g}x{o.ba_global_max_refinements}" if o.mapper == "incremental" else "/global"))

    def _device(self, pc: Any) -> Any:
        if self.options.device == "cpu" or not pc.has_cuda:
            return pc.Device.cpu
        return pc.Device.cuda

    def estimate(self, frames: NDArray[np.uint8], frame_indexes: NDArray[np.int64]) -> GeometryResult:
        pc = _pycolmap()
        o = self.options
        n, h, w = frames.shape[:3]
        fail = lambda reason, reg=0: GeometryResult.failure(  # noqa: E731
            self.name, self.version(), reason, self.scale_convention, n, w, h, reg)
        if n < 3:
            return fail(f"only {n} sampled frames; at least 3 are needed")
        self.timings = {}
        self.focal_prior = None
        with tempfile.TemporaryDirectory(prefix="colmap-") as tmp:
            root = Path(tmp)
            images = root / "images"
            images.mkdir()
            names = [f"{i:05d}.jpg" for i in range(n)]
            t0 = time.perf_counter()
            for name, img in zip(names, frames):
                cv2.imwrite(str(images / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, o.jpeg_quality])
            self.timings["write_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            survey = survey_pairs(frames)
            self.timings["survey_s"] = time.perf_counter() - t1
            if survey.pairs and survey.homography_share > o.max_homography_share:
                return fail(f"no parallax: a homography explains {survey.homography_share:.0%} of the matches "
                            f"(> {o.max_homography_share:.0%}): static camera, pan in place or zoom; "
                            "translation is not observable")
            if o.self_calibrate:
                self.focal_prior = survey.focal
            out = root / "sparse"
            out.mkdir()
            try:
                recs = self._run_colmap(pc, root / "database.db", images, names, out)
            except _Unsuccessful as exc:
                return fail(str(exc))
        if not recs:
            return fail("no reconstruction: no frame pair with enough parallax and matches "
                        "(static camera, pan in place, zoom, or too little texture)")
        rec = max(recs.values(), key=lambda r: r.num_reg_images())
        return self._result(pc, rec, names, frame_indexes, w, h, fail)

    def _run_colmap(self, pc: Any, db: Path, images: Path, names: list[str], out: Path) -> dict[int, Any]:
        """Features, matching, (self-calibration,) mapping; returns the reconstructions."""
        o = self.options
        t0 = time.perf_counter()
        reader = pc.ImageReaderOptions()
        reader.camera_model = o.camera_model
        if o.self_calibrate and self.focal_prior is not None:
            img = cv2.imread(str(images / names[0]), cv2.IMREAD_UNCHANGED)
            extra = {"SIMPLE_PINHOLE": "", "PINHOLE": "", "SIMPLE_RADIAL": ",0", "RADIAL": ",0,0"}.get(o.camera_model)
            f, cx, cy = self.focal_prior, img.shape[1] / 2.0, img.shape[0] / 2.0
            if extra is not None:  # other models keep COLMAP's default prior
                fxy = f"{f},{f}" if o.camera_model == "PINHOLE" else f"{f}"
                reader.camera_params = f"{fxy},{cx},{cy}{extra}"
        extraction = pc.FeatureExtractionOptions()
        extraction.num_threads = o.num_threads
        extraction.sift.max_num_features = o.max_features
        device = self._device(pc)
        pc.extract_features(db, images, image_names=names, camera_mode=pc.CameraMode.SINGLE,
                            reader_options=reader, extraction_options=extraction, device=device)
        self.timings["extract_s"] = time.perf_counter() - t0
        features = self._feature_counts(pc, db)
        if np.median(features) < o.min_features:
            raise _Unsuccessful(f"too few features (median {int(np.median(features))} per frame < {o.min_features}): "
                                "textureless or blank frames")
        t1 = time.perf_counter()
        matching = pc.FeatureMatchingOptions()
        matching.num_threads = o.num_threads
        pairing = pc.SequentialPairingOptions()
        pairing.overlap = o.overlap
        pairing.quadratic_overlap = True
        pc.match_sequential(db, matching_options=matching, pairing_options=pairing, device=device)
        self.timings["match_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        if o.mapper == "global":  # GLOMAP: rotation averaging, global positioning, bundle adjustment
            gopts = pc.GlobalPipelineOptions()
            gopts.num_threads = o.num_threads
            gopts.random_seed = 0
            recs = pc.global_mapping(db, images, out, options=gopts)
            self.timings["map_s"] = time.perf_counter() - t2
            return recs
        opts = pc.IncrementalPipelineOptions()
        opts.num_threads = o.num_threads
        prior = self.focal_prior is not None
        # The fast schedule below (few global BAs) lets the few-frame local BAs move the
        # shared focal length: on the 720p pan clip (rotation and focal are nearly
        # ambiguous there) it drifted 40-50 % off with focal refinement while mapping.
        # With a prior, map with the focal fixed and free it in one final BA (pan: focal
        # 0.015 % off, ATE 0.02 %; a prior 20 % too high still ends 0.2 % off).
        late_focal = prior and o.focal_in_final_ba and not o.fix_calibrated_focal
        opts.ba_refine_focal_length = not (prior and (late_focal or o.fix_calibrated_focal))
        opts.ba_refine_principal_point = False
        opts.ba_refine_extra_params = o.camera_model not in ("SIMPLE_PINHOLE", "PINHOLE")
        opts.random_seed = 0  # reproducible reconstructions
        # COLMAP refuses initial pairs whose motion is more than 95 % forward; walking and
        # drone clips are mostly that, and at 720p no pair passes (measured: forward path).
        opts.mapper.init_max_forward_motion = o.init_max_forward_motion
        # COLMAP wants a 16 degree median triangulation angle in the first pair (relaxed
        # twice by half): photo-collection values. A walk through a deep scene has most
        # points far away, so at 720p (where far texture is resolved) no pair reaches 8.
        opts.mapper.init_min_tri_angle = o.init_min_tri_angle
        # Video, not a photo collection: each new frame sees the last ones, so local BA
        # keeps the trajectory right and the global BAs COLMAP runs every 10 % of growth
        # (with up to 5 retriangulation rounds of 50 iterations each) mostly re-solve a
        # converged problem. Measured on the 720p forward clip (50 frames): mapping CPU
        # time 41 s -> 20 s with the final focal BA, ATE unchanged; on the device 23 -> 11 s.
        opts.ba_global_frames_ratio = o.ba_global_ratio
        opts.ba_global_points_ratio = o.ba_global_ratio
        opts.ba_global_max_refinements = o.ba_global_max_refinements
        opts.ba_global_max_num_iterations = o.ba_global_max_iterations
        opts.mapper.ba_local_num_images = o.ba_local_num_images
        opts.mapper.ba_global_ignore_redundant_points3D = o.ba_ignore_redundant_points
        opts.extract_colors = False  # point colours are not part of the outputs (saves reading every image)
        recs = pc.incremental_mapping(db, images, out, options=opts)
        if late_focal and recs:
            rec = max(recs.values(), key=lambda r: r.num_reg_images())
            ba = pc.BundleAdjustmentOptions()
            ba.refine_focal_length = True
            ba.refine_principal_point = False
            ba.refine_extra_params = opts.ba_refine_extra_params
            pc.bundle_adjustment(rec, ba)
            moved = abs(float(next(iter(rec.cameras.values())).mean_focal_length()) / float(self.focal_prior) - 1)
            self.timings["focal_moved"] = moved
            if moved > o.refocus_share:
                # Measured: pan at 720p with a prior 20 % too low ends 2.4 % ATE (focal 4.9 %
                # off) on the fast path, 0.02 % on COLMAP's schedule with focal refinement.
                defaults = pc.IncrementalPipelineOptions()
                opts.ba_refine_focal_length = True
                opts.ba_global_frames_ratio = defaults.ba_global_frames_ratio
                opts.ba_global_points_ratio = defaults.ba_global_points_ratio
                opts.ba_global_max_refinements = defaults.ba_global_max_refinements
                opts.ba_global_max_num_iterations = defaults.ba_global_max_num_iterations
                opts.mapper.ba_local_num_images = defaults.mapper.ba_local_num_images
                opts.mapper.ba_global_ignore_redundant_points3D = defaults.mapper.ba_global_ignore_redundant_points3D
                again = out / "refocus"
                again.mkdir(exist_ok=True)
                recs = pc.incremental_mapping(db, images, again, options=opts)
                self.timings["refocused"] = 1.0
        self.timings["map_s"] = time.perf_counter() - t2
        return recs

    @staticmethod
    def _feature_counts(pc: Any, db: Path) -> NDArray[np.int64]:
        database = pc.Database.open(str(db)) if hasattr(pc.Database, "open") else pc.Database(str(db))
        try:
            counts = [database.num_keypoints_for_image(img.image_id) for img in database.read_all_images()]
        finally:
            database.close()
        return np.asarray(counts or [0], dtype=np.int64)

    def _result(self, pc: Any, rec: Any, names: list[str], frame_indexes: NDArray[np.int64], w: int, h: int,
                fail: Any) -> GeometryResult:
        o = self.options
        n = len(names)
        index = {name: i for i, name in enumerate(names)}
        poses = np.zeros((n, 7))
        poses[:, 6] = 1.0
        registered = np.zeros(n, bool)
        uvz: dict[int, NDArray[np.float64]] = {}  # per frame: pixel u, v and depth of its points
        xyz = {pid: p.xyz for pid, p in rec.points3D.items()}
        cam = None
        for image in rec.images.values():
            if not image.has_pose:
                continue
            i = index[image.name]
            T = image.cam_from_world()
            T = T if hasattr(T, "matrix") else image.cam_from_world
            M = np.asarray(T.matrix())  # 3 x 4 w2c
            poses[i] = w2c_to_poses7(M)
            registered[i] = True
            cam = image.camera
            seen = [p for p in image.points2D if p.has_point3D()]
            if seen:
                P = np.array([xyz[p.point3D_id] for p in seen])
                z = P @ M[:, :3].T[:, 2] + M[2, 3]
                uvz[i] = np.column_stack([np.array([p.xy for p in seen]), z])[z > 0]
        nreg = int(registered.sum())
        share = nreg / n
        if share < o.min_registered_share:
            return fail(f"only {nreg} of {n} frames registered ({share:.0%} < {o.min_registered_share:.0%})", nreg)
        poses, keep = fill_gaps(poses, registered, o.max_gap)
        scene_depth = float(np.median(np.concatenate([a[:, 2] for a in uvz.values()]))) if uvz else float("nan")
        if not np.isfinite(scene_depth) or scene_depth <= 0:
            return fail("no triangulated points in front of the cameras", nreg)
        poses = poses[keep]
        poses[:, :3] /= scene_depth  # scale convention: median scene depth = 1
        sparse = [uvz[i] / [1.0, 1.0, scene_depth] if i in uvz else None for i in np.flatnonzero(keep)]
        poses = rebase_to_first(poses)
        base = baseline_ratio(poses, 1.0)
        if base < o.min_baseline:
            return fail(f"camera barely moves (extent {base:.3f} of the scene depth < {o.min_baseline}): "
                        "static, pan-in-place or zoom-only shot; translation is not observable", nreg)
        f = float(cam.mean_focal_length())
        K = np.tile([f, f, float(cam.principal_point_x), float(cam.principal_point_y)], (len(poses), 1))
        return GeometryResult(
            backend=self.name, version=self.version(), success=True, reason="", scale_convention=self.scale_convention,
            frame_indexes=np.asarray(frame_indexes)[keep], poses=poses, intrinsics=K, registered=registered[keep],
            num_sampled=n, width=w, height=h,
            extras={"sparse_depth": sparse, "scene_depth_native": scene_depth, "focal_prior": self.focal_prior, "num_points": int(rec.num_points3D()),
                    "mean_reprojection_error": float(rec.compute_mean_reprojection_error()), **self.timings},
        )


@register_backend
class ColmapDefaultBackend(ColmapBackend):
    """pycolmap's default incremental pipeline, untuned: the baseline of the benchmarks.

    Default SIFT settings (8,192 features), exhaustive matching of every pair, default
    incremental mapping (SIMPLE_RADIAL camera, focal prior 1.2 x the larger side). Same
    outputs and checks as :class:`ColmapBackend`.
    """

    name = "colmap-default"

    def __init__(self, options: ColmapOptions | None = None) -> None:
        base = options or ColmapOptions()
        super().__init__(ColmapOptions(camera_model="SIMPLE_RADIAL", max_features=8192, overlap=0,
                                       num_threads=base.num_threads, device=base.device,
                                       min_registered_share=base.min_registered_share, max_gap=base.max_gap,
                                       min_baseline=base.min_baseline, min_features=base.min_features,
                                       self_calibrate=False))

    def version(self) -> str:
        return f"pycolmap-{_pycolmap().__version__}/default-exhaustive"

    def _run_colmap(self, pc: Any, db: Path, images: Path, names: list[str], out: Path) -> dict[int, Any]:
        extraction = pc.FeatureExtractionOptions()
        extraction.num_threads = self.options.num_threads
        device = self._device(pc)
        t0 = time.perf_counter()
        pc.extract_features(db, images, image_names=names, extraction_options=extraction, device=device)
        self.timings["extract_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        pc.match_exhaustive(db, device=device)
        self.timings["match_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        opts = pc.IncrementalPipelineOptions()
        opts.num_threads = self.options.num_threads
        opts.random_seed = 0
        recs = pc.incremental_mapping(db, images, out, options=opts)
        self.timings["map_s"] = time.perf_counter() - t2
        return recs


def build(files: dict[str, Any], **options: Any) -> ColmapBackend:
    """Model-registry builder (``spatialvid.models``): ``get_model("colmap", device="cpu", ...)``."""
    backend = ColmapBackend(ColmapOptions(**options))
    backend.setup()
    return backend
