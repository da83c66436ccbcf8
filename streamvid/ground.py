"""Grounded answers for the offline preset: read the answer out of the perception records.

A small text LLM given notes invents things; here the answer is *extracted* from what perception
recorded, with times, and the LLM is not asked at all when extraction finds the answer (or finds
that the answer is not in memory, which gives "I did not see that").

Records are ``Seen`` (one perceived frame: text read, colours, people, faces, objects, greyscale)
and ``Shot`` spans (the events' time spans, one per shot). ``ground_answer(question, seen, shots,
now)`` returns a ``Grounded`` (text + the time spans it rests on) or None when the question is of a
kind extraction does not handle (the caller may then let the LLM answer from the notes).

Question kinds: on-screen text (which, first/last/nth, before/after, at a time), "when did X
appear", counts (scene changes, objects, people, faces), colours, "what changed", "how long", and
"what happened" at a time. Time phrases are those of ``streamvid.retrieve.plan_query``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from streamvid.perceive.caption import count_phrase
from streamvid.perceive.colour import COLOUR_NAMES
from streamvid.retrieve import parse_clock, plan_query
from streamvid.types import NOT_SEEN, format_span

NO_COLOUR = "The video has no colour, so I cannot tell."
WEAK = 0.5  # a perception below this confidence is reported as uncertain

# Words any question may use without naming something that must have been seen.
_FUNCTION_WORD_LIST = """
a an the of in on at to by for from with into onto over under and or but if then than so as is are was were be
been being do does did done have has had having what which who whom whose when where why how many much long time
times that this these those there here it its it's i me my you your we our they them their he she his her any
some all each every no not only just also very more most less least first last second third fourth fifth final
earliest latest next previous before after during while until since start beginning end middle video clip stream
film see saw seen show shown showed appear appeared appears appearing visible present happen happened happens
happening come came change changed changes changing become became read say said says written write wrote display
displayed displaying shown text texts word words sign signs caption captions title titles label labels screen
on-screen onscreen message messages colour colours color colors background backgrounds scene scenes shot shots
cut cuts count number total object objects shape shapes circle circles ball balls dot dots disc discs thing
things people person persons face faces man men woman women someone anyone everyone somebody anybody human
humans ago now currently moment seconds second minutes minute hours hour s sec secs min mins frame frames mostly
main dominant overall kind type whole part going on tell describe please then again ever exactly roughly right
currently presently showing shows visible seeing looking look playing about around near approximately did does
between both either neither other others same different new old
"""
_FUNCTION_WORDS = frozenset(_FUNCTION_WORD_LIST.split())
_ORDINALS = {"first": 0, "earliest": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4,
             "last": -1, "final": -1, "latest": -1, "most recent": -1}
_OBJECT_WORDS = {"object", "objects", "shape", "shapes", "circle", "circles", "ball", "balls", "dot", "dots",
                 "disc", "discs", "thing", "things"}
_PEOPLE_WORDS = {"people", "person", "persons", "man", "men", "woman", "women", "human", "humans", "someone"}
_TEXT_WORDS = (r"text|texts|word|words|sign|signs|caption|captions|title|titles|label|labels|message|messages|"
               r"written|say|said|says|read")


@dataclass(frozen=True)
class Seen:
    """One perceived frame.

    texts:  lines read, reading order;  colours: (name, share) largest first, () for a greyscale frame
    people, faces, objects: counts;  people_conf, face_conf: the best detection's confidence 0–1
    """

    t: float
    t_end: float | None = None  # the frame stayed on screen until then (repeats dropped); None: t
    texts: tuple[str, ...] = ()
    colours: tuple[tuple[str, float], ...] = ()
    people: int = 0
    people_conf: float = 0.0
    faces: int = 0
    face_conf: float = 0.0
    objects: int = 0
    grey: bool = False


@dataclass(frozen=True)
class Shot:
    t_start: float
    t_end: float


@dataclass
class Grounded:
    """An extracted answer: its text, the (t0, t1) spans it rests on, and whether it abstains."""

    text: str
    spans: list[tuple[float, float]] = field(default_factory=list)
    abstained: bool = False


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.casefold()))


def clock(t: float) -> str:
    """Seconds → "00:01:05"."""
    return format_span(t, t)[1:9]


def text_appearances(seen: Sequence[Seen]) -> list[tuple[str, float, float]]:
    """(text, first time, last time) per distinct text line, in order of first appearance."""
    first: dict[str, list] = {}
    for s in sorted(seen, key=lambda s: s.t):
        until = s.t if s.t_end is None else s.t_end
        for line in s.texts:
            key = _norm(line)
            if not key:
                continue
            if key not in first:
                first[key] = [line, s.t, until]
            else:
                first[key][2] = until
    return [tuple(v) for v in first.values()]  # type: ignore[misc]


def shot_colour(seen: Sequence[Seen], t0: float, t1: float) -> str | None:
    """The main colour of the frames in [t0, t1] (share-weighted), None when greyscale or unseen."""
    total: dict[str, float] = {}
    for s in seen:
        if t0 <= s.t <= t1:
            for name, share in s.colours:
                total[name] = total.get(name, 0.0) + share
    if not total:
        return None
    return max(sorted(total), key=lambda k: total[k])


def is_greyscale(seen: Sequence[Seen]) -> bool:
    return bool(seen) and all(s.grey for s in seen)


def _in_range(t: float, time_range: tuple[float, float] | None) -> bool:
    return time_range is None or time_range[0] <= t <= time_range[1]


def _ordinal(q: str) -> int | None:
    for word, k in _ORDINALS.items():
        if re.search(rf"\b{word}\b", q):
            return k
    return None


def _quoted_or_caps(question: str) -> list[str]:
    """Text the question names: quoted ('…', "…") or written in capitals (two letters or more)."""
    quoted = re.findall(r"['\"“‘]([^'\"”’]+)['\"”’]", question)
    caps = re.findall(r"\b[A-Z][A-Z0-9]+(?:\s+(?:[A-Z][A-Z0-9]*|\d+))*\b", question)
    return [q for q in quoted + caps if q.strip() and q.strip() != "I"]


def _squash(text: str) -> str:
    """Letters and digits only: OCR may drop or add a space ("PLATFORM3")."""
    return "".join(re.findall(r"[a-z0-9]+", text.casefold()))


def _find_text(name: str, texts: list[tuple[str, float, float]]) -> tuple[str, float, float] | None:
    key = _squash(name)
    if not key:
        return None
    for entry in texts:
        if key == _squash(entry[0]):
            return entry
    for entry in texts:
        k2 = _squash(entry[0])
        if len(min(key, k2, key=len)) >= 3 and (key in k2 or k2 in key):
            return entry
    return None


_NOW = re.compile(r"\b(right now|now|currently|at the moment|at present)\b")


def unknown_words(question: str, seen: Sequence[Seen]) -> list[str]:
    """Content words of the question that name nothing perception can see or has read (nouns, mostly).

    What remains after removing function words, time words, colour names, numbers and the words of
    the text that was read: e.g. "dog" in "what did the dog do?"."""
    known = set(_FUNCTION_WORDS) | set(COLOUR_NAMES) | {"gray", "colored", "coloured", "black", "white"}
    words = re.findall(r"[a-z][a-z']*", question.casefold())
    asked = set(words)
    lines = {line for s in seen for line in s.texts}
    # Read text counts as named only when the question holds all of its words ("open door"), or the
    # line's squashed form: "car" alone does not name the text 'RED CAR'.
    named = [line for line in lines if set(_norm(line).split()) - {w for w in _norm(line).split() if w.isdigit()}
             <= asked or _squash(line) in _squash(question)]
    for line in named:
        known.update(_norm(line).split())
    squashed = [_squash(line) for line in named]
    # Adverbs (-ly) and present participles (-ing: "walking", "moving") describe, they name nothing.
    return [w for w in words if w not in known and w.rstrip("s") not in known and not w.endswith(("ly", "ing"))
            and not (len(w) >= 3 and any(w in t for t in squashed))]


def ground_answer(question: str, seen: Sequence[Seen], shots: Sequence[Shot], now: float) -> Grounded | None:
    """Answer ``question`` from the records (seen frames in time order, shots), or None if its kind is
    not one extraction handles. Abstains with NOT_SEEN when the answer is not in the records."""
    seen = sorted(seen, key=lambda s: s.t)
    shots = sorted(shots, key=lambda s: s.t_start)
    q = question.casefold()
    texts = text_appearances(seen)

    def anchor_search(text: str):
        hit = _find_text(text, texts)
        if hit is not None:
            return [Shot(hit[1], hit[2])]
        colour = next((c for c in COLOUR_NAMES if re.search(rf"\b{c}\b", text.casefold())), None)
        if colour:
            for sh in shots:
                if shot_colour(seen, sh.t_start, sh.t_end) == colour:
                    return [sh]
        return []

    plan = plan_query(question, now, search=anchor_search)
    time_range = plan.time_range
    if plan.relation and plan.anchor and time_range is None:
        return Grounded(NOT_SEEN, abstained=True)  # "after X" where X was never seen
    unknown = unknown_words(plan.content if plan.anchor else question, seen)
    named = _quoted_or_caps(question)

    # ---- counts --------------------------------------------------------------------------------
    m = re.search(r"\bhow many\s+(?:\w+\s+){0,2}?(scene changes|scene cuts|cuts|changes of scene|scenes|shots|"
                  r"different scenes|objects|shapes|circles|balls|dots|discs|things|people|persons|men|women|"
                  r"faces)\b", q)
    if m and not unknown:
        what = m.group(1)
        if what in ("scenes", "shots", "different scenes"):
            n = sum(1 for sh in shots if _overlaps(sh, time_range))
            return Grounded(f"I saw {count_phrase(n, 'scene', 'scenes')}.", [(sh.t_start, sh.t_end) for sh in shots])
        if what.startswith(("scene", "cut", "changes")):
            inside = [sh for sh in shots[1:] if _in_range(sh.t_start, time_range)]
            n = len(inside)
            return Grounded(f"The scene changed {count_phrase(n, 'time', 'times')}"
                            + (f", at {', '.join(clock(sh.t_start) for sh in inside)}." if inside else "."),
                            [(sh.t_start, sh.t_start) for sh in inside])
        frames = [s for s in seen if _in_range(s.t, time_range)]
        if not frames:
            return Grounded(NOT_SEEN, abstained=True)
        if what in ("faces",):
            best = max(frames, key=lambda s: (s.faces, s.face_conf))
            return _count_answer(best.faces, best.face_conf, "face", "faces", best.t)
        if what in _PEOPLE_WORDS:
            best = max(frames, key=lambda s: (s.people, s.people_conf))
            return _count_answer(best.people, best.people_conf, "person", "people", best.t)
        best = max(frames, key=lambda s: s.objects)
        if best.objects == 0:
            return Grounded("I did not see any objects there.", [(best.t, best.t)])
        return Grounded(f"I saw {count_phrase(best.objects, 'object', 'objects')} at {clock(best.t)}.",
                        [(best.t, best.t)])

    # ---- how long ------------------------------------------------------------------------------
    if re.search(r"\bhow long\b", q):
        target = _target_text(named, q, texts)
        if target is not None:
            text, t0, t1 = target
            return Grounded(f"'{text}' was on screen for about {max(1.0, t1 - t0):.0f} seconds "
                            f"({clock(t0)} to {clock(t1)}).", [(t0, t1)])
        colour = next((c for c in COLOUR_NAMES if re.search(rf"\b{c}\b", q)), None)
        if colour and not unknown:
            spans = [(sh.t_start, sh.t_end) for sh in shots if shot_colour(seen, sh.t_start, sh.t_end) == colour]
            if spans:
                secs = sum(b - a for a, b in spans)
                return Grounded(f"The {colour} scene lasted about {max(1.0, secs):.0f} seconds.", spans)
        if re.search(r"\b(video|clip|stream)\b", q) and seen:
            return Grounded(f"The video lasted about {seen[-1].t - seen[0].t:.0f} seconds.", [(seen[0].t, seen[-1].t)])
        return Grounded(NOT_SEEN, abstained=True)

    # ---- colours -------------------------------------------------------------------------------
    if re.search(r"\bcolou?rs?\b", q):
        if unknown:
            return Grounded(NOT_SEEN, abstained=True)
        if is_greyscale(seen):
            return Grounded(NO_COLOUR, [(seen[0].t, seen[-1].t)])
        target = _target_text(named, q, texts)
        if named and target is None:
            return Grounded(NOT_SEEN, abstained=True)
        if target is not None:
            chosen = [sh for sh in shots if sh.t_start <= target[1] <= sh.t_end + 1.0][:1]
        elif _NOW.search(q):
            chosen = shots[-1:]
        else:
            chosen = _shots_for(q, shots, time_range, plan.relation, plan)
        if not chosen:
            return Grounded(NOT_SEEN, abstained=True)
        names = []
        for sh in chosen:
            c = shot_colour(seen, sh.t_start, sh.t_end)
            if c and c not in names:
                names.append(c)
        if not names:
            return Grounded(NOT_SEEN, abstained=True)
        return Grounded(f"The scene was mostly {' and then '.join(names)}.", [(sh.t_start, sh.t_end) for sh in chosen])

    # ---- when ----------------------------------------------------------------------------------
    if re.search(r"^\s*(?:at\s+)?(?:when|what time)\b", q) or re.search(r"\bat what (?:time|point|moment)\b", q):
        target = _target_text(named, q, texts)
        if target is not None:
            text, t0, t1 = target
            return Grounded(f"'{text}' appeared at {clock(t0)} and was on screen until {clock(t1)}.", [(t0, t1)])
        colour = next((c for c in COLOUR_NAMES if re.search(rf"\b{c}\b", q)), None)
        if colour and not unknown and not named:
            for sh in shots:
                if shot_colour(seen, sh.t_start, sh.t_end) == colour:
                    return Grounded(f"The {colour} scene started at {clock(sh.t_start)}.", [(sh.t_start, sh.t_end)])
        if re.search(r"\b(scene|cut|change)", q) and not unknown and not named and len(shots) > 1:
            return Grounded("The scene changed at " + ", ".join(clock(sh.t_start) for sh in shots[1:]) + ".",
                            [(sh.t_start, sh.t_start) for sh in shots[1:]])
        return Grounded(NOT_SEEN, abstained=True)

    # ---- what changed --------------------------------------------------------------------------
    if re.search(r"\bwhat (?:\w+\s+)?chang", q) and not unknown:
        return _what_changed(seen, shots, texts, time_range, _clock_point(plan), _edge(plan))

    # ---- on-screen text ------------------------------------------------------------------------
    if re.search(rf"\b({_TEXT_WORDS})\b", q):
        if unknown and not named:
            return Grounded(NOT_SEEN, abstained=True)
        if named and re.search(r"\b(did|was|were|is)\b.*\b(appear|shown|visible|on screen)", q) and \
                re.match(r"\s*(did|was|were|is)\b", q):
            hit = next((h for h in (_find_text(n, texts) for n in named) if h is not None), None)
            if hit is None:
                return Grounded(f"No, {NOT_SEEN[0].lower()}{NOT_SEEN[1:]}", abstained=True)
            return Grounded(f"Yes, '{hit[0]}' appeared at {clock(hit[1])}.", [(hit[1], hit[2])])
        if _NOW.search(q) and seen:
            latest = seen[-1].t
            current = [tx for tx in texts if tx[2] >= latest - 1e-6]
            if not current:
                return Grounded("There is no text on screen right now.", [(latest, latest)])
            listed = ", ".join(f"'{tx[0]}'" for tx in current)
            return Grounded(f"The text on screen now is {listed} (since {clock(current[0][1])}).",
                            [(tx[1], tx[2]) for tx in current])
        point = _clock_point(plan)
        if point is not None and texts:
            at = [tx for tx in texts if tx[1] - 1.0 <= point <= tx[2] + 1.0]
            if not at:
                return Grounded(f"I did not see any text at {clock(point)}.", [(point, point)])
            listed = ", ".join(f"'{tx[0]}'" for tx in at)
            return Grounded(f"At {clock(point)} the text {listed} was on screen.", [(tx[1], tx[2]) for tx in at])
        candidates = [tx for tx in texts if _in_range(tx[1], time_range) or
                      (time_range is not None and tx[1] <= time_range[0] <= tx[2])]
        if plan.relation == "after" and plan.anchor is not None:
            candidates = [tx for tx in candidates if _norm(tx[0]) != _norm(plan.anchor)]
        if not candidates:
            return Grounded(NOT_SEEN, abstained=True)
        k = _ordinal(q)
        if plan.relation == "before" and k is None:
            k = -1  # the one just before
        if plan.relation == "after" and k is None:
            k = 0  # the one just after
        if k is not None and -len(candidates) <= k < len(candidates):
            text, t0, t1 = candidates[k]
            return Grounded(f"'{text}' (at {clock(t0)}).", [(t0, t1)])
        if k is not None:
            return Grounded(NOT_SEEN, abstained=True)
        listed = ", then ".join(f"'{tx[0]}' at {clock(tx[1])}" for tx in candidates)
        return Grounded(f"The text {listed}.", [(tx[1], tx[2]) for tx in candidates])

    # ---- what happened / what did you see ------------------------------------------------------
    if re.search(r"\bwhat\b.*\b(happen|see|saw|seen|shown|there|on screen|going on)", q) and not unknown:
        chosen = _shots_for(q, shots, time_range, plan.relation, plan)
        if not chosen:
            return Grounded(NOT_SEEN, abstained=True)
        return Grounded(" ".join(describe(seen, sh) for sh in chosen), [(sh.t_start, sh.t_end) for sh in chosen])

    if unknown:
        return Grounded(NOT_SEEN, abstained=True)
    return None


def _edge(plan) -> int | None:
    """0 for "at the start", -1 for "at the end" (of the video), else None."""
    phrase = (plan.phrase or "").casefold()
    if re.search(r"\b(start|beginning|first)\b", phrase):
        return 0
    if re.search(r"\bend\b", phrase):
        return -1
    return None


def _clock_point(plan) -> float | None:
    """The moment a clock phrase names ("at 00:00:10", "around 20 seconds in"), else None."""
    phrase = (plan.phrase or "").casefold()
    if plan.relation is not None or re.search(r"\b(last|past|ago)\b", phrase):
        return None
    m = re.search(r"\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?", phrase)
    if m:
        return parse_clock(m.group(0))
    m = re.search(r"(\d+(?:\.\d+)?)\s*(seconds?|secs?|s|minutes?|mins?)\b", phrase)
    if m:
        return float(m.group(1)) * (60.0 if m.group(2).startswith("m") else 1.0)
    return None


def _overlaps(sh: Shot, time_range: tuple[float, float] | None) -> bool:
    return time_range is None or (sh.t_start <= time_range[1] and sh.t_end >= time_range[0])


def _target_text(named: list[str], q: str, texts: list[tuple[str, float, float]]):
    for n in named:
        hit = _find_text(n, texts)
        if hit is not None:
            return hit
    if named:
        return None
    # Unquoted: a text whose words all occur in the question ("when did red car appear?").
    words = set(_norm(q).split())
    hits = [tx for tx in texts if set(_norm(tx[0]).split()) <= words]
    return max(hits, key=lambda tx: len(_norm(tx[0]))) if hits else None


def _shots_for(q: str, shots: Sequence[Shot], time_range, relation, plan=None) -> list[Shot]:
    """The shots a question points at: by ordinal ("the first scene"), at the start/end, at a clock
    time, else those in its time range (for before/after, the nearest one), else all."""
    if plan is not None and _edge(plan) is not None and shots:
        return [shots[_edge(plan)]]
    point = _clock_point(plan) if plan is not None else None
    if point is not None:
        at = [sh for sh in shots if sh.t_start <= point <= sh.t_end + 1.0]
        return at[:1] or [min(shots, key=lambda sh: min(abs(sh.t_start - point), abs(sh.t_end - point)))]
    k = _ordinal(q)
    if k is not None and re.search(r"\b(scene|shot|background)\b", q):
        inside = [sh for sh in shots if _overlaps(sh, time_range)] if time_range is not None else list(shots)
        return [inside[k]] if -len(inside) <= k < len(inside) else []
    if time_range is None:
        return list(shots)
    inside = [sh for sh in shots if _overlaps(sh, time_range) and sh.t_end > sh.t_start or
              time_range[0] <= sh.t_start <= time_range[1]]
    if relation == "before":
        return inside[-1:]
    if relation == "after":
        return inside[:1]
    return inside


def describe(seen: Sequence[Seen], sh: Shot) -> str:
    """One sentence of what the records hold for a shot."""
    frames = [s for s in seen if sh.t_start <= s.t <= sh.t_end]
    parts = []
    colour = shot_colour(seen, sh.t_start, sh.t_end)
    if colour:
        parts.append(f"a mostly {colour} scene")
    texts = text_appearances(frames)
    if texts:
        parts.append("the text " + ", ".join(f"'{t}'" for t, _, _ in texts))
    if frames:
        best = max(frames, key=lambda s: s.objects)
        if best.objects:
            parts.append(count_phrase(best.objects, "object", "objects"))
        best = max(frames, key=lambda s: (s.people, s.people_conf))
        if best.people:
            parts.append(count_phrase(best.people, "person", "people") +
                         (" (uncertain)" if best.people_conf < WEAK else ""))
    body = "; ".join(parts) if parts else "nothing I could recognise"
    return f"{format_span(sh.t_start, sh.t_end)} {body}."


def _count_answer(n: int, conf: float, one: str, many: str, t: float) -> Grounded:
    if n == 0:
        return Grounded(f"I did not see any {many}.", [])
    hedge = "I may have seen" if conf < WEAK else "I saw"
    tail = f" (low confidence: {conf:.2f})" if conf < WEAK else ""
    return Grounded(f"{hedge} {count_phrase(n, one, many)} at {clock(t)}{tail}.", [(t, t)])


def _what_changed(seen, shots, texts, time_range, point=None, edge=None) -> Grounded:
    """The changes at a clock time (within 2 s, else the nearest), first/last ones for the start/end,
    else inside the range: scene cuts with their colours, and text that appeared or disappeared."""
    changes: list[tuple[float, str]] = []
    for prev, sh in zip(shots[:-1], shots[1:], strict=False):
        a, b = shot_colour(seen, prev.t_start, prev.t_end), shot_colour(seen, sh.t_start, sh.t_end)
        what = f"the scene changed from {a} to {b}" if a and b and a != b else "the scene changed"
        changes.append((sh.t_start, what))
    for text, t0, t1 in texts:
        changes.append((t0, f"the text '{text}' appeared"))
        if seen and t1 < seen[-1].t:
            changes.append((t1, f"the text '{text}' disappeared"))
    changes.sort()
    if point is not None and changes:
        near = [c for c in changes if abs(c[0] - point) <= 2.0]
        changes = near or [min(changes, key=lambda c: abs(c[0] - point))]
    elif edge is not None and changes:
        changes = [changes[edge]]
    elif time_range is not None:
        inside = [c for c in changes if time_range[0] - 1.0 <= c[0] <= time_range[1] + 1.0]
        if not inside and changes:
            mid = 0.5 * (time_range[0] + time_range[1])
            inside = [min(changes, key=lambda c: abs(c[0] - mid))]
        changes = inside
    if not changes:
        return Grounded("Nothing changed that I could see.", [])
    text = "; ".join(f"at {clock(t)} {what}" for t, what in changes)
    return Grounded(text[0].upper() + text[1:] + ".", [(t, t) for t, _ in changes])
