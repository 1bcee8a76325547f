"""The comparison benchmark (``semsim faiss compare``): exact search, pgvector's HNSW at several
``ef_search`` values and saved FAISS indexes, measured on the same queries (recall@k against the
exact search, latency per query, build time, size), as a table or a plot.

For PostgreSQL the latency is split: ``p50 ms`` is the whole search as an application sees it
(``DocumentStore.search`` with the vector given: the round trip and Python included), ``server``
is what PostgreSQL spends executing the statement (``EXPLAIN ANALYZE``'s execution time for the
same query and settings, measured right after it), and the difference is the client's share."""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semsim_pg import queries
from semsim_pg.db import connect
from semsim_pg.errors import DimensionMismatch, InvalidInput
from semsim_pg.faiss_index.format import check_manifest, load_faiss
from semsim_pg.faiss_index.index import FaissIndex
from semsim_pg.faiss_index.stream import Matrix, sample_vectors
from semsim_pg.progress import progress_bar

if TYPE_CHECKING:
    from semsim_pg.store import Collection, DocumentStore

__all__ = [
    "CompareRow",
    "compare",
    "format_table",
    "parse_int_list",
    "plot",
    "rebuild_pg_index",
    "sample_queries",
    "summarize",
]


def parse_int_list(text: str, what: str) -> Sequence[int]:
    """``"10,20,40"`` -> [10, 20, 40], for command-line lists."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput(f"{what} must be whole numbers separated by commas, got {text!r}.") from None
    if not values or any(v < 1 for v in values):
        raise InvalidInput(f"{what} must be positive whole numbers separated by commas, got {text!r}.")
    return values


@dataclass(frozen=True)
class CompareRow:
    """One method at one setting, measured on the same queries as the others."""

    method: str
    setting: str
    recall: float
    p50_ms: float
    p95_ms: float
    qps: float
    build_seconds: float | None
    size_bytes: int | None
    queries: int
    #: PostgreSQL's own execution time (EXPLAIN ANALYZE), p50 and p95; None for FAISS
    server_p50_ms: float | None = None
    server_p95_ms: float | None = None
    #: CPU time of this (the client) process per query, p50: the whole cost for FAISS; for
    #: PostgreSQL the client's share, which with ``server_p50_ms`` is the query's cost without
    #: the waits for a CPU a busy machine adds to the wall-clock figures
    client_cpu_p50_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_queries(
    store: DocumentStore, collection: str | Collection, n: int, *, seed: int = 0
) -> tuple[Matrix, list[str]]:
    """``n`` stored vectors (pseudo-random, repeatable for a seed) and their external ids.

    Searches for a stored vector leave that document out of the results, so a query never
    counts finding itself."""
    coll = store.get_collection(collection)
    if n < 1:
        raise InvalidInput(f"--sample must be at least 1, got {n}.")
    vectors, ids = sample_vectors(store, coll, n, seed=str(seed))
    if not ids:
        raise InvalidInput(f"Collection {coll.name!r} holds no vectors to sample queries from: ingest first.")
    return vectors, ids


def compare(
    store: DocumentStore,
    collection: str | Collection,
    queries: Matrix,
    *,
    exclude: Sequence[str | None] | None = None,
    k: int = 10,
    ef_search: Sequence[int] = (10, 20, 40, 80, 160),
    indexes: Sequence[FaissIndex] = (),
    nprobe: Sequence[int] = (1, 4, 16, 64),
    pg_build_seconds: float | None = None,
    progress: bool | None = None,
    server_time: bool = True,
) -> list[CompareRow]:
    """Exact search, pgvector HNSW at each ``ef_search`` and each FAISS index, on the same queries.

    Recall@k is measured against the exact search through the same store (``exact=True``: a
    sequential scan in PostgreSQL). Latencies are per query, one query at a time, from Python:
    for PostgreSQL they include the round trip, as an application sees it; for FAISS they are
    in-process, on one thread. ``exclude[i]`` is an external id to leave out of query i's results (itself).
    ``server_time`` also runs each PostgreSQL query under EXPLAIN ANALYZE (after the timed search,
    so it does not warm the cache for it) for PostgreSQL's own share of the time.
    """

    coll = store.get_collection(collection)
    vectors = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if vectors.shape[1] != coll.dimension:
        raise DimensionMismatch(
            f"Query vectors have {vectors.shape[1]} dimensions, collection {coll.name!r} {coll.dimension}."
        )
    skip = list(exclude) if exclude is not None else [None] * len(vectors)
    if len(skip) != len(vectors):
        raise InvalidInput(f"{len(skip)} ids to exclude for {len(vectors)} queries.")
    for index in indexes:
        check_manifest(index.manifest, coll, None, index.path)
    fetch = k + (1 if any(x is not None for x in skip) else 0)
    # Every method at every setting, as (label, setting, prepare, search, build seconds, size, server time).
    pg_size = _pg_index_size(store, coll)
    methods: list[tuple[str, str, Any, Any, float | None, int | None, Any]] = [
        (
            "exact (pgvector scan)",
            "-",
            _pg_prepare(store, None),
            _pg_search(store, coll, fetch, True, None),
            None,
            None,
            _pg_server_time(store, coll, fetch, True, None) if server_time else None,
        )
    ]
    for ef in ef_search:
        methods.append(
            (
                "pgvector hnsw",
                f"ef_search={ef}",
                _pg_prepare(store, ef),
                _pg_search(store, coll, fetch, False, ef),
                pg_build_seconds,
                pg_size,
                _pg_server_time(store, coll, fetch, False, ef) if server_time else None,
            )
        )
    # the methods of each index: pgvector's HNSW, then each FAISS index's
    families = [list(range(1, len(methods)))]
    for index in indexes:
        families.append([])
        for name, value in _settings_for(index, ef_search, nprobe):
            families[-1].append(len(methods))
            setting = f"{'efSearch' if name == 'ef_search' else name}={value}" if name else "-"
            methods.append(
                (
                    index.label,
                    setting,
                    _faiss_prepare(index, name, value),
                    _faiss_search(index, fetch),
                    index.manifest.build_seconds,
                    index.size_bytes,
                    None,
                )
            )
    # Rounds: the i-th setting of every index (pgvector's i-th ef_search, each FAISS index's i-th
    # setting). Within a round each query meets each index once, so every timed search is an
    # index's first look at that query, as a server's next query is: with every setting in turn
    # on one query, the second and later settings of an index found the query's part of the
    # graph in the CPU's caches already and timed faster than the first (ef_search 20 slower
    # than 30, for pgvector and FAISS alike).
    rounds = [[m for m in ms if m is not None] for ms in itertools.zip_longest(*families)]
    found: list[list[list[str]]] = [[] for _ in methods]
    times: list[list[float]] = [[] for _ in methods]
    server: list[list[float]] = [[] for _ in methods]
    cpu: list[list[float]] = [[] for _ in methods]
    bar = progress_bar(
        progress, total=len(vectors) * len(rounds), desc=f"compare {coll.name} ({len(methods)} methods)", unit="query"
    )
    # One query at a time on one thread, like a PostgreSQL backend: FAISS's OpenMP threads add
    # nothing to a single query and, on a busy machine, their barriers cost tens of milliseconds.
    faiss = load_faiss() if indexes else None
    threads = faiss.omp_get_max_threads() if faiss is not None else 0
    if faiss is not None:
        faiss.omp_set_num_threads(1)

    def measure(m: int, vector: Matrix, own: str | None) -> None:
        _, _, prepare, search, _, _, server_ms = methods[m]
        if prepare is not None:
            prepare()
        start, start_cpu = time.perf_counter(), time.process_time()
        ids = search(vector)
        times[m].append(time.perf_counter() - start)
        cpu[m].append(time.process_time() - start_cpu)
        found[m].append([x for x in ids if x != own][:k])
        if server_ms is not None:
            server[m].append(server_ms(vector))

    try:
        # The exact scan first, in a pass of its own: run between the others, its read of every
        # vector pushed the HNSW index out of PostgreSQL's buffers before each pgvector search
        # (at 100,000 rows that doubled the search's p50: 3.5 against 1.8 ms), a cost FAISS's
        # in-memory index never paid and no server that does not scan pays.
        for vector, own in zip(vectors, skip, strict=True):
            measure(0, vector, own)
        # The HNSW index in PostgreSQL's buffers, as FAISS's is in memory once loaded: after a
        # server start the first searches read it from disk page by page (at 100,000 vectors the
        # first 300 searches' p95 was 4.3 ms against 1.3 once read), a cost of the restart
        # (`semsim warmup --collections` pays it once), not of the search.
        with contextlib.suppress(InvalidInput):  # no valid index: the "hnsw" rows scan anyway
            store.warm_index(coll)
        # Then round by round, query by query, the round's methods in turn: on a shared machine
        # a busy spell slows the methods compared side by side alike.
        for round_methods in rounds:
            for vector, own in zip(vectors, skip, strict=True):
                for m in round_methods:
                    measure(m, vector, own)
                bar.update(1)
    finally:
        if faiss is not None:
            faiss.omp_set_num_threads(threads)
        bar.close()
    truth = found[0]
    return [
        _row(label, setting, found[m], truth, times[m], build, size, server[m], cpu[m])
        for m, (label, setting, _, _, build, size, _) in enumerate(methods)
    ]


def _pg_prepare(store: DocumentStore, ef: int | None) -> Any:
    """Give the pooled connection this row's ef_search before the timed search: interleaved rows
    of several ef_search values would otherwise each pay the statement that changes it, which an
    application with one setting pays once per connection."""
    from semsim_pg.db import read
    from semsim_pg.store.search import session_settings

    value = store.settings.ef_search if ef is None else ef
    return lambda: read(store.engine, lambda conn: session_settings(conn, value, store.settings.iterative_scan))


def _faiss_prepare(index: FaissIndex, name: str, value: int) -> Any:
    if not name:
        return None
    return lambda: index.set_search_parameters(**{name: value})


def _faiss_search(index: FaissIndex, fetch: int) -> Any:
    def search(vector: Matrix) -> list[str]:
        return [x for x, _ in index.search(vector, fetch)[0]]

    return search


def _pg_search(store: DocumentStore, coll: Collection, fetch: int, exact: bool, ef: int | None) -> Any:
    from semsim_pg.store import QueryVector

    def search(vector: Matrix) -> list[str]:
        query = QueryVector(vector, coll.model_name)
        return [h.external_id for h in store.search(coll, query, fetch, exact=exact, ef_search=ef)]

    return search


_EXECUTION_TIME = re.compile(r"Execution Time: ([0-9.]+) ms")


def _pg_server_time(store: DocumentStore, coll: Collection, fetch: int, exact: bool, ef: int | None) -> Any:
    from semsim_pg.store import QueryVector

    def server_ms(vector: Matrix) -> float:
        plan = store.explain(coll, QueryVector(vector, coll.model_name), fetch, exact=exact, ef_search=ef)
        found = _EXECUTION_TIME.search(plan)
        return float(found.group(1)) if found else float("nan")

    return server_ms


def _settings_for(index: FaissIndex, ef_search: Sequence[int], nprobe: Sequence[int]) -> list[tuple[str, int]]:
    kind = index.manifest.index_type
    if kind == "hnsw":
        return [("ef_search", ef) for ef in ef_search]
    if kind in ("ivfflat", "ivfpq"):
        nlist = index.manifest.parameters["nlist"]
        return [("nprobe", n) for n in sorted({min(n, nlist) for n in nprobe})]
    return [("", 0)]


def _row(
    method: str,
    setting: str,
    found: list[list[str]],
    truth: list[list[str]],
    times: list[float],
    build_seconds: float | None,
    size_bytes: int | None,
    server_ms: list[float],
    cpu_seconds: list[float],
) -> CompareRow:
    recalls = [len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True) if t]
    ms = np.asarray(times) * 1000.0
    server = np.asarray(server_ms) if server_ms else None
    return CompareRow(
        method=method,
        setting=setting,
        recall=float(np.mean(recalls)) if recalls else 0.0,
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        qps=float(len(times) / max(sum(times), 1e-9)),
        build_seconds=build_seconds,
        size_bytes=size_bytes,
        queries=len(times),
        server_p50_ms=float(np.percentile(server, 50)) if server is not None else None,
        server_p95_ms=float(np.percentile(server, 95)) if server is not None else None,
        client_cpu_p50_ms=float(np.percentile(np.asarray(cpu_seconds) * 1000.0, 50)) if cpu_seconds else None,
    )


def _pg_index_size(store: DocumentStore, coll: Collection) -> int | None:
    with connect(store.engine) as conn:
        value = conn.execute(queries.index_size(queries.index_name(coll.id, coll.model_name))).scalar()
    return int(value) if value is not None else None


def rebuild_pg_index(store: DocumentStore, collection: str | Collection) -> float:
    """Rebuild the collection's HNSW index (REINDEX) and return the seconds it took: pgvector's build
    time measured the way FAISS's is. Writes to the embeddings table wait meanwhile; searches do not."""
    coll = store.get_collection(collection)
    start = time.perf_counter()
    with connect(store.engine).execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(queries.reindex(queries.index_name(coll.id, coll.model_name)))
    return time.perf_counter() - start


def format_table(rows: Sequence[CompareRow], k: int) -> str:
    header = (
        "method",
        "setting",
        f"recall@{k}",
        "p50 ms",
        "p95 ms",
        "server p50",
        "server p95",
        "client p50",
        "client CPU",
        "QPS",
        "build s",
        "size MB",
    )
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.method,
                r.setting,
                f"{r.recall:.3f}",
                f"{r.p50_ms:.2f}",
                f"{r.p95_ms:.2f}",
                "-" if r.server_p50_ms is None else f"{r.server_p50_ms:.2f}",
                "-" if r.server_p95_ms is None else f"{r.server_p95_ms:.2f}",
                "-" if r.server_p50_ms is None else f"{r.p50_ms - r.server_p50_ms:.2f}",
                "-" if r.client_cpu_p50_ms is None else f"{r.client_cpu_p50_ms:.2f}",
                f"{r.qps:.0f}",
                "-" if r.build_seconds is None else f"{r.build_seconds:.1f}",
                "-" if r.size_bytes is None else f"{r.size_bytes / 1e6:.1f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def plot(rows: Sequence[CompareRow], path: str | Path, *, k: int, title: str = "") -> None:
    """Recall@k against queries per second, one line per method (matplotlib, Agg, imported here)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InvalidInput("--plot needs matplotlib: pip install matplotlib.") from exc
    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods: dict[str, list[CompareRow]] = {}
    for r in rows:
        methods.setdefault(r.method, []).append(r)
    for method, group in methods.items():
        group = sorted(group, key=lambda r: r.recall)
        marker = "*" if method.startswith("exact") else "o"
        ax.plot([r.recall for r in group], [r.qps for r in group], marker=marker, label=method)
        for r in group:
            if r.setting != "-":
                ax.annotate(
                    r.setting.split("=")[-1], (r.recall, r.qps), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
    ax.set_xlabel(f"recall@{k} against exact search")
    ax.set_ylabel("queries per second (one at a time)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    plt.close(fig)


def against_faiss(rows: Sequence[CompareRow], k: int) -> list[str]:
    """Each pgvector HNSW row against the FAISS HNSW row of the same ef_search."""
    faiss = {r.setting.split("=")[-1]: r for r in rows if r.method.startswith("faiss") and "hnsw" in r.method}
    lines = []
    for r in rows:
        if r.method != "pgvector hnsw":
            continue
        other = faiss.get(r.setting.split("=")[-1])
        if other is None:
            continue
        server = "" if r.server_p50_ms is None else f" (server {r.server_p50_ms:.2f})"
        line = (
            f"{r.setting}: pgvector p50 {r.p50_ms:.2f} ms{server}, recall@{k} {r.recall:.3f}; FAISS HNSW "
            f"{other.p50_ms:.2f} ms, recall@{k} {other.recall:.3f}: pgvector/FAISS {r.p50_ms / other.p50_ms:.1f}x"
        )
        if r.server_p50_ms is not None and r.client_cpu_p50_ms is not None and other.client_cpu_p50_ms:
            # What each query costs in CPU, without the waits for a CPU a shared machine adds.
            cost = r.server_p50_ms + r.client_cpu_p50_ms
            line += (
                f"; CPU cost (server + client {r.client_cpu_p50_ms:.2f}) {cost:.2f} ms vs FAISS "
                f"{other.client_cpu_p50_ms:.2f} ms: {cost / other.client_cpu_p50_ms:.1f}x"
            )
        lines.append(line)
    return lines


def at_recall(rows: Sequence[CompareRow], k: int, floor: float) -> str | None:
    """The fastest pgvector HNSW setting against the fastest FAISS HNSW setting, each among its
    settings with recall@k at least ``floor`` (an ANN comparison at equal quality: the same
    ef_search is not the same recall in the two implementations)."""

    def best(method: str) -> CompareRow | None:
        good = [r for r in rows if method in r.method and r.recall >= floor]
        return min(good, key=lambda r: r.p50_ms) if good else None

    pg, faiss = best("pgvector hnsw"), best("faiss-hnsw")
    if pg is None or faiss is None:
        return None
    return (
        f"at recall@{k} >= {floor}: pgvector {pg.setting} p50 {pg.p50_ms:.2f} ms (recall {pg.recall:.3f}), FAISS HNSW "
        f"{faiss.setting} {faiss.p50_ms:.2f} ms (recall {faiss.recall:.3f}): pgvector/FAISS {pg.p50_ms / faiss.p50_ms:.1f}x"
    )


def summarize(rows: Sequence[CompareRow], k: int, recall_floor: float = 0.98) -> list[str]:
    """What a reader wants of the table: each pgvector HNSW row against FAISS HNSW at the same
    ef_search, then each side's fastest setting with recall@k at least ``recall_floor``."""
    lines = against_faiss(rows, k)
    matched = at_recall(rows, k, recall_floor)
    return [*lines, matched] if matched else lines
