"""Retrieval evaluation on BEIR-layout data, through the product's own path.

The corpus is ingested into a collection with :meth:`DocumentStore.upsert` (a second run
encodes nothing: every text is stored with its hash already), queries are encoded once and
searched one by one through :meth:`DocumentStore.search` (the HNSW index, or an exact scan with
``exact=True``), and the ranked ids are scored with nDCG@10, MRR@10 and recall@1/10/100 (the
metrics of :mod:`semsim_pg.evaluation.metrics`). With a cross-encoder the first stage's
candidates are reranked and both stages are reported side by side.

BEIR layout: ``corpus.jsonl`` lines ``{"_id", "title", "text"}``, ``queries.jsonl`` lines
``{"_id", "text"}``, and a qrels TSV with the header ``query-id corpus-id score``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semsim_pg.errors import InputFileError, InvalidInput, WrongCollection
from semsim_pg.progress import progress_bar
from semsim_pg.rerank import Reranker
from semsim_pg.store import Document, QueryVector
from semsim_pg.validation import check_k

if TYPE_CHECKING:
    from semsim_pg.store import Collection, DocumentStore, SearchHit

__all__ = [
    "RetrievalReport",
    "StageResult",
    "evaluate_retrieval",
    "format_report",
    "read_corpus",
    "read_qrels",
    "read_queries",
]

logger = logging.getLogger(__name__)

#: the metadata key an evaluation marks its corpus's documents with: a collection holding others
#: is not its own, and is refused rather than overwritten
CORPUS_MARKER = "eval_corpus"

METRIC_NAMES = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100")


# readers -------------------------------------------------------------------------------------
def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    from semsim_pg.inputs import read_json_lines

    return read_json_lines(path)


def _id_of(path: Path, number: int, record: dict[str, Any]) -> str:
    raw = record.get("_id")
    if isinstance(raw, bool) or not isinstance(raw, (str, int)) or not str(raw).strip():
        raise InputFileError(f'{path}, line {number}: the "_id" field is missing or empty (got {raw!r}).')
    return str(raw)


def read_corpus(path: str | Path) -> Iterator[Document]:
    """Corpus documents; the title (if any) goes before the text, as BEIR evaluations do."""
    path = Path(path)
    for number, record in _json_lines(path):
        doc_id = _id_of(path, number, record)
        title, text = record.get("title") or "", record.get("text")
        if not isinstance(title, str):
            raise InputFileError(f'{path}, line {number}: "title" must be text, got {type(title).__name__}.')
        if text is None or not isinstance(text, str):
            raise InputFileError(f'{path}, line {number}: the "text" field is missing or not text (got {text!r}).')
        full = f"{title.strip()} {text.strip()}".strip()
        if not full:
            raise InputFileError(f"{path}, line {number}: document {doc_id!r} has neither title nor text.")
        yield Document(doc_id, full, {"title": title} if title else {})


def corpus_ids(path: str | Path) -> dict[str, int]:
    """Every corpus id with its line, checking the whole file (and for repeated ids) first."""
    path = Path(path)
    seen: dict[str, int] = {}
    for number, record in _json_lines(path):
        doc_id = _id_of(path, number, record)
        if doc_id in seen:
            raise InputFileError(f"{path}, line {number}: id {doc_id!r} appears again (first on line {seen[doc_id]}).")
        seen[doc_id] = number
    if not seen:
        raise InputFileError(f"{path}: holds no documents.")
    # Validate the documents themselves too (text fields), before anything is written.
    for _ in read_corpus(path):
        pass
    return seen


def read_queries(path: str | Path) -> dict[str, str]:
    path = Path(path)
    queries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, record in _json_lines(path):
        query_id = _id_of(path, number, record)
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InputFileError(f'{path}, line {number}: the "text" field is missing or empty (got {text!r}).')
        if query_id in queries:
            raise InputFileError(
                f"{path}, line {number}: query id {query_id!r} appears again (first on line {lines[query_id]})."
            )
        queries[query_id] = text
        lines[query_id] = number
    if not queries:
        raise InputFileError(f"{path}: holds no queries.")
    return queries


def read_qrels(
    path: str | Path, *, corpus: dict[str, int] | None = None, queries: dict[str, str] | None = None
) -> dict[str, dict[str, int]]:
    """``{query id: {corpus id: grade}}`` from a TSV with a header; every id must exist when the
    corpus and queries are given (a typo would silently lower every score otherwise)."""
    from semsim_pg.inputs import read_lines

    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    header_seen = False
    for number, line in read_lines(path):
        fields = line.split("\t")
        if not header_seen:
            header_seen = True
            names = [f.strip().lower() for f in fields]
            if (
                len(names) < 3
                or names[0] not in ("query-id", "query_id", "qid")
                or names[1] not in ("corpus-id", "corpus_id", "doc-id", "docid")
            ):
                raise InputFileError(
                    f"{path}, line {number}: expected the header 'query-id<TAB>corpus-id<TAB>score', got {line!r}."
                )
            continue
        if len(fields) != 3:
            raise InputFileError(
                f"{path}, line {number}: expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}."
            )
        query_id, doc_id, raw_score = (f.strip() for f in fields)
        if not query_id or not doc_id:
            raise InputFileError(f"{path}, line {number}: empty query-id or corpus-id.")
        try:
            score = float(raw_score)
        except ValueError:
            raise InputFileError(f"{path}, line {number}: the score {raw_score!r} is not a number.") from None
        if not score.is_integer():
            raise InputFileError(f"{path}, line {number}: the score {raw_score!r} must be a whole number (a grade).")
        if corpus is not None and doc_id not in corpus:
            raise InputFileError(
                f"{path}, line {number}: corpus-id {doc_id!r} is not in the corpus. Use the qrels of this corpus, "
                "or fix the id."
            )
        if queries is not None and query_id not in queries:
            raise InputFileError(f"{path}, line {number}: query-id {query_id!r} is not in the queries file.")
        qrels.setdefault(query_id, {})[doc_id] = int(score)
    if not header_seen:
        raise InputFileError(f"{path}: is empty; expected a header and one judgment a line.")
    if not any(grade > 0 for judged in qrels.values() for grade in judged.values()):
        raise InputFileError(f"{path}: holds no relevance judgment with a score above 0.")
    return qrels


# evaluation ----------------------------------------------------------------------------------
@dataclass
class StageResult:
    name: str
    metrics: dict[str, float]
    mean_ms: float
    p50_ms: float
    p95_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RetrievalReport:
    collection: str
    model: str
    documents: int
    queries: int
    exact: bool
    ef_search: int | None
    candidates: int
    ingest: dict[str, Any]
    encode_ms_per_query: float
    stages: list[StageResult] = field(default_factory=list)
    reranker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stages": [s.to_dict() for s in self.stages]}


def _stage(name: str, ranked: list[list[str]], judged: list[dict[str, int]], times: list[float]) -> StageResult:
    from semsim_pg.evaluation.metrics import mrr_at_k, ndcg_at_k, recall_at_k

    metrics = {
        "ndcg@10": float(np.mean([ndcg_at_k(r, j, 10) for r, j in zip(ranked, judged, strict=True)])),
        "mrr@10": float(np.mean([mrr_at_k(r, j, 10) for r, j in zip(ranked, judged, strict=True)])),
    }
    for k in (1, 10, 100):
        metrics[f"recall@{k}"] = float(np.mean([recall_at_k(r, j, k) for r, j in zip(ranked, judged, strict=True)]))
    ms = np.asarray(times) * 1000.0
    return StageResult(name, metrics, float(ms.mean()), float(np.percentile(ms, 50)), float(np.percentile(ms, 95)))


_MODE_LABELS = {"lexical": "BM25", "hybrid": "RRF of HNSW and BM25"}


def evaluate_retrieval(
    store: DocumentStore,
    *,
    corpus: str | Path,
    queries: str | Path,
    qrels: str | Path,
    collection: str | None = None,
    model: str | None = None,
    rerank: str | None = None,
    candidates: int = 100,
    exact: bool = False,
    ef_search: int | None = None,
    mode: str = "semantic",
    limit_queries: int | None = None,
    progress: bool | None = None,
    chunk: int | None = None,
) -> RetrievalReport:
    """Ingest ``corpus`` (re-using what is stored), search every judged query, score the rankings.

    Latency is the search alone (one SQL statement per query, from Python), measured per query;
    query encoding is batched and reported per query beside it. With ``rerank`` (a
    cross-encoder name or directory) the first ``candidates`` hits are reordered; hits past
    ``candidates`` keep their order, so recall@100 stays comparable. ``mode`` lexical or hybrid
    adds a stage of that search beside the semantic one (the reranker then reorders its hits).
    ``chunk`` splits the corpus into passages of that many tokens (a collection of its own).

    The collection is the evaluation's: its documents carry ``CORPUS_MARKER``, and one holding
    any other document is refused (:class:`WrongCollection`) before anything is written.
    """
    corpus, queries, qrels = Path(corpus), Path(queries), Path(qrels)
    check_k(candidates, "--candidates")
    if limit_queries is not None and limit_queries < 1:
        raise InvalidInput(f"--limit-queries must be at least 1, got {limit_queries}.")
    # Read and check every file before writing anything.
    ids = corpus_ids(corpus)
    query_texts = read_queries(queries)
    judgments = read_qrels(qrels, corpus=ids, queries=query_texts)
    evaluated = [q for q, judged in judgments.items() if any(g > 0 for g in judged.values())]
    if limit_queries is not None:
        evaluated = evaluated[:limit_queries]
    reranker = Reranker(rerank) if rerank else None

    name = collection or f"beir-{corpus.resolve().parent.name or corpus.stem}"
    coll = store.create_collection(name, model=model, chunk=chunk)
    _check_own(store, coll, corpus, ids)
    marked = (Document(d.external_id, d.text, {**d.metadata, CORPUS_MARKER: True}) for d in read_corpus(corpus))
    ingest = store.upsert(coll, marked, total=len(ids), progress=progress)
    extra = _ids_not_in(store, coll.id, ids)
    if extra:
        # Documents of another version of the corpus (_check_own let no other through): they
        # would be found and count as misses.
        logger.info("removing %d documents of %s that are not in %s", len(extra), coll.name, corpus)
        store.delete(coll, extra)
    ingest_summary = {**ingest.to_dict(), "removed": len(extra)}

    encoder = store.encoder_for(coll)
    texts = [query_texts[q] for q in evaluated]
    start = time.perf_counter()
    vectors = encoder.encode_queries(texts)  # the vectors a live search gives these queries
    encode_ms = (time.perf_counter() - start) * 1000.0 / len(texts)
    fetch = max(100, candidates)
    ranked: list[list[str]] = []
    hits_by_query: list[list[SearchHit]] = []
    times: list[float] = []
    judged = [judgments[q] for q in evaluated]
    label = "exact scan" if exact else f"hnsw (ef_search={ef_search or store.settings.ef_search})"
    stages: list[StageResult] = []
    for stage_mode in ("semantic",) if mode == "semantic" else ("semantic", mode):
        ranked, hits_by_query, times = [], [], []
        with progress_bar(progress, total=len(evaluated), desc=f"{stage_mode} {coll.name}", unit="query") as bar:
            for text, vector in zip(texts, vectors, strict=True):
                t0 = time.perf_counter()
                query = QueryVector(vector, coll.model_name)
                hits = store.search(coll, query, fetch, exact=exact, ef_search=ef_search, mode=stage_mode, text=text)
                times.append(time.perf_counter() - t0)
                hits_by_query.append(hits)
                ranked.append([h.external_id for h in hits])
                bar.update(1)
        name = f"bi-encoder, {label}" if stage_mode == "semantic" else f"{stage_mode} ({_MODE_LABELS[stage_mode]})"
        stages.append(_stage(name, ranked, judged, times))
    report = RetrievalReport(
        collection=coll.name,
        model=coll.model_name,
        documents=len(ids),
        queries=len(evaluated),
        exact=exact,
        ef_search=None if exact else (ef_search or store.settings.ef_search),
        candidates=candidates,
        ingest=ingest_summary,
        encode_ms_per_query=encode_ms,
    )
    report.stages.extend(stages)
    if reranker is not None:
        report.reranker = str(getattr(reranker, "name", rerank))
        reranked: list[list[str]] = []
        rerank_times: list[float] = []
        with progress_bar(progress, total=len(evaluated), desc="rerank", unit="query") as bar:
            for text, hits, first, search_time in zip(texts, hits_by_query, ranked, times, strict=True):
                t0 = time.perf_counter()
                order = reranker.rerank(text, hits[:candidates], top_k=None)
                rerank_times.append(search_time + time.perf_counter() - t0)
                reranked.append([r.external_id for r in order] + first[candidates:])
                bar.update(1)
        report.stages.append(_stage(f"+ rerank top {candidates}", reranked, judged, rerank_times))
    return report


def _check_own(store: DocumentStore, coll: Collection, corpus: Path, ids: dict[str, int]) -> None:
    """Refuse, before anything is written, a collection holding a document that an evaluation did
    not load: the corpus's upsert would overwrite it, or its clean-up remove it. An evaluation
    marks its documents (CORPUS_MARKER); an unmarked one counts as its own only when it is the
    corpus's document, same id and same text (as evaluations stored them before the marker)."""
    from semsim_pg import queries
    from semsim_pg.db import connect
    from semsim_pg.encoder import text_hash

    hashes: dict[str, str] | None = None
    with connect(store.engine) as conn:
        unmarked = conn.execution_options(stream_results=True, yield_per=1000).execute(
            queries.documents_lacking(coll.id, [CORPUS_MARKER])
        )
        for external_id, stored_hash in unmarked:
            if external_id in ids:
                if hashes is None:
                    hashes = {doc.external_id: text_hash(doc.text) for doc in read_corpus(corpus)}
                if hashes[external_id] == stored_hash:
                    continue
            raise WrongCollection(
                f"Collection {coll.name!r} holds documents that are not this evaluation's (e.g. {external_id!r}): "
                "loading the corpus would overwrite or remove them. Give the evaluation a collection of its own "
                f"(another -c name), or drop this one first with `semsim collections --drop {coll.name}`."
            )


def _ids_not_in(store: DocumentStore, collection_id: int, ids: dict[str, int]) -> list[str]:
    from semsim_pg import queries
    from semsim_pg.db import connect

    with connect(store.engine) as conn:
        stored = conn.execute(queries.external_ids(collection_id)).scalars().all()
    return [x for x in stored if x not in ids]


def format_report(report: RetrievalReport) -> str:
    lines = [
        f"{report.collection}: {report.documents} documents, {report.queries} judged queries, model {report.model}"
        + (f", reranker {report.reranker}" if report.reranker else ""),
        f"ingest: {report.ingest.get('encoded', 0)} encoded, {report.ingest.get('unchanged', 0)} unchanged, "
        f"{report.ingest.get('inserted', 0)} inserted, {report.ingest.get('updated', 0)} updated, "
        f"{report.ingest.get('removed', 0)} removed; query encoding {report.encode_ms_per_query:.1f} ms/query (batched)",
        "",
    ]
    header = ["stage", *METRIC_NAMES, "mean ms", "p95 ms"]
    rows = [header]
    for stage in report.stages:
        rows.append(
            [stage.name]
            + [f"{stage.metrics[m]:.4f}" for m in METRIC_NAMES]
            + [f"{stage.mean_ms:.2f}", f"{stage.p95_ms:.2f}"]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
