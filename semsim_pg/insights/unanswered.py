"""Unanswered questions, grouped by meaning, and promoting a group into the FAQ.

The window's unresolved unanswered queries come out of SQL one row per distinct query (with how
often it was asked), most asked first, at most ``max_questions``. scipy groups them: average-
linkage hierarchical clustering on cosine distance, cut at ``max_distance`` (average linkage,
unlike single linkage, does not chain unrelated questions through a series of near ones). A
group's representative is the member closest to its centroid (weighted by how often each was
asked). Promoting a group claims its log rows under row locks, writes the FAQ change, then marks
the rows resolved in the same transaction as the claim: a second promoter of the same group
waits for the first and then finds nothing to claim (:class:`AlreadyResolved`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from semsim_pg import queries
from semsim_pg.db import connect
from semsim_pg.errors import AlreadyResolved, InvalidInput
from semsim_pg.insights.log import not_logged
from semsim_pg.insights.stats import ENABLE_HINT, check_logged
from semsim_pg.queries import tables
from semsim_pg.sql import to_array

if TYPE_CHECKING:
    from semsim_pg.faq import FAQEntry, FAQMatcher

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "NearEntry",
    "UnansweredGroup",
    "UnansweredQuestion",
    "find_group",
    "nearest_faq_entries",
    "promote_group",
    "resolve_group",
    "unanswered_groups",
]

#: cosine distance (1 - similarity) at which the clustering tree is cut
DEFAULT_MAX_DISTANCE = 0.4
#: distinct questions clustered at most (the most asked); the pairwise distances grow with its square
MAX_QUESTIONS = 5000
EXAMPLES = 5
T = TypeVar("T")


@dataclass(frozen=True)
class UnansweredQuestion:
    query_hash: str
    text: str | None
    times: int
    last_asked: dt.datetime


@dataclass(frozen=True)
class NearEntry:
    """An existing FAQ entry near a group, with the similarity of its best phrasing."""

    faq_id: str
    question: str
    score: float


@dataclass
class UnansweredGroup:
    """Questions that mean about the same, none of them answered."""

    id: str
    collection: str
    model_name: str
    size: int
    representative: UnansweredQuestion
    questions: list[UnansweredQuestion]
    centroid: npt.NDArray[np.float32]
    nearest: list[NearEntry] = field(default_factory=list)

    @property
    def examples(self) -> list[UnansweredQuestion]:
        return self.questions[:EXAMPLES]

    @property
    def hashes(self) -> list[str]:
        return [q.query_hash for q in self.questions]

    def to_dict(self) -> dict[str, Any]:
        def question(q: UnansweredQuestion) -> dict[str, Any]:
            return {"hash": q.query_hash, "text": q.text, "times": q.times, "last_asked": q.last_asked.isoformat()}

        return {
            "id": self.id,
            "collection": self.collection,
            "size": self.size,
            "distinct": len(self.questions),
            "representative": self.representative.text,
            "examples": [question(q) for q in self.examples],
            "nearest": [{"faq_id": n.faq_id, "question": n.question, "score": n.score} for n in self.nearest],
        }


def unanswered_groups(
    engine: Engine,
    collection: str,
    since: dt.datetime,
    *,
    below: float | None = None,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    max_questions: int = MAX_QUESTIONS,
    table: sa.Table | None = None,
    enable_hint: str = ENABLE_HINT,
    require_collection: Callable[[], object] | None = None,
) -> list[UnansweredGroup]:
    """The unresolved unanswered questions asked since ``since``, grouped by meaning, biggest
    group first. ``below`` also counts any query whose top-1 score was below it (plain searches
    have no answered flag). Groups hold questions of the model most of them were encoded with.
    When the log keeps nothing of ``collection``: the error of :func:`~semsim_pg.insights.stats.check_logged`."""
    if not 0 < max_distance < 2:
        raise InvalidInput(f"max_distance is a cosine distance between 0 and 2, got {max_distance}.")
    table = tables.query_log if table is None else table
    check_logged(engine, collection, table, enable_hint, require_collection)
    with connect(engine) as conn:
        models = conn.execute(queries.unanswered_models(collection, since, table)).first()
        if models is None:
            return []
        model = str(models[0])
        rows = conn.execute(
            queries.unanswered_queries(collection, since, model, below=below, limit=max_questions, table=table)
        ).all()
    if not rows:
        return []
    questions = [UnansweredQuestion(str(r[0]), r[1], int(r[3]), r[4]) for r in rows]
    vectors = np.vstack([to_array(r[2]) for r in rows]).astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    labels = _cluster(vectors, max_distance)
    groups = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        weights = np.asarray([questions[i].times for i in members], dtype=np.float64)
        centroid = (vectors[members] * weights[:, None]).sum(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        closest = members[int(np.argmax(vectors[members] @ centroid))]
        # Members most asked first (then the representative's neighbours): the examples to show.
        order = sorted(members, key=lambda i: (-questions[i].times, -float(vectors[i] @ centroid)))
        representative = questions[closest]
        groups.append(
            UnansweredGroup(
                id=representative.query_hash.removeprefix("vector:")[:12],
                collection=collection,
                model_name=model,
                size=int(weights.sum()),
                representative=representative,
                questions=[questions[i] for i in order],
                centroid=centroid.astype(np.float32),
            )
        )
    groups.sort(key=lambda g: (-g.size, -len(g.questions), g.id))
    return groups


def _cluster(vectors: npt.NDArray[np.float64], max_distance: float) -> npt.NDArray[np.int64]:
    if len(vectors) == 1:
        return np.zeros(1, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(vectors, method="average", metric="cosine")
    return np.asarray(fcluster(tree, t=max_distance, criterion="distance"), dtype=np.int64)


def find_group(groups: Sequence[UnansweredGroup], group_id: str) -> UnansweredGroup | None:
    """The group with this id (or whose representative's hash starts with it)."""
    group_id = group_id.strip().lower()
    for group in groups:
        if group.id == group_id or (len(group_id) >= 6 and group.representative.query_hash.startswith(group_id)):
            return group
    return None


def nearest_faq_entries(matcher: FAQMatcher, group: UnansweredGroup, k: int = 3) -> list[NearEntry]:
    """The ``k`` FAQ entries of a core collection nearest to the group's centroid (one SQL
    search with the centroid; the representative's text when the FAQ uses another model)."""
    from semsim_pg.store import QueryVector

    store = matcher.store
    coll = store.get_collection(matcher.collection)
    query: Any = QueryVector(group.centroid, group.model_name)
    if coll.model_name != group.model_name:
        if group.representative.text is None:
            return []
        query = group.representative.text
    with not_logged():
        hits = store.search(coll, query, k=max(k * 5, 20))
    seen: dict[str, NearEntry] = {}
    for hit in hits:
        faq_id = hit.metadata.get("faq_id")
        if faq_id is not None and str(faq_id) not in seen:
            seen[str(faq_id)] = NearEntry(str(faq_id), str(hit.metadata.get("question", hit.text)), hit.similarity)
    return list(seen.values())[:k]


def resolve_group(
    engine: Engine,
    collection: str,
    hashes: Sequence[str],
    resolved_as: str | Callable[[T], str],
    write: Callable[[], T],
    table: sa.Table | None = None,
) -> T:
    """Claim the unresolved log rows of these queries, run ``write`` (the FAQ change), then mark
    the rows resolved as ``resolved_as`` (or what it makes of ``write``'s result), all or nothing: if ``write`` fails nothing is marked;
    if the rows were resolved already (another user promoted the group) nothing is written."""
    if not hashes:
        raise InvalidInput("The group has no questions to promote.")
    table = tables.query_log if table is None else table
    with connect(engine) as conn, conn.begin():
        ids = [int(i) for i in conn.execute(queries.lock_unresolved(collection, hashes, table)).scalars()]
        if not ids:
            done = conn.execute(queries.resolved_queries(collection, hashes, table)).first()
            if done is None:
                raise AlreadyResolved(
                    "These questions are no longer in the unanswered list of "
                    f"{collection!r} (pruned from the log?): list the groups again."
                )
            raise AlreadyResolved(
                f"This group was already promoted, as {done[0]} at {done[1]:%Y-%m-%d %H:%M} UTC: "
                "list the unanswered groups again to see what is left."
            )
        result = write()
        label = resolved_as(result) if callable(resolved_as) else resolved_as
        conn.execute(queries.resolve_queries(ids, label, table))
    return result


def promote_group(
    matcher: FAQMatcher,
    group: UnansweredGroup,
    *,
    faq_id: str,
    answer: str | None = None,
    question: str | None = None,
    category: str | None = None,
    phrasing: str | None = None,
) -> FAQEntry:
    """Turn a group into the FAQ of a core collection: a new entry ``faq_id`` (``answer``
    required; the question defaults to the representative's text), or, when ``faq_id`` exists,
    a new alternative phrasing of it (``phrasing``, default the representative's text). The
    change is encoded like any other load; the group's log rows are marked resolved. A phrasing
    is marked promoted: importing a file that does not list it keeps it (``replace`` excepted)."""
    from semsim_pg.faq import ALTERNATIVES_SEPARATOR, FAQEntry

    existing = {entry.faq_id: entry for entry in matcher.entries()} if _has_collection(matcher) else {}
    text = (question or phrasing or group.representative.text or "").strip()
    if not text:
        raise InvalidInput(
            "The group's questions were logged without their text (SEMSIM_QUERY_LOG_TEXT=0): give the question to add."
        )
    if faq_id in existing:
        if answer is not None:
            raise InvalidInput(
                f"FAQ entry {faq_id!r} exists: a group is added to it as a phrasing, without --answer; "
                "choose a new id to create an entry."
            )
        entry = existing[faq_id]
        if text == entry.question or text in entry.alternatives:
            raise InvalidInput(f"{text!r} is already a phrasing of FAQ entry {faq_id!r}.")
        if ALTERNATIVES_SEPARATOR in text:
            # FAQ files separate alternatives with it: the phrasing could not be exported
            raise InvalidInput(
                f"{text!r} holds {ALTERNATIVES_SEPARATOR!r}, which separates alternatives in FAQ files: "
                "give the phrasing to add without it (--question)."
            )
        alternatives, promoted = (*entry.alternatives, text), (*entry.promoted, text)
        entry = FAQEntry(entry.faq_id, entry.question, entry.answer, entry.category, alternatives, promoted)
        resolved_as = f"phrasing of {faq_id}"
    else:
        if not answer or not answer.strip():
            raise InvalidInput(f"FAQ entry {faq_id!r} is new: give its answer.")
        entry = FAQEntry(faq_id, text, answer.strip(), category)
        resolved_as = f"FAQ entry {faq_id}"
    resolve_group(matcher.store.engine, group.collection, group.hashes, resolved_as, lambda: matcher.load([entry]))
    return entry


def _has_collection(matcher: FAQMatcher) -> bool:
    from semsim_pg.errors import CollectionNotFound

    try:
        matcher.store.get_collection(matcher.collection)
    except CollectionNotFound:
        return False
    return True
