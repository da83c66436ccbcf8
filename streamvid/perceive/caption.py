"""A factual one-line caption for an event from its frames' perceptions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from streamvid.perceive.frame import WEAK, FramePerception

_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def count_phrase(n: int, singular: str, plural: str) -> str:
    """3, "person", "people" → "three people"."""
    word = _NUMBERS[n] if n < len(_NUMBERS) else str(n)
    return f"{word} {singular if n == 1 else plural}"


def event_texts(perceptions: Sequence[FramePerception]) -> list[str]:
    """Distinct text lines in order of first appearance (case and spacing ignored when comparing)."""
    seen: set[str] = set()
    out: list[str] = []
    for p in perceptions:
        for box in p.texts:
            key = " ".join(box.text.split()).casefold()
            if key and key not in seen:
                seen.add(key)
                out.append(box.text)
    return out


def event_direction(perceptions: Sequence[FramePerception]) -> str | None:
    """The direction most frames moved in, if it is the direction of at least half the moving frames."""
    dirs = [p.motion.direction for p in perceptions if p.motion is not None and p.motion.direction]
    if not dirs:
        return None
    (best, n), *_ = Counter(dirs).most_common(1)
    return best if 2 * n >= len(dirs) else None


def event_colours(perceptions: Sequence[FramePerception], second_share: float = 0.25) -> list[str]:
    """The event's main colour, plus a second one when it covers at least ``second_share`` on average."""
    total: Counter[str] = Counter()
    for p in perceptions:
        for name, share in p.colours:
            total[name] += share
    if not total:
        return []
    ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
    names = [ranked[0][0]]
    if len(ranked) > 1 and ranked[1][1] / len(perceptions) >= second_share:
        names.append(ranked[1][0])
    return names


def caption_event(perceptions: Sequence[FramePerception]) -> str:
    """E.g. "two people walking left; one face visible; the text 'EXIT' on screen; mostly grey."

    People, faces and objects are the most seen in any one frame (people and faces said "possibly"
    when no detection reached the WEAK confidence); greyscale frames give no colour; text lines that
    repeat across frames are given once, in order of first appearance. Deterministic for the same perceptions.
    """
    if not perceptions:
        return ""
    parts: list[str] = []
    n_people = max(len(p.people) for p in perceptions)
    n_faces = max(len(p.faces) for p in perceptions)
    direction = event_direction(perceptions)
    moving = any(p.motion is not None and p.motion.amount >= 0.02 for p in perceptions)
    if n_people:
        phrase = count_phrase(n_people, "person", "people")
        if max(p.people_confidence for p in perceptions) < WEAK:
            phrase = "possibly " + phrase
        if direction in ("left", "right"):
            phrase += f" walking {direction}"
        elif direction:
            phrase += f" moving {direction}"
        elif moving:
            phrase += " moving"
        parts.append(phrase)
    elif direction:
        parts.append(f"movement to the {direction}" if direction in ("left", "right") else f"movement {direction}")
    elif moving:
        parts.append("some movement")
    if n_faces:
        weak = max(p.face_confidence for p in perceptions) < WEAK
        parts.append(f"{'possibly ' if weak else ''}{count_phrase(n_faces, 'face', 'faces')} visible")
    n_objects = max(p.objects for p in perceptions)
    if n_objects:
        parts.append(count_phrase(n_objects, "object", "objects"))
    texts = event_texts(perceptions)
    if texts:
        quoted = ", ".join(f"'{t}'" for t in texts)
        parts.append(f"the text {quoted} on screen")
    colours = event_colours(perceptions)
    if colours:
        parts.append("mostly " + " and ".join(colours))
    if not parts:
        return "nothing recognised."
    return "; ".join(parts) + "."
