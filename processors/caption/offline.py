"""The offline default: a deterministic camera-motion caption from the geometry alone.

With no model endpoint configured the caption stage still runs end to end: the
corrected camera-motion caption (OptCamMotion) is written from the clip's motion
instructions and trajectory metrics, MotionTrends from the main instructions, and
every field that needs to see the frames (CamMotion, SceneDesc, SceneSummary,
SceneTags, ShotImmersion, CategoryTag) stays empty or "Unknown", marked as not
generated. Nothing here pretends to have seen the frames.
"""

from __future__ import annotations

import math
from typing import Sequence

from spatialvid.schemas.records import AnnotationRecord

__all__ = ["OFFLINE_VERSION", "COMMAND_PHRASES", "TREND_PHRASES", "segments", "motion_trends", "geometry_caption"]

OFFLINE_VERSION = "offline-geometry-v1"

# How each instruction reads in a sentence whose subject is the camera.
COMMAND_PHRASES: dict[str, str] = {
    "Dolly In": "moves forward", "Dolly Out": "moves backward",
    "Truck Right": "moves to the right", "Truck Left": "moves to the left",
    "Pedestal Up": "moves up", "Pedestal Down": "moves down",
    "Pan Left": "pans left", "Pan Right": "pans right",
    "Tilt Up": "tilts up", "Tilt Down": "tilts down",
    "Roll CW": "rolls clockwise", "Roll CCW": "rolls counter-clockwise",
    "Stay": "holds still",
}
# MotionTrends phrases in the reference's style ("forward translate", "left pan").
TREND_PHRASES: dict[str, str] = {
    "Dolly In": "forward translate", "Dolly Out": "backward translate",
    "Truck Right": "right translate", "Truck Left": "left translate",
    "Pedestal Up": "upward translate", "Pedestal Down": "downward translate",
    "Pan Left": "left pan", "Pan Right": "right pan",
    "Tilt Up": "upward tilt", "Tilt Down": "downward tilt",
    "Roll CW": "clockwise roll", "Roll CCW": "counter-clockwise roll",
}
_INTENSITY = {0: "barely", 1: "slightly"}


def segments(instructions: dict[str, list[str]], min_share: float = 0.1, max_segments: int = 4) -> list[tuple[int, int, tuple[str, ...]]]:
    """Time-ordered ``(start, end, commands)`` of ``{"start->end": [commands]}``: ranges
    shorter than ``min_share`` of the clip are dropped as noise, and neighbours with the
    same commands merged; at most ``max_segments`` (the longest, kept in order)."""
    ranges = sorted((int(a), int(b), tuple(cmds)) for key, cmds in instructions.items()
                    for a, b in [key.split("->")])
    if not ranges:
        return []
    total = max(b for _, b, _ in ranges) - min(a for a, _, _ in ranges)
    kept = [r for r in ranges if (r[1] - r[0]) >= min_share * total] or [max(ranges, key=lambda r: r[1] - r[0])]
    merged: list[tuple[int, int, tuple[str, ...]]] = []
    for a, b, cmds in kept:
        if merged and merged[-1][2] == cmds:
            merged[-1] = (merged[-1][0], b, cmds)
        else:
            merged.append((a, b, cmds))
    if len(merged) > max_segments:
        longest = sorted(sorted(merged, key=lambda r: r[0] - r[1])[:max_segments])
        merged = longest
    return merged


def motion_trends(instruction_steps: dict[str, int], num_steps: int, min_share: float = 0.1, k: int = 3) -> list[str]:
    """The 1-3 main sustained movements, as phrases, from the pose steps per command."""
    need = max(1.0, min_share * max(num_steps, 1))
    ranked = sorted(((n, c) for c, n in instruction_steps.items() if c in TREND_PHRASES and n >= need),
                    key=lambda t: (-t[0], t[1]))
    return [TREND_PHRASES[c] for _, c in ranked[:k]]


def _clause(cmds: Sequence[str], adverb: str) -> str:
    moving = [c for c in cmds if c != "Stay"]
    if not moving:
        return "holds still"
    phrases = [COMMAND_PHRASES.get(c, c.lower()) for c in moving]
    if adverb:
        phrases[0] = phrases[0].replace(" ", f" {adverb} ", 1) if " " in phrases[0] else f"{adverb} {phrases[0]}"
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def geometry_caption(ann: AnnotationRecord, instructions: dict[str, list[str]] | None = None) -> str:
    """OptCamMotion written from the instructions and trajectory metrics of ``ann``.

    ``instructions`` is the clip's ``instructions.json`` (time-ordered ranges); without it
    the record's ``instruction_steps`` summary gives the main motions, unordered.
    """
    if not ann.success:
        return "The camera poses of this clip could not be estimated, so its motion is not described."
    level = ann.dist_level
    adverb = _INTENSITY.get(level, "") if level is not None else ""
    sentences: list[str] = []
    segs = segments(instructions) if instructions else []
    if len(segs) > 1:
        parts = []
        for i, (_, _, cmds) in enumerate(segs):
            lead = "At first the camera" if i == 0 else ("finally it" if i == len(segs) - 1 else "then it")
            parts.append(f"{lead} {_clause(cmds, adverb)}")
        sentences.append("; ".join(parts) + ".")
    else:
        if segs:
            cmds: Sequence[str] = segs[0][2]
        else:
            steps = ann.instruction_steps
            need = max(1.0, 0.1 * max(ann.num_poses - 1, 1))
            cmds = [c for c, n in sorted(steps.items(), key=lambda t: -t[1]) if c != "Stay" and n >= need][:3]
        sentences.append(f"Throughout the clip the camera {_clause(cmds, adverb)}.")
    if level == 0:
        sentences.append("The viewpoint stays essentially fixed.")
    facts = []
    if ann.move_dist is not None and level is not None:
        facts.append(f"travels {ann.move_dist:.2f} units in all (distance level {level} of 4)")
    if ann.rot_angle is not None and math.degrees(ann.rot_angle) >= 1.0:
        facts.append(f"turns through {math.degrees(ann.rot_angle):.0f} degrees")
    if facts:
        sentences.append("Over the clip it " + " and ".join(facts) + ".")
    if ann.traj_turns:
        sentences.append(f"Its path changes direction {ann.traj_turns} time{'s' if ann.traj_turns != 1 else ''}.")
    return " ".join(sentences)
