"""Index many video files over Ray actors into a library store (``streamvid index-library``).

Each actor loads one set of models (the preset's Video-LLM and retrieval encoder) and indexes
one file at a time with the same pipeline as ``streamvid index``: a fresh ``StreamAgent`` over
those models ingests the file and saves its memory under the store folder (or uploads it to the
store's object-store URL). The driver writes
the file's keys into Milvus (one writer, so a Milvus Lite file works from many workers), shows
progress, retries a failed file once on a fresh actor while the others carry on, and skips
files whose content hash is already in the store.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamvid.errors import ConfigError, SourceError, StoreError, WorkerStartError
from streamvid.library.objects import memories_at
from streamvid.library.store import MilvusStore, VideoRecord, key_rows, parse_uri
from streamvid.memory.persist import sha256_file

log = logging.getLogger("streamvid.library")

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"}
PROGRESS_EVERY_S = 0.5
SCRATCH_PREFIX = "streamvid-worker-"
SCRATCH_OWNER = "streamvid-worker.pid"  # in every scratch folder: its worker's pid and pid namespace


def _pid_namespace() -> str:
    """Which processes a pid names: this pid namespace (Linux), else this host. A temp folder shared by
    containers with their own pid namespaces must not have one container judge another's pids."""
    try:
        return f"pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return f"host:{socket.gethostname()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_dead_scratch(parent: str | Path | None = None) -> list[Path]:
    """Remove the scratch folders that killed workers on this machine left in ``parent`` (the temp folder
    by default): only folders named ``streamvid-worker-*`` holding a ``streamvid-worker.pid`` file of
    this pid namespace whose process is gone. Returns the folders removed."""
    removed = []
    here = _pid_namespace()
    for d in Path(parent or tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*"):
        try:
            pid_text, namespace = (d / SCRATCH_OWNER).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue  # not a worker's folder, or not ours to judge
        if namespace == here and pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def make_scratch() -> Path:
    """This process's scratch folder for live archives (removed at exit; a killed worker's is swept by the
    next worker that starts on the machine)."""
    sweep_dead_scratch()
    d = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    (d / SCRATCH_OWNER).write_text(f"{os.getpid()} {_pid_namespace()}")
    return d


def ray_error_cause(exc: BaseException) -> str:
    """The last line of what a Ray task or actor error carries (the remote exception's ``Type: message``),
    without terminal colours or the module path of streamvid's own errors."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(getattr(exc, "cause", None) or exc))
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    last = lines[-1] if lines else type(exc).__name__
    return last.removeprefix("streamvid.errors.")


def content_id(path: str | Path) -> str:
    """A file's id in the library: the first 32 hex digits of the SHA-256 of its bytes."""
    return sha256_file(path)[:32]


def expand_paths(specs: Iterable[str | Path]) -> list[Path]:
    """Files named by ``specs`` — a file, a folder (its video files, recursively) or a glob — in
    order, each once. A spec that names nothing raises ``SourceError``."""
    out: list[Path] = []
    for spec in specs:
        s = str(spec)
        p = Path(s)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
        elif p.is_file():
            found = [p]
        elif glob.has_magic(s):
            found = sorted(Path(f) for f in glob.glob(s, recursive=True) if Path(f).is_file())
        else:
            raise SourceError(s, "no such file or folder")
        if not found:
            raise SourceError(s, "no video files there")
        out.extend(found)
    seen: set[Path] = set()
    return [f for f in (x.resolve() for x in out) if not (f in seen or seen.add(f))]


class IndexWorker:
    """One loaded model set; ``index`` runs one file through the ``streamvid index`` pipeline.

    Used as a Ray actor (``ray.remote(IndexWorker)``); plain calls work too (one process).
    ``threads``: torch intra-op threads of this worker (its share of the cores; set before the
    models load, so that N workers on N cores do not each start a thread per core).
    """

    def __init__(self, preset: str, overrides: dict[str, Any], store_dir: str | Path, *,
                 threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch

        from streamvid.agent import StreamAgent
        from streamvid.config import preset_config

        if threads:
            torch.set_num_threads(threads)

        self.config = preset_config(preset, **overrides)
        self.preset = preset
        self.memories = memories_at(store_dir)
        self.scratch = make_scratch()  # each file's live archive: on disk, not in /tmp at random
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.scratch), True)
        self._models = StreamAgent(self.config)  # loads the models once; every file reuses them
        self._models.memory.close()
        self.threads = torch.get_num_threads()
        self.ready_at = time.time()  # wall clock: the driver compares it with its own start

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        """Remove this worker's scratch folder (the driver calls it before it ends the actor)."""
        self._cleanup()

    def index(self, path: str, video_id: str, progress: Any = None) -> dict[str, Any]:
        """Ingest ``path``, save its memory as ``<store dir>/<video_id>`` (a folder, or objects under an
        object-store URL) and return its key rows and counts.

        ``progress``: a queue (``ray.util.queue.Queue``) that gets (video_id, frames so far, pid).
        """
        archive = self.scratch / video_id
        shutil.rmtree(archive, ignore_errors=True)  # an earlier try of this file on this worker
        agent = self._models.sharing_models(archive_dir=str(archive))
        frames, last = 0, 0.0
        t0 = time.perf_counter()

        def tick(n: int) -> None:
            nonlocal frames, last
            frames += n
            now = time.perf_counter()
            if progress is not None and now - last >= PROGRESS_EVERY_S:
                last = now
                progress.put((video_id, frames, os.getpid()))

        try:
            with agent:
                stats = agent.ingest(path, progress=False, on_frames=tick)
                rows = key_rows(agent.memory)
                duration = float(agent.memory.now or 0.0)
                self.memories.save(agent.memory, video_id)  # replaces an earlier try's copy; atomic for readers
        finally:
            shutil.rmtree(archive, ignore_errors=True)
        if progress is not None:
            progress.put((video_id, frames, os.getpid()))
        return {"video_id": video_id, "path": path, "rows": rows, "frames": int(stats["frames_seen"]),
                "events": int(stats["events"]),  # RAM and archived events
                "duration": duration, "seconds": time.perf_counter() - t0,
                "pid": os.getpid(), "threads": self.threads, "ready_at": self.ready_at}


@dataclass
class Progress:
    """What the driver reports: files done/failed/skipped of the total, frames, fps and an ETA."""

    files_total: int
    files_done: int = 0
    files_failed: int = 0
    files_skipped: int = 0
    frames: int = 0
    elapsed_s: float = 0.0
    message: str = ""
    workers: int = 0
    worker_pids: dict[str, int] = field(default_factory=dict)  # video id → pid of the worker on it

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        finished = self.files_done + self.files_failed
        left = self.files_total - self.files_skipped - finished
        if finished == 0:
            return None
        return self.elapsed_s / finished * left


@dataclass
class IndexReport:
    """The outcome of one ``index_library`` run."""

    indexed: list[VideoRecord]
    skipped: list[str]
    failed: dict[str, str]
    retried: list[str]
    frames: int
    seconds: float
    workers: int
    workers_ready_s: float | None = None  # from the start until the last worker had its models loaded

    def as_dict(self) -> dict[str, Any]:
        steady = self.seconds - self.workers_ready_s if self.workers_ready_s is not None else None
        return {"indexed": [r.__dict__ for r in self.indexed], "skipped": self.skipped, "failed": self.failed,
                "retried": self.retried, "frames": self.frames, "seconds": round(self.seconds, 3),
                "workers": self.workers,
                "workers_ready_s": round(self.workers_ready_s, 3) if self.workers_ready_s is not None else None,
                "files_per_hour": round(3600 * len(self.indexed) / self.seconds, 1) if self.seconds else None,
                "files_per_hour_after_ready": round(3600 * len(self.indexed) / steady, 1) if steady else None}


def _init_ray(address: str | None, workers: int | None) -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("index-library needs Ray: pip install 'streamvid[scale]'") from exc
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers or None, log_to_driver=False, include_dashboard=False)
        except Exception as exc:  # noqa: BLE001 - ray.init raises bare Exception too (e.g. a node start timeout)
            where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
            raise ConfigError(f"could not start or reach {where}: {exc}") from exc
    return ray


def index_library(paths: Iterable[str | Path], uri: str, *, store_dir: str | Path | None = None,
                  preset: str = "auto", overrides: dict[str, Any] | None = None, workers: int | None = None,
                  ray_address: str | None = None, gpus_per_worker: float = 0.0, retries: int = 1,
                  on_progress: Callable[[Progress], None] | None = None) -> IndexReport:
    """Index every file of ``paths`` not yet in the store ``uri`` over Ray actors.

    workers: actors to start (default: one per GPU with ``gpus_per_worker`` > 0, else one per CPU
    of the cluster), never more than files to do. A file that fails (an error, or its actor dying)
    is retried ``retries`` times on a fresh actor; the others carry on.
    """
    from streamvid.config import preset_config

    overrides = dict(overrides or {})
    if gpus_per_worker < 0 or (workers is not None and workers < 1):
        raise ConfigError("--workers must be >= 1 and --gpus-per-worker >= 0")
    if gpus_per_worker > 0:
        overrides.setdefault("device", "cuda")
    config = preset_config(preset, **overrides)  # a bad preset or override fails before Ray starts
    preset_name = config.model if preset == "auto" else preset
    if parse_uri(uri, store_dir)[1] is None:
        raise StoreError(f"store {uri!r} is a Milvus server: give the folder or object-store URL for the videos' "
                         "memories (--store-dir, shared by every worker)")
    files = expand_paths(paths)
    store = MilvusStore(uri, store_dir=store_dir)
    try:
        store.writable_memories().prepare()  # the folder made, or the object store reached, before any work starts
    except BaseException:
        store.close()
        raise
    t_start, t_wall = time.perf_counter(), time.time()
    progress = Progress(files_total=len(files))
    todo: list[tuple[str, str]] = []
    skipped: list[str] = []
    ids_seen: set[str] = set()
    for f in files:
        vid = content_id(f)
        # a video counts as indexed when its keys are in Milvus and its memory is complete (has its manifest)
        if vid in ids_seen or (store.has_video(vid) and store.memories.has(vid)):
            skipped.append(str(f))
        else:
            ids_seen.add(vid)
            todo.append((str(f), vid))
    progress.files_skipped = len(skipped)

    def report(message: str) -> None:
        progress.elapsed_s = time.perf_counter() - t_start
        progress.message = message
        log.debug(message)
        if on_progress is not None:
            on_progress(progress)

    if skipped:
        report(f"{len(skipped)} of {len(files)} files already indexed; skipping them.")
    indexed: list[VideoRecord] = []
    failed: dict[str, str] = {}
    retried: list[str] = []
    if not todo:
        store.close()
        return IndexReport(indexed, skipped, failed, retried, 0, time.perf_counter() - t_start, 0)

    try:
        frames_done, ready_at = _run(todo, store, indexed=indexed, failed=failed, retried=retried, progress=progress,
                                     report=report, preset=preset, preset_name=preset_name, overrides=overrides,
                                     workers=workers, ray_address=ray_address, gpus_per_worker=gpus_per_worker,
                                     retries=retries, t_start=t_start)
    finally:
        store.close()
    return IndexReport(indexed, skipped, failed, retried, frames_done, time.perf_counter() - t_start, progress.workers,
                       workers_ready_s=None if ready_at is None else ready_at - t_wall)


def _run(todo: list[tuple[str, str]], store: MilvusStore, *, indexed: list[VideoRecord], failed: dict[str, str],
         retried: list[str], progress: Progress, report: Callable[[str], None], preset: str, preset_name: str,
         overrides: dict[str, Any], workers: int | None, ray_address: str | None, gpus_per_worker: float,
         retries: int, t_start: float) -> tuple[int, float | None]:
    """Schedule ``todo`` (path, video id) over Ray actors and write each finished file into ``store``;
    returns the frames indexed and the wall-clock time the last of the first workers was ready.

    Each CPU worker reserves an equal share of the cluster's CPUs and runs that many torch threads.
    A freed worker gets its next file before the driver writes the finished one into Milvus, so the
    write (and the driver's other per-file work) overlaps the workers' indexing."""
    ray = _init_ray(ray_address, workers)
    from ray.util.queue import Queue

    resources = ray.cluster_resources()
    if workers is None:
        workers = (int(resources.get("GPU", 0) / gpus_per_worker) if gpus_per_worker > 0
                   else int(resources.get("CPU", 1)))
    n_workers = max(1, min(workers, len(todo)))
    progress.workers = n_workers
    cpus = max(1, int(resources.get("CPU", 1)) // n_workers)
    actor_cls = ray.remote(num_cpus=cpus, num_gpus=gpus_per_worker, max_restarts=0)(IndexWorker)
    queue = Queue()
    config_overrides = {**overrides}

    def new_actor() -> Any:  # .remote returns at once: the actors load their models side by side
        return actor_cls.remote(preset, config_overrides, str(store.store_dir), threads=cpus)

    idle = [new_actor() for _ in range(n_workers)]
    pending: dict[Any, tuple[Any, str, str, int]] = {}  # ref → (actor, path, video id, attempt)
    queued = [(p, v, 0) for p, v in todo]
    frames_live: dict[str, int] = {}
    frames_done = 0
    ready_at: dict[int, float] = {}  # worker pid → when its models were loaded

    def dispatch() -> None:
        while queued and idle:
            path, vid, attempt = queued.pop(0)
            actor = idle.pop()
            pending[actor.index.remote(path, vid, queue)] = (actor, path, vid, attempt)

    report(f"Indexing {len(todo)} file(s) on {n_workers} worker(s).")
    try:
        while queued or pending:
            dispatch()
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_EVERY_S)
            moved = False
            while not queue.empty():
                vid, n, pid = queue.get_nowait()
                frames_live[vid] = n
                progress.worker_pids[vid] = pid
                moved = True
            progress.frames = frames_done + sum(frames_live.values())
            if moved and not ready:
                report(f"{progress.frames} frames so far.")
            for ref in ready:
                actor, path, vid, attempt = pending.pop(ref)
                frames_live.pop(vid, None)
                progress.worker_pids.pop(vid, None)
                try:
                    out = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                    died = isinstance(exc, ray.exceptions.RayActorError)
                    if died and getattr(exc, "actor_init_failed", False):
                        raise WorkerStartError(f"a worker could not start, so none would: {ray_error_cause(exc)}"
                                               ) from None
                    cause = "its worker died" if died else ray_error_cause(exc)
                    if died:
                        ray.kill(actor)
                        actor = new_actor()
                    idle.append(actor)
                    if attempt < retries:
                        retried.append(path)
                        queued.append((path, vid, attempt + 1))
                        report(f"{Path(path).name} failed ({cause}); retrying it.")
                    else:
                        failed[path] = cause
                        progress.files_failed += 1
                        report(f"{Path(path).name} failed ({cause}); giving up on it.")
                    continue
                idle.append(actor)
                dispatch()
                ready_at.setdefault(out["pid"], out["ready_at"])
                record = VideoRecord(video_id=vid, path=path, frames=out["frames"], events=out["events"],
                                     keys=len(out["rows"]["vector"]), duration=out["duration"], preset=preset_name)
                store.write_video(record, out["rows"])
                indexed.append(record)
                frames_done += out["frames"]
                progress.frames = frames_done + sum(frames_live.values())
                progress.files_done += 1
                eta = progress.eta_s
                progress.elapsed_s = time.perf_counter() - t_start
                report(f"[{progress.files_done + progress.files_failed}/{len(todo)}] {Path(path).name}: "
                       f"{out['frames']} frames, {out['events']} events ({progress.fps:.1f} fps overall"
                       + (f", ETA {eta:.0f} s" if eta is not None and progress.files_done < len(todo) else "") + ").")
    finally:
        try:  # idle workers remove their scratch folders; busy ones are killed, and swept next time
            ray.get([a.close.remote() for a in idle], timeout=10)
        except Exception as exc:  # noqa: BLE001 - ending the run must not hide what ended it
            log.debug("worker close: %s", exc)
        for actor in idle + [a for a, *_ in pending.values()]:
            ray.kill(actor)
        ray.kill(queue.actor)
    first = sorted(ready_at.values())[:n_workers]
    return frames_done, max(first) if len(first) == n_workers else None
