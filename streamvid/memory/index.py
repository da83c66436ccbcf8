"""FAISS inner-product index over L2-normalised retrieval keys.

Below ``exact_max`` keys the index is exact (flat). Above it, it becomes an IVF index (an
inverted file over k-means cells) whose number of probed cells is tuned, when it is built,
to reach a target recall@10 against exact search on queries drawn from the stored keys.
The IVF is rebuilt when the number of keys has grown ``regrow`` times since its training.
With faiss-gpu installed and a CUDA device, searches run on a GPU copy of the index.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np

from streamvid.tensorops import l2_normalise


def exact_search(keys: np.ndarray, ids: np.ndarray, queries: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k (brute force, no copy of ``keys``).

    keys [n, d], ids [n], queries [q, d] → (scores [q, k], ids [q, k]); missing results are id -1.
    """
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    k = max(1, min(int(k), len(keys)))
    if len(keys) == 0:
        return np.zeros((len(queries), 1), np.float32), np.full((len(queries), 1), -1, np.int64)
    scores, rows = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), keys, k,
                             metric=faiss.METRIC_INNER_PRODUCT)
    return scores, np.where(rows >= 0, np.asarray(ids, dtype=np.int64)[np.maximum(rows, 0)], -1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k ids [q, k] present in the found ids [q, k] (-1 entries ignored)."""
    hits = total = 0
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        hits += len(np.intersect1d(f[f >= 0], t))
        total += len(t)
    return hits / max(total, 1)


def _gpu_available(device: str) -> bool:
    return device.startswith("cuda") and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class KeyIndex:
    """Thread-safe id → key store with top-k inner-product search.

    Ids are int64 chosen by the caller; ``remove_range`` deletes a contiguous id range (the
    memory bank packs an event's keys into one range).
    """

    def __init__(self, dim: int, *, exact_max: int = 20_000, target_recall: float = 0.97, regrow: int = 4,
                 device: str = "cpu", seed: int = 0) -> None:
        if dim < 1:
            raise ValueError(f"key dim must be >= 1, got {dim}")
        self.dim = dim
        self.exact_max = exact_max
        self.target_recall = target_recall
        self.regrow = regrow
        self.device = device
        self.seed = seed
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._trained_n = 0
        self._lock = threading.RLock()
        self._gpu_res = faiss.StandardGpuResources() if _gpu_available(device) else None
        self._gpu_index: faiss.Index | None = None

    # ---- state ---------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """"flat" (exact) or "ivf"."""
        return "ivf" if isinstance(self._index, faiss.IndexIVF) else "flat"

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def nprobe(self) -> int:
        return int(self._index.nprobe) if self.kind == "ivf" else 0

    @property
    def nbytes(self) -> int:
        """Approximate bytes held: stored keys and ids (+ centroids for IVF)."""
        extra = self._index.nlist * self.dim * 4 if self.kind == "ivf" else 0
        return self.ntotal * (self.dim * 4 + 8) + extra

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored (keys [n, d], ids [n]), sorted by id."""
        with self._lock:
            return _extract(self._index, self.dim)

    # ---- writes --------------------------------------------------------------------------
    def add(self, keys: np.ndarray, ids: np.ndarray) -> None:
        """Add keys [n, d] (normalised here) under int64 ids [n]."""
        keys = l2_normalise(np.atleast_2d(keys))
        ids = np.ascontiguousarray(np.atleast_1d(ids), dtype=np.int64)
        if keys.shape[1] != self.dim:
            raise ValueError(f"key dim {keys.shape[1]} != index dim {self.dim}")
        if len(ids) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(ids)} ids")
        with self._lock:
            self._index.add_with_ids(keys, ids)
            self._gpu_index = None
            n = self.ntotal
            if (self.kind == "flat" and n > self.exact_max) or (
                self.kind == "ivf" and n > self.regrow * self._trained_n
            ):
                self._rebuild()

    def remove_range(self, lo: int, hi: int) -> int:
        """Remove ids in [lo, hi); returns how many were removed."""
        with self._lock:
            removed = int(self._index.remove_ids(faiss.IDSelectorRange(int(lo), int(hi))))
            if removed:
                self._gpu_index = None
            return removed

    def _rebuild(self) -> None:
        keys, ids = _extract(self._index, self.dim)
        self._index = build_ivf(keys, ids, seed=self.seed, target_recall=self.target_recall)
        self._trained_n = len(ids)
        self._gpu_index = None

    # ---- reads ---------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries [q, d] → (scores [q, k] float32, ids [q, k] int64); missing results are id -1."""
        queries = l2_normalise(np.atleast_2d(queries))
        with self._lock:
            k = max(1, min(int(k), max(self.ntotal, 1)))
            return self._searcher().search(queries, k)

    def _searcher(self) -> faiss.Index:
        if self._gpu_res is None or self.ntotal == 0:
            return self._index
        if self._gpu_index is None:
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, int(self.device.partition(":")[2] or 0),
                                                     self._index)
        return self._gpu_index

    # ---- persistence ---------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        with self._lock:
            header = np.array([self._trained_n], dtype=np.int64).tobytes()
            return header + faiss.serialize_index(self._index).tobytes()

    def load_bytes(self, data: bytes) -> None:
        trained_n = int(np.frombuffer(data[:8], dtype=np.int64)[0])
        index = faiss.deserialize_index(np.frombuffer(data[8:], dtype=np.uint8))
        if index.d != self.dim:
            raise ValueError(f"stored index has dim {index.d}, expected {self.dim}")
        with self._lock:
            self._index = index
            self._trained_n = trained_n
            self._gpu_index = None


def _extract(index: faiss.Index, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """All (keys [n, d], ids [n]) of a flat IDMap2 or an IVF-flat index, sorted by id."""
    if isinstance(index, faiss.IndexIVF):
        invlists = index.invlists
        keys, ids = [], []
        for cell in range(index.nlist):
            n = invlists.list_size(cell)
            if n:
                ids.append(faiss.rev_swig_ptr(invlists.get_ids(cell), n).copy())
                codes = faiss.rev_swig_ptr(invlists.get_codes(cell), n * dim * 4)
                keys.append(np.frombuffer(codes, dtype=np.float32).reshape(n, dim).copy())
        if not ids:
            return np.zeros((0, dim), np.float32), np.zeros(0, np.int64)
        all_ids = np.concatenate(ids)
        all_keys = np.concatenate(keys)
    else:
        n = index.ntotal
        all_ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        flat = faiss.downcast_index(index.index)
        all_keys = (faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim).copy() if n
                    else np.zeros((0, dim), np.float32))
    order = np.argsort(all_ids, kind="stable")
    return all_keys[order], all_ids[order]


def nlist_for(n: int) -> int:
    """IVF cell count for n keys: ~2·√n, at least 16, at most n/39 (faiss wants >= 39 points per cell)."""
    return int(max(16, min(2 * np.sqrt(n), n // 39, 65_536)))


def build_ivf(keys: np.ndarray, ids: np.ndarray, *, seed: int = 0, target_recall: float = 0.97,
              n_tune: int = 200, k: int = 10) -> faiss.IndexIVFFlat:
    """An IVF-flat inner-product index over keys [n, d] with ids [n], nprobe tuned to target recall@k.

    k-means trains on at most 40 keys per cell (a seeded sample, 15 iterations). Tuning queries
    are stored keys with noise; nprobe doubles until recall@k against exact search reaches
    ``target_recall``.
    """
    n, dim = keys.shape
    nlist = nlist_for(n)
    rng = np.random.default_rng(seed)
    sample = keys[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))]
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.niter = 15
    index.cp.min_points_per_centroid = 1
    index.train(np.ascontiguousarray(sample))
    index.add_with_ids(np.ascontiguousarray(keys), np.ascontiguousarray(ids))
    index.nprobe = tune_nprobe(index, keys, ids, seed=seed, target_recall=target_recall, n_queries=n_tune, k=k)
    return index


def tune_nprobe(index: faiss.IndexIVF, keys: np.ndarray, ids: np.ndarray, *, seed: int = 0,
                target_recall: float = 0.97, n_queries: int = 200, k: int = 10, noise: float = 1.0) -> int:
    """Smallest power-of-two nprobe whose recall@k on noisy stored-key queries reaches the target.

    A query is a stored key plus Gaussian noise of norm ~``noise`` (cosine ~0.7 to its key at 1.0):
    near the data, like a real query, but not on top of one stored key.
    """
    rng = np.random.default_rng(seed + 1)
    picks = keys[rng.choice(len(keys), size=min(n_queries, len(keys)), replace=False)]
    scale = noise / np.sqrt(keys.shape[1])
    queries = l2_normalise(picks + rng.normal(scale=scale, size=picks.shape).astype(np.float32))
    _, truth = exact_search(keys, ids, queries, k)
    nprobe = 1
    while nprobe < index.nlist:
        index.nprobe = nprobe
        _, found = index.search(queries, k)
        if recall_at_k(found, truth) >= target_recall:
            return nprobe
        nprobe *= 2
    return index.nlist


def measure_recall(index: KeyIndex, queries: np.ndarray, k: int = 10) -> float:
    """recall@k of ``index`` against exact search over the same stored keys. queries [q, d]."""
    keys, ids = index.vectors()
    queries = l2_normalise(np.atleast_2d(queries))
    _, truth = exact_search(keys, ids, queries, k)
    _, found = index.search(queries, k)
    return recall_at_k(found, truth)
