"""Question → what to read from memory.

1. ``plan_query`` splits a question into its content ("what did I hold up") and a time
   constraint ("in the last 5 minutes", "at the start", "before the dog came in", "and after
   that?") resolved to a time range on the stream clock (MRAG-style query decomposition).
2. ``retrieve`` searches memory for the content inside (and softly around) that range and
   ranks events by semantic × temporal relevance.
3. ``assemble`` turns the chosen events, plus the short-term frames for questions about now,
   into PromptBlocks under a constant token budget, in chronological order; with a question
   embedding in token space, each block is pruned to its share by relevance
   (streamvid.compress.prune.prune_tokens), otherwise merged down (merge_adjacent_frames).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from streamvid.errors import QuestionError
from streamvid.memory.long_term import consolidate
from streamvid.memory.short_term import ShortTermFrame
from streamvid.prompt import PromptBlock
from streamvid.types import Event, TokenSet

UNITS = {"second": 1.0, "sec": 1.0, "s": 1.0, "minute": 60.0, "min": 60.0, "hour": 3600.0, "hr": 3600.0, "h": 3600.0}
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "few": 3,
                "couple of": 2, "a couple of": 2, "a few": 3}
_NUM = r"(?P<num>\d+(?:\.\d+)?|a couple of|couple of|a few|few|an|a|one|two|three|four|five|six|seven|eight|" \
       r"nine|ten|fifteen|twenty|thirty)"
_UNIT = r"(?P<unit>seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h)"
# Words that carry no searchable content once the time phrase is gone ("what happened …?").
GENERIC_WORDS = frozenset({
    "what", "whats", "what's", "happened", "happen", "happens", "happening", "is", "was", "were", "are",
    "going", "on", "did", "do", "does", "you", "see", "saw", "seen", "and", "then", "so", "the", "a", "an",
    "i", "me", "my", "show", "tell", "describe", "anything", "something", "there", "here", "it", "that",
    "this", "next", "else",
})


# "Before X" ends just before X starts (and "after X" begins just after it ends), so X itself,
# which touches the range at one instant, is not part of it.
JUST = 1e-3


@dataclass(frozen=True)
class QueryPlan:
    """What a question asks for.

    content:    text to search memory with ("" when the question is only about time)
    time_range: (t0, t1) seconds on the stream clock, or None for the whole stream
    about_now:  the question is about the present (short-term memory must be read)
    relation:   "before" / "after" for questions relative to something or to a previous answer
    anchor:     the <something> of "before/after <something>" (None for follow-ups)
    phrase:     the time phrase found in the question, as written
    order:      "first" / "last" when the question asks for the earliest / latest match ("what text
                appeared last?", "when did X first appear?", "when did X appear?"): event times rank
    """

    question: str
    content: str
    time_range: tuple[float, float] | None = None
    about_now: bool = False
    relation: str | None = None
    anchor: str | None = None
    phrase: str | None = None
    order: str | None = None


def _amount(num: str, unit: str) -> float:
    num = num.lower()
    value = float(NUMBER_WORDS[num]) if num in NUMBER_WORDS else float(num)
    unit = unit.lower()
    base = unit.rstrip("s") if unit not in ("s", "secs") else "s"
    return value * UNITS.get(base, UNITS.get(unit, 1.0))


def parse_clock(text: str) -> float:
    """"00:12:30" / "12:30" / "1:02:03" → seconds."""
    parts = [float(p) for p in text.split(":")]
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds


def _content_without(question: str, span: tuple[int, int]) -> str:
    text = (question[: span[0]] + " " + question[span[1]:]).strip()
    return _clean(text)


def _clean(text: str) -> str:
    text = re.sub(r"[?!.,;:]+", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"^(?:(?:and|then|so|but|also|ok|okay)\b\s*)+", "", text, flags=re.IGNORECASE)
    words = re.findall(r"[a-z0-9']+", text.lower())
    if all(w in GENERIC_WORDS for w in words):
        return ""
    return text


_FIRST = re.compile(r"\b(first|earliest|initially|originally)\b|^\s*when\s+(?:did|was|were)\b.*\b(appear|show|start|"
                    r"begin|enter|arrive|come)", re.IGNORECASE)
_LAST = re.compile(r"\b(last|latest|final|finally|most recent(?:ly)?)\b", re.IGNORECASE)
_ORDER_WORDS = re.compile(r"\b(first|earliest|initially|originally|last|latest|final|finally|most recent(?:ly)?)\b",
                          re.IGNORECASE)


def question_order(question: str) -> str | None:
    """"first" / "last" for questions about the earliest / latest occurrence, else None. "In the last
    5 minutes" is a time range, not an order: the caller checks the time phrase first."""
    if _LAST.search(question):
        return "last"
    if _FIRST.search(question):
        return "first"
    return None


def plan_query(question: str, now: float, **kwargs) -> QueryPlan:
    """``plan_time`` (the question's time phrase), plus the order it asks for ("first" / "last")."""
    plan = plan_time(question, now, **kwargs)
    rest = plan.question if plan.phrase is None else plan.question.replace(plan.phrase, " ")
    order = question_order(rest) if plan.relation is None or plan.anchor is not None else None
    if order is None:
        return plan
    content = _clean(_ORDER_WORDS.sub(" ", plan.content)) if plan.content else plan.content
    return dataclasses.replace(plan, order=order, content=content)


def plan_time(question: str, now: float, *, previous: Sequence[tuple[float, float]] | None = None,
               search: Callable[[str], list[Event]] | None = None, recent_s: float = 30.0,
               edge_fraction: float = 0.1, min_edge_s: float = 30.0, clock_window_s: float = 15.0) -> QueryPlan:
    """Turn a question's time phrase into a time range (seconds) on a stream that has reached ``now``.

    previous: (t_start, t_end) of the previous answer's citations, for "and after that?"
    search:   text → events, best first; resolves "before/after <something>"
    recent_s: how far back "just now" / "right now" looks
    edge_fraction, min_edge_s: "at the start" / "at the end" cover max(min_edge_s, edge_fraction·now)
    clock_window_s: half-width around "at 00:12:30"; "around N minutes in" uses max(this, N/4)
    """
    if not isinstance(question, str) or not question.strip():
        raise QuestionError("the question is empty")
    now = max(0.0, float(now))
    q = question.strip()
    low = q.lower()
    edge = min(now, max(min_edge_s, edge_fraction * now))

    # Follow-ups relative to the previous answer: "and after that?", "what happened next?", "before that?"
    m = re.search(r"\b(?P<rel>after|before)\s+(?:that|this|then)\b", low) or re.fullmatch(
        r"\W*(?:and\s+)?(?:then\s+what|what\s+(?:happened|came|comes|happens)\s+(?:next|then|after)|what\s+next"
        r"|and\s+then|next)\W*", low)
    if m:
        relation = (m.groupdict().get("rel") or "after")
        content = _content_without(q, m.span())
        time_range = None
        if previous:
            if relation == "after":
                time_range = (max(t1 for _, t1 in previous) + JUST, now)
            else:
                time_range = (0.0, max(0.0, min(t0 for t0, _ in previous) - JUST))
        return QueryPlan(q, content, time_range, about_now=False, relation=relation, phrase=m.group(0))

    # "in the last 5 minutes", "over the past hour", "during the last few seconds"
    m = re.search(rf"\b(?:in|over|during|within|for)?\s*the\s+(?:last|past)\s+(?:{_NUM}\s+)?{_UNIT}\b", low)
    if m:
        span = _amount(m.group("num") or "1", m.group("unit"))
        return QueryPlan(q, _content_without(q, m.span()), (max(0.0, now - span), now), about_now=True,
                         phrase=q[m.start():m.end()].strip())

    # "2 minutes ago"
    m = re.search(rf"\b{_NUM}\s+{_UNIT}\s+ago\b", low)
    if m:
        center = now - _amount(m.group("num"), m.group("unit"))
        half = max(clock_window_s, 0.5 * (now - center))
        return QueryPlan(q, _content_without(q, m.span()), (max(0.0, center - half), min(now, center + half)),
                         about_now=False, phrase=q[m.start():m.end()])

    # "just now", "right now", "at the moment", "currently", "now"
    m = re.search(r"\b(just\s+now|right\s+now|at\s+the\s+moment|currently|at\s+present|now)\b", low)
    if m:
        return QueryPlan(q, _content_without(q, m.span()), (max(0.0, now - recent_s), now), about_now=True,
                         phrase=q[m.start():m.end()])

    # "at the start", "at the beginning", "in the beginning", "at first"
    m = re.search(r"\b(?:at|in|near)\s+the\s+(?:very\s+)?(?:start|beginning)(?:\s+of\s+the\s+(?:video|stream|clip))?"
                  r"|\bat\s+first\b", low)
    if m:
        return QueryPlan(q, _content_without(q, m.span()), (0.0, edge), about_now=False, phrase=q[m.start():m.end()])

    # "at the end", "in the end", "towards the end of the video"
    m = re.search(r"\b(?:at|in|near|towards?)\s+the\s+(?:very\s+)?end(?:\s+of\s+the\s+(?:video|stream|clip))?\b", low)
    if m:
        return QueryPlan(q, _content_without(q, m.span()), (max(0.0, now - edge), now), about_now=True,
                         phrase=q[m.start():m.end()])

    # "at 00:12:30", "at 12:30", "around 1:02:03"
    m = re.search(r"\b(?:(?:at|around|near|by)\s+)?(?P<clock>\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?)\b", low)
    if m:
        t = parse_clock(m.group("clock"))
        return QueryPlan(q, _content_without(q, m.span()), (max(0.0, t - clock_window_s), t + clock_window_s),
                         about_now=False, phrase=q[m.start():m.end()])

    # "around 2 minutes in", "about 90 seconds into the video", "at minute 3", "at the 2 minute mark"
    m = re.search(rf"\b(?:(?:around|about|at|near|roughly)\s+)?(?:the\s+)?{_NUM}[\s-]+{_UNIT}"
                  rf"(?:\s+(?:in|into\s+the\s+(?:video|stream|clip)|mark))\b", low) or \
        re.search(r"\bat\s+minute\s+(?P<num>\d+(?:\.\d+)?)(?P<unit>)\b", low)
    if m:
        unit = m.group("unit") or "minute"
        t = _amount(m.group("num"), unit)
        half = max(clock_window_s, 0.25 * t)
        return QueryPlan(q, _content_without(q, m.span()), (max(0.0, t - half), t + half), about_now=False,
                         phrase=q[m.start():m.end()])

    # "after 2 minutes", "before the 10 minute mark"
    m = re.search(rf"\b(?P<rel>before|after)\s+(?:the\s+)?{_NUM}[\s-]+{_UNIT}(?:\s+(?:mark|in))?\b(?!\s+ago)", low)
    if m:
        t = _amount(m.group("num"), m.group("unit"))
        time_range = (0.0, t) if m.group("rel") == "before" else (t, max(now, t))
        return QueryPlan(q, _content_without(q, m.span()), time_range, about_now=False, relation=m.group("rel"),
                         phrase=q[m.start():m.end()])

    # "before <something>" / "after <something>": resolved through search
    m = re.search(r"\b(?P<rel>before|after)\s+(?P<anchor>[^?!.]+)", low)
    if m:
        relation = m.group("rel")
        anchor = _clean(q[m.start("anchor"):m.end("anchor")]) or q[m.start("anchor"):m.end("anchor")].strip()
        content = _clean(q[: m.start()])
        time_range = None
        hits = search(anchor) if search is not None else []
        if hits:
            ref = hits[0]
            time_range = ((0.0, max(0.0, ref.t_start - JUST)) if relation == "before"
                          else (ref.t_end + JUST, max(now, ref.t_end + JUST)))
        return QueryPlan(q, content, time_range, about_now=False, relation=relation, anchor=anchor,
                         phrase=q[m.start():m.end()])

    return QueryPlan(q, _clean(q))


# ---- ranking -------------------------------------------------------------------------------------
def temporal_relevance(t_start: float, t_end: float, time_range: tuple[float, float] | None) -> float:
    """1 inside (overlapping) the range, decaying as exp(−gap / max(30 s, range width)) outside it."""
    if time_range is None:
        return 1.0
    r0, r1 = time_range
    gap = max(0.0, r0 - t_end, t_start - r1)
    return math.exp(-gap / max(30.0, r1 - r0))


def rank_events(scored: Sequence[tuple[Event, float]], plan: QueryPlan) -> list[tuple[Event, float]]:
    """(event, similarity) → (event, semantic × temporal), best first (earlier event on a tie).

    Without content every event's semantic relevance is 1 and time alone ranks.
    """
    out = []
    for e, sim in scored:
        semantic = max(float(sim), 0.0) if plan.content else 1.0
        out.append((e, semantic * temporal_relevance(e.t_start, e.t_end, plan.time_range)))
    return sorted(out, key=lambda es: (-es[1], es[0].t_start, es[0].id))


def retrieve(snapshot, plan: QueryPlan, k: int = 5) -> list[tuple[Event, float]]:
    """The ``k`` most relevant events for a plan, from a MemorySnapshot (or MemoryBank), best first.

    With content: events found inside the range plus the best ones anywhere (a soft constraint:
    outside the range they are down-weighted by temporal relevance). Without content: the events
    in the range nearest its end (the most recent ones when there is no range). With an order
    ("first" / "last"), event times decide among the matches (see ``order_events``).
    """
    if k <= 0:
        return []
    if plan.order is not None:
        return order_events(snapshot, plan, k)
    if plan.content:
        found: dict[int, tuple[Event, float]] = {}
        passes = [plan.time_range, None] if plan.time_range is not None else [None]
        for time_range in passes:
            for e, s in snapshot.search_scored(plan.content, k=k, time_range=time_range, neighbours=0):
                if e.id not in found or found[e.id][1] < s:
                    found[e.id] = (e, s)
        candidates = list(found.values())
    else:
        t0, t1 = plan.time_range if plan.time_range is not None else (-math.inf, math.inf)
        candidates = [(e, 1.0) for e in snapshot.events_between(t0, t1, limit=k)]
    return rank_events(candidates, plan)[:k]


def order_events(snapshot, plan: QueryPlan, k: int, relative: float = 0.8) -> list[tuple[Event, float]]:
    """Events for "first" / "last" questions: the matches (similarity at least ``relative`` × the best
    one's, within the time range) sorted by time, earliest first for "first", latest first for "last";
    without content, the events at the range's (or the stream's) start or end."""
    t0, t1 = plan.time_range if plan.time_range is not None else (-math.inf, math.inf)
    if plan.content:
        hits = snapshot.search_scored(plan.content, k=max(4 * k, 16), time_range=plan.time_range, neighbours=0)
        if not hits:
            return []
        best = max(s for _, s in hits)
        matches = [(e, s) for e, s in hits if s >= relative * best]
    else:
        matches = [(e, 1.0) for e in snapshot.events_between(t0, t1)]
    matches.sort(key=lambda es: (es[0].t_start, es[0].id), reverse=plan.order == "last")
    return matches[:k]


# ---- assembling ------------------------------------------------------------------------------------
def _share(sizes: Sequence[int], budget: int) -> list[int]:
    """Split ``budget`` over items of ``sizes`` tokens: water-filling, each gets min(size, fair share),
    leftovers go to the larger ones; earlier items get the remainder tokens first."""
    alloc = [0] * len(sizes)
    left = budget
    open_items = [i for i, s in enumerate(sizes) if s > 0]
    while left > 0 and open_items:
        fair = max(1, left // len(open_items))
        still = []
        for i in open_items:
            give = min(fair, sizes[i] - alloc[i], left)
            alloc[i] += give
            left -= give
            if alloc[i] < sizes[i]:
                still.append(i)
        open_items = still
    return alloc


def _short_term_sources(frames: Sequence[ShortTermFrame]) -> list[PromptBlock]:
    """The short-term frames as one block per run of frames with the same grid."""
    out: list[PromptBlock] = []
    run: list[ShortTermFrame] = []
    for f in [*frames, None]:
        if run and (f is None or f.frame.grid != run[0].frame.grid):
            out.append(PromptBlock.of(TokenSet.cat([r.frame for r in run]), run[0].t, run[-1].t))
            run = []
        if f is not None:
            run.append(f)
    return out


def _reduce(src: PromptBlock, budget: int, query: torch.Tensor | None) -> PromptBlock:
    """``src`` cut to at most ``budget`` tokens: pruned by relevance to ``query`` [d], or merged down."""
    if src.n <= budget:
        return src
    if query is None:
        return PromptBlock.of(consolidate(src, budget), src.t_start, src.t_end, src.event_id)
    from streamvid.compress.prune import prune_tokens

    frame_times, groups = torch.unique(src.times, return_inverse=True)
    pruned = prune_tokens(src.tokens, groups, query.to(src.tokens.device), budget)
    kept = pruned.source >= 0
    source = pruned.source.clamp_min(0)
    # A frame's summary token stands for the whole frame: it sits at the grid's centre cell.
    centre = (src.grid[0] // 2) * src.grid[1] + src.grid[1] // 2
    visual = TokenSet(pruned.tokens, torch.where(kept, src.times[source], frame_times[pruned.group]),
                      torch.where(kept, src.positions[source], centre),
                      torch.where(kept, src.sizes[source], 1.0), src.grid)
    return PromptBlock.of(visual, src.t_start, src.t_end, src.event_id)


def assemble(events: Sequence[Event], short_term: Sequence[ShortTermFrame], budget: int, *,
             query: torch.Tensor | None = None) -> list[PromptBlock]:
    """PromptBlocks holding min(budget, available) tokens in total, in chronological order.

    events:     the retrieved events, most relevant first; their tokens must be loaded
    short_term: recent frames to include (pass () when the question is not about now); events lying
                entirely inside the short-term span are left out, the frames already show them
    budget:     total tokens (config.read_tokens), split fairly over the blocks (short-term first,
                then events in the given order, get the remainder of an uneven split)
    query:      [d] the question embedded in token space: blocks are pruned by relevance to it;
                without it, blocks are merged down (question-agnostic)
    """
    if budget < 1:
        raise QuestionError(f"the read token budget must be >= 1, got {budget}")
    sources = _short_term_sources(short_term)
    lo = min((s.t_start for s in sources), default=math.inf)
    hi = max((s.t_end for s in sources), default=-math.inf)
    seen: set[int] = set()
    for e in events:
        if e.id in seen or e.tokens is None or e.n_tokens == 0 or (lo <= e.t_start and e.t_end <= hi):
            continue
        seen.add(e.id)
        sources.append(PromptBlock.of(e.visual, e.t_start, e.t_end, e.id))
    # Shares are handed out in priority order (short-term first, then events as ranked), so the
    # remainder of an uneven split goes to what matters most; blocks are then put in time order.
    alloc = _share([s.n for s in sources], budget)
    chosen = sorted(((s, a) for s, a in zip(sources, alloc, strict=True) if a > 0),
                    key=lambda sa: (sa[0].t_start, sa[0].t_end, sa[0].event_id))
    return [_reduce(s, a, query) for s, a in chosen]


def gather(snapshot, question: str, *, budget: int, k: int = 5, now: float | None = None,
           previous: Sequence[tuple[float, float]] | None = None,
           query: torch.Tensor | None = None) -> tuple[QueryPlan, list[PromptBlock], list[tuple[Event, float]]]:
    """Plan, retrieve and assemble in one call: (plan, blocks in chronological order, the events in
    those blocks with their ranking scores, best first).

    snapshot: a MemorySnapshot (``bank.snapshot()``); now defaults to its newest frame time.
    query:    [d] the question in token space, for read-time pruning (optional).
    """
    now = snapshot.now if now is None else now
    now = 0.0 if now is None else float(now)

    def anchor_search(text: str) -> list[Event]:
        return [e for e, _ in snapshot.search_scored(text, k=1, neighbours=0)]

    plan = plan_query(question, now, previous=previous, search=anchor_search)
    ranked = retrieve(snapshot, plan, k)
    short = snapshot.short_term if plan.about_now else ()
    blocks = assemble([e for e, _ in ranked], short, budget, query=query)
    used = {b.event_id for b in blocks}
    return plan, blocks, [(e, s) for e, s in ranked if e.id in used]
