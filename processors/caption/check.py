"""Geometry first: the directions a camera-motion caption states must agree with the
clip's motion instructions (SPEC.md §4, §5).

Three axes are checked, each with two directions:

==========  ======================  ======================================
axis        +1                      -1
==========  ======================  ======================================
``lr``      right (Truck/Pan Right) left (Truck/Pan Left)
``io``      in / forward (Dolly In) out / backward (Dolly Out)
``ud``      up (Pedestal/Tilt Up)   down (Pedestal/Tilt Down)
==========  ======================  ======================================

A caption *contradicts* the instructions when it states a direction on an axis where
the instructions show the opposite direction and never the stated one. A direction
the instructions do not show at all on that axis is not a contradiction (a caption
may mention a slight drift the thresholds missed); a direction on an axis the
instructions are silent about is reported but passes.

Stated directions are read only where a motion verb governs them ("pans left",
"moves forward", "dolly in", "leftward", "upward drift", "left translate"), so scene
phrases such as "a building on the left" or "in the street" do not count. Negated
phrases ("does not move left") are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["AXES", "GeometryCheck", "expected_directions", "stated_directions", "check_directions"]

AXES = {"lr": ("left", "right"), "io": ("out", "in"), "ud": ("down", "up")}

# instruction command -> (axis, sign)
COMMAND_DIRECTIONS: dict[str, tuple[str, int]] = {
    "Truck Right": ("lr", 1), "Pan Right": ("lr", 1),
    "Truck Left": ("lr", -1), "Pan Left": ("lr", -1),
    "Dolly In": ("io", 1), "Dolly Out": ("io", -1),
    "Pedestal Up": ("ud", 1), "Tilt Up": ("ud", 1),
    "Pedestal Down": ("ud", -1), "Tilt Down": ("ud", -1),
}

_VERB = (r"(?:move|moves|moving|moved|pan|pans|panning|panned|truck|trucks|trucking|track|tracks|tracking|"
         r"turn|turns|turning|turned|drift|drifts|drifting|slide|slides|sliding|shift|shifts|shifting|sweep|sweeps|"
         r"sweeping|rotate|rotates|rotating|veer|veers|veering|strafe|strafes|translate|translates|translating|"
         r"glide|glides|gliding|swing|swings|swinging|travel|travels|traveling|travelling|head|heads|heading|"
         r"go|goes|going|step|steps|stepping|walk|walks|walking|push|pushes|pushing|pull|pulls|pulling|"
         r"dolly|dollies|dollying|tilt|tilts|tilting|pedestal|pedestals|crane|cranes|craning|boom|booms|"
         r"rise|rises|rising|lift|lifts|lifting|zoom|zooms|zooming|advance|advances|advancing|back|backs|backing|"
         r"camera|motion|movement|translation|pans|pivot|pivots|pivoting|climb|climbs|climbing|sink|sinks|sinking)")
_GAP = r"(?:\s+(?:slowly|gently|steadily|smoothly|slightly|gradually|quickly|briskly|further|more|a\s+bit|a\s+little|then|and|it|itself|the\s+camera|to\s+the|towards\s+the|toward\s+the|to\s+its|toward|towards))*"
_NEG = re.compile(r"\b(?:not|never|no|without|neither|nor)\b(?:[ \t]+[\w'-]+){0,3}[ \t]*$", re.IGNORECASE)

_PATTERNS: list[tuple[re.Pattern[str], str, int]] = []


def _add(regex: str, axis: str, sign: int) -> None:
    _PATTERNS.append((re.compile(regex, re.IGNORECASE), axis, sign))


for _word, _axis, _sign in (("left", "lr", -1), ("right", "lr", 1)):
    _add(rf"\b{_VERB}{_GAP}\s+{_word}(?:ward|wards)?\b", _axis, _sign)
    _add(rf"\b{_word}(?:ward|wards)\b", _axis, _sign)
    _add(rf"\b{_word}[- ](?:translate|translation|truck|trucking|pan|panning|drift|movement|motion|turn|shift|sweep|track|tracking|strafe)\b", _axis, _sign)
for _word, _sign in (("up", 1), ("down", -1)):
    _add(rf"\b{_VERB}{_GAP}\s+{_word}(?:ward|wards)?\b(?!\s+(?:the|a|an|this|that)\b)", "ud", _sign)
    _add(rf"\b{_word}(?:ward|wards)\b", "ud", _sign)
    _add(rf"\b{_word}[- ](?:translate|translation|drift|movement|motion|tilt|pedestal|crane|shift)\b", "ud", _sign)
_add(r"\b(?:ascend|ascends|ascending|ascent)\b", "ud", 1)
_add(r"\b(?:descend|descends|descending|descent)\b", "ud", -1)
_add(rf"\b{_VERB}{_GAP}\s+(?:forward|forwards|ahead|in|inward|inwards|closer|nearer)\b(?!\s+(?:the|a|an|this|that|front|which|its|their|his|her)\b)", "io", 1)
_add(r"\b(?:forward|forwards|inward|inwards)[- ](?:translate|translation|movement|motion|dolly|push|drift|travel|track|tracking)\b", "io", 1)
_add(r"\b(?:dolly|dollies|dollying|push|pushes|pushing|zoom|zooms|zooming)\s+in\b", "io", 1)
_add(r"\b(?:moves|moving|move|travels|traveling|glides|gliding|advances|advancing|heads|heading|drifts|drifting)\s+forward(?:s)?\b", "io", 1)
_add(r"\b(?:approach|approaches|approaching|advance|advances|advancing)\b", "io", 1)
_add(rf"\b{_VERB}{_GAP}\s+(?:backward|backwards|back|out|outward|outwards|away)\b(?!\s+(?:of|from\s+the\s+(?:left|right)))", "io", -1)
_add(r"\b(?:backward|backwards|outward|outwards)[- ](?:translate|translation|movement|motion|dolly|drift|travel|track|tracking)\b", "io", -1)
_add(r"\b(?:dolly|dollies|dollying|pull|pulls|pulling|zoom|zooms|zooming)\s+(?:out|back)\b", "io", -1)
_add(r"\b(?:retreat|retreats|retreating|recede|recedes|receding)\b", "io", -1)


def _sign_word(axis: str, sign: int) -> str:
    neg, pos = AXES[axis]
    return pos if sign > 0 else neg


@dataclass(frozen=True)
class GeometryCheck:
    """The result of comparing a caption's stated directions with the instructions."""

    passed: bool
    stated: frozenset[tuple[str, int]]
    expected: frozenset[tuple[str, int]]
    contradictions: tuple[str, ...] = field(default_factory=tuple)

    def detail(self) -> str:
        """One line for the record: what contradicted what, or what agreed."""
        def names(ds: frozenset[tuple[str, int]]) -> str:
            return ", ".join(sorted(_sign_word(a, s) for a, s in ds)) or "none"

        if self.contradictions:
            return "contradicts the instructions: " + "; ".join(self.contradictions)
        return f"stated: {names(self.stated)}; measured: {names(self.expected)}"


def expected_directions(instruction_steps: dict[str, int], num_steps: int | None = None,
                        min_share: float = 0.1) -> frozenset[tuple[str, int]]:
    """Directions the instructions show: commands covering at least ``min_share`` of the
    clip's pose steps (at least one step). ``instruction_steps`` is the annotation
    record's summary: pose steps per command."""
    total = num_steps if num_steps and num_steps > 0 else max(instruction_steps.values(), default=0)
    need = max(1.0, min_share * total)
    return frozenset(COMMAND_DIRECTIONS[c] for c, n in instruction_steps.items()
                     if c in COMMAND_DIRECTIONS and n >= need)


def stated_directions(text: str) -> frozenset[tuple[str, int]]:
    """Directions a caption states (axis, sign), read where a motion verb governs them."""
    found: set[tuple[str, int]] = set()
    for pattern, axis, sign in _PATTERNS:
        for m in pattern.finditer(text):
            if _NEG.search(text[max(0, m.start() - 40) : m.start()]):
                continue
            found.add((axis, sign))
    return frozenset(found)


def check_directions(text: str, instruction_steps: dict[str, int], num_steps: int | None = None,
                     min_share: float = 0.1) -> GeometryCheck:
    """Compare ``text`` with the instructions; ``passed`` is false on any contradiction."""
    stated = stated_directions(text)
    expected = expected_directions(instruction_steps, num_steps, min_share)
    shown = expected_directions(instruction_steps, num_steps, 0.0)  # any step at all
    contradictions = []
    for axis, sign in sorted(stated):
        if (axis, -sign) in expected and (axis, sign) not in shown:
            contradictions.append(f"says {_sign_word(axis, sign)}, measured {_sign_word(axis, -sign)}")
    return GeometryCheck(passed=not contradictions, stated=stated, expected=expected,
                         contradictions=tuple(contradictions))
