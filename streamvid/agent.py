"""StreamAgent: one engine for the live webcam assistant, file QA and stream captioning.

Threads:
- ingestion (``ingest`` on the caller's thread, ``start`` on a background one): the source is read
  on a decode thread and the FramePipeline's stages (pre-gate, device, compress) each run on their
  own thread, joined by bounded queues (``pipeline.StagedRun``); memory is written in order;
- captioning: captions closed events from their stored tokens, off the ingestion thread;
- callers: ``ask`` / ``ask_stream`` read a memory snapshot and hold no lock while generating,
  so ingestion never waits for an answer and an answer never waits for ingestion to drain.
An exception on a background thread is kept and raised in the caller's next call.
"""

from __future__ import annotations

import logging
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from streamvid.backends import AnswerContext, AnswerRun, Backend, GenerationOptions, make_backend
from streamvid.config import AgentConfig, check_device_available, check_generation, preset_config
from streamvid.errors import ConfigError, MemoryFormatError, QuestionError, StreamvidError
from streamvid.memory import MemoryBank
from streamvid.pipeline import StagedRun
from streamvid.prompt import PromptBlock
from streamvid.retrieve import gather
from streamvid.sources import FrameSource, PushSource, open_source
from streamvid.types import NOT_SEEN, Answer, Caption, Citation, Event, Frame, FrameBatch

MAX_QUESTION_CHARS = 2000
log = logging.getLogger("streamvid.agent")
# Batches a live source may have between its reader and the memory write: two let the device work on
# one while the next is pre-gated or the last compressed; more would only make frames wait in queues.
LIVE_IN_FLIGHT = 2


# Text shaped like a model's control tokens ("<image>", "<|im_start|>", "<end_of_utterance>"): in a
# question it would be read as one, so its angle brackets become look-alike quotes.
SPECIAL_TOKEN_LIKE = re.compile(r"<(\|?/?[A-Za-z_][\w:.\-/]*\|?)>")
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def check_question(question: object) -> str:
    """The question, stripped, control characters blanked and special-token look-alikes neutralised;
    QuestionError when it is not usable text (not a str, empty, too long, not valid Unicode)."""
    if not isinstance(question, str):
        raise QuestionError(f"a question must be text, got {type(question).__name__}")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QuestionError(f"the question is not valid Unicode text (a lone surrogate at character {exc.start})") \
            from None
    q = CONTROL_CHARS.sub(" ", question).strip()
    if not q:
        raise QuestionError("the question is empty")
    if len(q) > MAX_QUESTION_CHARS:
        raise QuestionError(f"the question is {len(q)} characters long; the limit is {MAX_QUESTION_CHARS}")
    return SPECIAL_TOKEN_LIKE.sub(r"‹\1›", q)


class Dialogue:
    """Multi-turn chat state: recent turns verbatim, older ones folded into a short summary."""

    def __init__(self, keep_turns: int = 4, summary_chars: int = 600) -> None:
        self.keep_turns = keep_turns
        self.summary_chars = summary_chars
        self.turns: list[tuple[str, str]] = []
        self.summary = ""
        self.last_times: list[tuple[float, float]] = []

    def add(self, question: str, answer: Answer) -> None:
        self.turns.append((question, answer.text))
        if answer.citations:
            self.last_times = [(c.t_start, c.t_end) for c in answer.citations]
        while len(self.turns) > self.keep_turns:
            q, a = self.turns.pop(0)
            first_sentence = a.strip().split(". ")[0][:160]
            self.summary = f"{self.summary} Asked: {q} Answered: {first_sentence}.".strip()[-self.summary_chars:]

    def history(self) -> list[tuple[str, str]]:
        head = [("(Summary of the earlier conversation)", self.summary)] if self.summary else []
        return head + list(self.turns)


@dataclass
class AnswerStream:
    """Iterate for text pieces as they decode; ``answer`` is complete once iteration ends.

    citations: the events in the prompt, known before the first piece (retrieval happens first);
    ``answer.citations`` may narrow them to the events the answer drew on (the offline preset).
    """

    pieces: Iterator[str]
    citations: list[Citation]
    answer: Answer | None = None
    _text: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:
        yield from self.pieces


class StreamAgent:
    """Streaming video understanding: frames in, bounded memory, cited answers out."""

    def __init__(self, config: AgentConfig | None = None, *, backend: Backend | None = None) -> None:
        """An agent with fresh memory. ``backend``: one built for ``config`` (e.g. over models loaded
        elsewhere); None builds the one ``config.backend`` names. To share models, see ``sharing_models``."""
        self.config = config or AgentConfig()
        check_device_available(self.config.device)  # before any model loads
        torch.manual_seed(self.config.seed)
        self.backend = backend if backend is not None else make_backend(self.config)
        self.memory = MemoryBank(self.config, key_dim=self.backend.key_dim, token_dim=self.backend.token_dim,
                                 text_encoder=self.backend.encode_text, image_encoder=self.backend.image_encoder)
        self.memory.extra_state_fn = self.backend.state
        self.dialogue = Dialogue()
        self._source: FrameSource | None = None
        self._ingest_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._t_offset = 0.0
        self._clock: float | None = None  # the newest frame time handed to the pipeline (see _on_clock)
        self._live = False
        self._captions: list[Caption] = []
        self._captions_cond = threading.Condition()
        self._caption_queue: queue.Queue[Event | None] = queue.Queue(maxsize=64)
        self._caption_thread: threading.Thread | None = None
        self._last_captioned: tuple[np.ndarray, float] | None = None
        self.captions_skipped = 0
        self._event_callbacks: list[Callable[[Event], None]] = []

    @classmethod
    def from_preset(cls, name: str = "auto", **overrides: Any) -> StreamAgent:
        """An agent from a named preset (see ``streamvid presets``), with settings overridden by name."""
        return cls(preset_config(name, **overrides))

    def sharing_models(self, config: AgentConfig | None = None, **overrides: Any) -> StreamAgent:
        """A new agent that uses this agent's loaded models, with its own memory, dialogue, stream and
        captions. This is how several agents (e.g. one per browser session) hold one copy of the weights;
        it goes through ``Backend.share``, as every sharing of models does.

        config: the new agent's settings (default: this agent's); overrides: settings to change by name.
        The settings that pick the models (backend, model, clip_model, clip_pretrained, device, dtype)
        must stay the same (ConfigError otherwise).
        """
        config = config or self.config
        config = config.replace(**overrides) if overrides else config
        return type(self)(config, backend=self.backend.share(config))

    @classmethod
    def from_memory(cls, directory: str, *, share_from: Backend | None = None, **overrides: Any) -> StreamAgent:
        """An agent over a memory saved by ``memory.save`` / ``streamvid index``, with the models that built it:
        loaded anew, or ``share_from``'s (a backend already holding those models; see ``Backend.share``)."""
        bank = MemoryBank.load(directory)
        config = bank.config.replace(**overrides) if overrides else bank.config
        try:
            backend = share_from.share(config) if share_from is not None else None
        except ConfigError as e:
            bank.close()
            raise MemoryFormatError(f"{directory}: the memory was built with the {config.preset!r} preset's models "
                                    f"(model {config.model!r}, retrieval encoder {config.clip_model or 'none'!r}), "
                                    f"not the ones given: {e}") from e
        agent = cls(config, backend=backend)
        if agent.backend.token_dim != bank.token_dim or agent.backend.key_dim != bank.key_dim:
            agent.close()
            bank.close()
            raise MemoryFormatError(
                f"{directory}: the memory holds {bank.token_dim}-d tokens and {bank.key_dim}-d keys, but the model "
                f"{agent.config.model!r} makes {agent.backend.token_dim}-d tokens and {agent.backend.key_dim}-d "
                "keys; ask with the preset and model that indexed it"
            )
        try:
            agent.backend.load_state(bank.extra_state)
        except MemoryFormatError as e:
            agent.close()
            bank.close()
            raise MemoryFormatError(f"{directory}: {e}") from None
        agent.memory.close()
        bank.text_encoder = agent.backend.encode_text
        bank.image_encoder = agent.backend.image_encoder
        bank.extra_state_fn = agent.backend.state
        agent.memory = bank
        return agent

    # ------------------------------------------------------------------ ingestion
    def ingest(self, source: Any, *, fps: float | None = None, progress: bool | None = None,
               on_frames: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Read a whole source into memory (blocking) and return memory stats.

        ``on_frames(n)`` is called on this thread each time n more frames are written.
        A source that fails part-way raises after what was read so far has been kept.
        """
        self._raise_background_error()
        src = source if isinstance(source, FrameSource) else open_source(
            source, fps=fps or self.config.fps, size=self.config.frame_size)
        show = sys.stderr.isatty() if progress is None else progress
        total = None
        duration = getattr(src, "duration", None)
        if duration:
            total = int(duration * (fps or self.config.fps)) + 1
        self._start_captioner()
        with src, tqdm(total=total, disable=not show, unit="frame", desc="indexing", dynamic_ncols=True) as bar:
            def written(n: int) -> None:
                bar.update(n)
                bar.set_postfix(events=self.memory.stats()["events"], refresh=False)
                if on_frames is not None:
                    on_frames(n)

            self._run(src, written)
        self._drain_captions()
        self._raise_background_error()
        return self.memory.stats()

    def start(self, source: Any = None, *, fps: float | None = None) -> FrameSource:
        """Ingest in the background from a source, or from frames given to ``push`` when source is None."""
        self._raise_background_error()
        if self._ingest_thread is not None and self._ingest_thread.is_alive():
            raise StreamvidError("the agent is already ingesting; call stop() first")
        if source is None:
            src: FrameSource = PushSource(fps=fps, size=self.config.frame_size)
        elif isinstance(source, FrameSource):
            src = source
        else:
            src = open_source(source, fps=fps or self.config.fps, size=self.config.frame_size)
        self._source = src
        self._live = bool(getattr(src, "is_live", True))
        self._stop.clear()
        self._start_captioner()
        self._ingest_thread = threading.Thread(target=self._ingest_loop, args=(src,), name="streamvid-ingest",
                                               daemon=True)
        self._ingest_thread.start()
        return src

    def push(self, rgb: np.ndarray, t: float | None = None) -> bool:
        """Give a frame to the running push source; False when it replaced an unread frame (a drop)."""
        self._raise_background_error()
        if not isinstance(self._source, PushSource) or self._ingest_thread is None:
            raise StreamvidError("push() needs a running push source: call start() with no source first")
        return self._source.push(rgb, t)

    def stop(self) -> dict[str, Any]:
        """Stop background ingestion, close the open event, finish captions; returns memory stats."""
        self._stop.set()
        if self._source is not None:
            self._source.close()
        if self._ingest_thread is not None:
            self._ingest_thread.join()
            self._ingest_thread = None
        self._drain_captions()
        if self._caption_thread is not None:
            self._caption_queue.put(None)
            self._caption_thread.join()
            self._caption_thread = None
        self._raise_background_error()
        return self.memory.stats()

    def close(self) -> None:
        """Stop everything and release the memory's archive."""
        try:
            self.stop()
        finally:
            self.memory.close()

    def __enter__(self) -> StreamAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_running(self) -> bool:
        return self._ingest_thread is not None and self._ingest_thread.is_alive()

    @property
    def dropped_frames(self) -> int:
        """Frames a live source dropped because ingestion was busy (newest frame wins)."""
        return 0 if self._source is None else int(self._source.dropped)

    def _ingest_loop(self, src: FrameSource) -> None:
        try:
            self._run(src, background=True)
        except BaseException as exc:  # surfaced to the caller's next call
            self._error = self._error or exc

    def _run(self, src: FrameSource, written: Callable[[int], None] | None = None, background: bool = False) -> None:
        """Read ``src`` into memory through the frame pipeline's stages (on their own threads unless
        ``config.ingest_staged`` is off), writing memory on this thread, in order. A failure anywhere
        raises here once everything made before it is written; the open event is closed either way."""
        run = StagedRun(self._batches(src, stoppable=background), self.backend.stages(),
                        maxsize=self.config.queue_batches, threaded=self.config.ingest_staged,
                        max_in_flight=LIVE_IN_FLIGHT if src.is_live else None, name="streamvid-ingest")
        try:
            for batch in run:
                self._write_batch(batch)
                if written is not None:
                    written(batch.frames)
        finally:
            try:
                if run.alive and src.is_live:
                    run.cancel()
                    src.close()  # wakes a producer waiting for the next live frame
                run.close()
            finally:
                self._end_of_stream()

    def _batches(self, src: FrameSource, stoppable: bool = False) -> Iterator[list[Frame]]:
        """Source frames (on the memory clock) grouped as the pipeline takes them: ``frames_per_batch`` at
        a time from a file; from a live source, whatever is waiting (up to that), never waiting
        for more. A source that fails part-way first gives the frames read before the failure. With
        ``stoppable``, ``stop()`` ends it (a push source still gives the frames already pushed)."""
        size = self.config.frames_per_batch
        read = getattr(src, "read", None) if src.is_live else None
        # A frame already handed over is ingested even when stop() came meanwhile, and a closed push
        # source still yields the (at most max_pending) frames waiting in it, so every pushed frame ends
        # up in frames_seen or counted as dropped.
        drain = not stoppable or isinstance(src, PushSource)
        timer = self.backend.timer
        batch: list[Frame] = []
        self._clock = self.memory.now
        try:
            it = iter(src)
            while True:
                t0 = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    break
                if not src.is_live:
                    timer.add("decode", (time.perf_counter() - t0) * 1000.0, 1)
                batch.append(self._on_clock(frame))
                while read is not None and len(batch) < size:
                    more = read(timeout=0)
                    if more is None:
                        break
                    batch.append(self._on_clock(more))
                if len(batch) >= size or read is not None:
                    out, batch = batch, []
                    yield out
                if self._stop.is_set() and not drain:
                    break
        except Exception:
            if batch:
                yield batch
            raise
        if batch:
            yield batch

    def _on_clock(self, frame: Frame) -> Frame:
        """Keep memory times non-decreasing when a second source starts its clock at 0 again. The newest
        time is tracked here (``_clock``: memory's ``now`` when the source starts, then the last frame
        handed on), so the reader never waits for the bank's lock while the memory thread writes."""
        if self._clock is not None and frame.t + self._t_offset < self._clock:
            self._t_offset = self._clock - frame.t + 1.0 / max(self.config.fps, 1e-6)
        self._clock = frame.t + self._t_offset
        return Frame(frame.index, self._clock, frame.rgb) if self._t_offset else frame

    def _write_batch(self, batch: FrameBatch) -> None:
        """A batch from the pipeline → memory, in one call. Every frame is counted once in ``frames_seen``:
        a kept one as written, a dropped repeat as seen (which also stretches the open event's span)."""
        if batch.ready is not None:
            batch.ready.synchronize()  # its copy to the host: device time, not the memory write's
        with self.backend.timer.stage("memory", batch.frames):
            self._close_events(self.memory.write_batch(batch))

    def _end_of_stream(self) -> None:
        self._close_events(self.memory.flush())

    # ------------------------------------------------------------------ captions
    def _start_captioner(self) -> None:
        if not self.config.captions or (self._caption_thread is not None and self._caption_thread.is_alive()):
            return
        self._caption_thread = threading.Thread(target=self._caption_loop, name="streamvid-captions", daemon=True)
        self._caption_thread.start()

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event that closes from now on, in order, on the ingestion
        thread, before the event is captioned. Keep it quick (hand slow work to another thread); an
        exception in it is logged and ingestion goes on. Returns a function that unsubscribes."""
        self._event_callbacks = [*self._event_callbacks, callback]

        def unsubscribe() -> None:
            self._event_callbacks = [c for c in self._event_callbacks if c is not callback]

        return unsubscribe

    def _close_events(self, events: list[Event]) -> None:
        for event in events:
            for callback in self._event_callbacks:
                try:
                    callback(event)
                except Exception:
                    log.exception("an on_event callback failed on event %d", event.id)
        if not self.config.captions:
            return
        for event in events:
            try:
                self._caption_queue.put_nowait(event)
            except queue.Full:
                self.captions_skipped += 1

    def _drain_captions(self) -> None:
        if self._caption_thread is not None:
            self._caption_queue.join()

    def _caption_loop(self) -> None:
        while True:
            event = self._caption_queue.get()
            try:
                if event is None:
                    return
                speak = self._should_caption(event)
                if speak or self.backend.caption_every_event:
                    self._caption(event, speak)
                else:
                    self.captions_skipped += 1
            except BaseException as exc:
                self._error = self._error or exc
            finally:
                self._caption_queue.task_done()

    def _should_caption(self, event: Event) -> bool:
        """Speak/silence: skip an event too like the last captioned one, or too soon after it."""
        if event.tokens is None or event.n_tokens == 0:
            return False
        if self._last_captioned is None:
            return True
        key, t_end = self._last_captioned
        if event.t_start - t_end < self.config.caption_min_gap_s:
            return False
        return float(np.dot(key, event.key)) < self.config.caption_similar

    def _caption(self, event: Event, speak: bool = True) -> None:
        """Caption an event into memory; with ``speak``, also into the captions feed."""
        text = self.backend.caption(event)
        if not text:
            self.captions_skipped += 1
            return
        key = self.backend.encode_text([text])[0]
        self.memory.set_caption(event.id, text, key=key)
        if not speak:
            self.captions_skipped += 1
            return
        self._last_captioned = (np.asarray(event.key, dtype=np.float32), event.t_end)
        with self._captions_cond:
            self._captions.append(Caption(event.t_start, event.t_end, text, event.id))
            self._captions_cond.notify_all()

    def captions(self, follow: bool = False, timeout: float | None = None) -> Iterator[Caption]:
        """Captions in order: those so far, and with ``follow`` new ones as events close, until stop()."""
        i = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._raise_background_error()
            with self._captions_cond:
                while follow and i >= len(self._captions) and self._captions_pending():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return
                    self._captions_cond.wait(timeout=0.2 if left is None else min(0.2, left))
                batch = self._captions[i:]
            if not batch:
                return
            i += len(batch)
            yield from batch

    def _captions_pending(self) -> bool:
        """More captions may still come: ingestion runs or events wait to be captioned."""
        return self.is_running or self._caption_queue.unfinished_tasks > 0

    # ------------------------------------------------------------------ answering
    def ask(self, question: str, **generation: Any) -> Answer:
        """Answer from memory now (ingestion keeps running); see ``ask_stream`` for the pieces."""
        stream = self.ask_stream(question, **generation)
        for _ in stream:
            pass
        assert stream.answer is not None
        return stream.answer

    def ask_stream(self, question: str, *, max_new_tokens: int | None = None, do_sample: bool = False,
                   temperature: float = 0.7, top_p: float = 0.9, dialogue: Dialogue | None = None) -> AnswerStream:
        """Retrieve, then stream the answer's text pieces; ``.answer`` holds the Answer at the end.

        dialogue: the conversation this question continues (read, then extended with this turn); None
        is the agent's own. An API server passes one built from the client's message list.
        """
        dialogue = self.dialogue if dialogue is None else dialogue
        self._raise_background_error()
        q = check_question(question)
        check_generation(max_new_tokens, temperature, top_p)
        t0 = time.perf_counter()
        snap = self.memory.snapshot()
        plan, blocks, used = gather(snap, q, budget=self.config.read_tokens, k=self.config.search_k,
                                    previous=dialogue.last_times or None, query=self.backend.query_tokens(q))
        retrieval_ms = (time.perf_counter() - t0) * 1000.0
        citations = citations_for(blocks, snap)
        context = AnswerContext(blocks=blocks, question=q, history=dialogue.history(),
                                now=snap.now if self._live and self.is_running else None,
                                captions={e.id: e.caption for e, _ in used if e.caption},
                                scores={e.id: float(score) for e, score in used})
        options = GenerationOptions(max_new_tokens=max_new_tokens or self.config.max_new_tokens, do_sample=do_sample,
                                    temperature=temperature, top_p=top_p, seed=self.config.seed,
                                    repetition_penalty=self.config.repetition_penalty,
                                    no_repeat_ngram_size=self.config.no_repeat_ngram_size)
        if self.config.abstain_below is not None and plan.content and not plan.about_now and \
                max((score for _, score in used), default=0.0) < self.config.abstain_below:
            run = AnswerRun(pieces=iter([NOT_SEEN]), timings=lambda: {"ttft_ms": 0.0, "abstained": 1.0}, spans=[])
        else:
            run = self.backend.answer(context, options)
        result = AnswerStream(pieces=iter(()), citations=citations)

        def pieces() -> Iterator[str]:
            for piece in run.pieces:
                result._text.append(piece)
                yield piece
            timings = {"retrieval_ms": retrieval_ms, **run.timings()}
            text = "".join(result._text).strip()
            used = run.used(text) if run.used is not None else None
            cited = [c for c in citations if c.event_id in used] if used else citations
            if run.spans is not None:
                cited = citations_of_spans(run.spans, snap)
            result.answer = Answer(text, cited, timings)
            dialogue.add(q, result.answer)

        result.pieces = pieces()
        return result

    def stage_ms_per_frame(self) -> dict[str, float]:
        """Mean ms per frame of each ingestion stage so far (key, gate, vision, compress, memory)."""
        return self.backend.stage_ms()

    def _raise_background_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            if isinstance(err, StreamvidError):
                raise err
            raise StreamvidError(f"background ingestion failed: {err!r}") from err


def citations_for(blocks: list[PromptBlock], snap: Any) -> list[Citation]:
    """One citation per distinct event (or short-term span) in the prompt, in time order."""
    thumbs = {e.id: e.thumbnail for e in getattr(snap, "events", ())}
    seen: dict[tuple[int, float, float], Citation] = {}
    for b in sorted(blocks, key=lambda b: (b.t_start, b.t_end)):
        key = (b.event_id, b.t_start, b.t_end)
        if key not in seen:
            seen[key] = Citation(b.event_id, float(b.t_start), float(b.t_end), thumbs.get(b.event_id))
    return list(seen.values())


def citations_of_spans(spans: list[tuple[float, float]], snap: Any) -> list[Citation]:
    """One citation per event overlapping any of the (t0, t1) spans, in time order; a span no closed
    event covers (the open event, live) is cited as itself."""
    out: dict[tuple[int, float, float], Citation] = {}
    for t0, t1 in spans:
        hits = snap.events_between(t0 - 1e-6, t1 + 1e-6)
        for e in hits:
            out[(e.id, e.t_start, e.t_end)] = Citation(e.id, float(e.t_start), float(e.t_end), e.thumbnail)
        if not hits:
            out[(-1, t0, t1)] = Citation(-1, float(t0), float(t1), None)
    return sorted(out.values(), key=lambda c: (c.t_start, c.t_end))
