"""``semsim index check``: is the collection's HNSW index there, and how much does it miss?

Recall@k is measured live, on the collection's own vectors: a sample of stored vectors is
searched through the index and by exact scan (each leaving its own document out), and the
share of the exact top k that the index also returns is averaged. Below the target the check
looks for the ``ef_search`` that reaches it, and else suggests a denser graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from semsim_pg import queries
from semsim_pg.db import connect
from semsim_pg.errors import InvalidInput
from semsim_pg.sql import to_array
from semsim_pg.store.indexes import index_state
from semsim_pg.store.search import SearchArgs, run_search
from semsim_pg.store.types import Collection

if TYPE_CHECKING:
    from semsim_pg.store import DocumentStore

__all__ = ["EF_SEARCH_STEPS", "RECALL_TARGET", "IndexCheck", "check_index", "suggestion"]

RECALL_TARGET = 0.95
#: the ef_search values tried, in turn, when the configured one misses the target
EF_SEARCH_STEPS = (40, 80, 160, 320, 640, 1000)


@dataclass
class IndexCheck:
    collection: str
    state: str
    k: int
    sample: int
    ef_search: int
    m: int
    ef_construction: int
    recall: float | None = None
    #: the smallest ef_search tried that reaches the target, when the configured one does not
    ef_search_needed: int | None = None
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ok(self) -> bool:
        """A valid index that reaches the recall target; an empty one has nothing to miss (a
        site with a model that holds no rows yet is healthy: a cron job must not alert on it)."""
        if self.state != "valid":
            return False
        return self.sample == 0 if self.recall is None else self.recall >= RECALL_TARGET

    def summary(self) -> str:
        head = f"{self.collection}: index {self.state}"
        if self.recall is not None:
            head += (
                f", recall@{self.k} {self.recall:.3f} on {self.sample} stored vectors at ef_search {self.ef_search}"
                f" (m {self.m}, ef_construction {self.ef_construction})"
            )
        return head + (f"\n{self.suggestion}" if self.suggestion else "")


def check_index(
    store: DocumentStore, coll: Collection, *, sample: int = 200, k: int = 10, ef_search: int | None = None
) -> IndexCheck:
    """The index's state and, when it is valid, its recall@k against exact search."""
    if sample < 1:
        raise InvalidInput(f"--sample must be at least 1, got {sample}.")
    ef = store.settings.ef_search if ef_search is None else ef_search
    check = IndexCheck(coll.name, "missing", k, 0, ef, coll.hnsw_m, coll.hnsw_ef_construction)
    with connect(store.engine) as conn:
        check.state = index_state(conn, coll)
        rows = conn.execute(queries.sample_embeddings(coll.id, coll.model_name, sample)).all()
        conn.rollback()
    if check.state != "valid":
        check.suggestion = {
            "loading": "A bulk load is running; it builds the index when it ends.",
        }.get(check.state, f"Searches scan every vector meanwhile. Build it: semsim index rebuild -c {coll.name}")
        return check
    if not rows:
        check.suggestion = "The collection holds no vectors yet: nothing to measure."
        return check
    check.sample = len(rows)
    probes = [(to_array(r[1]), int(r[2])) for r in rows]
    # The index itself: the planner may scan a small collection instead, which would hide it.
    exact_args, approx_args = SearchArgs(k, None, None, exact=True), SearchArgs(k, None, None, force_index=True)
    with connect(store.engine) as conn:
        exact = [
            {h.external_id for h in run_search(conn, store.settings, coll, v, exact_args, ef, exclude_id=i)}
            for v, i in probes
        ]

        def recall_at(ef_value: int) -> float:
            found = [
                {h.external_id for h in run_search(conn, store.settings, coll, v, approx_args, ef_value, exclude_id=i)}
                for v, i in probes
            ]
            shares = [len(f & e) / len(e) for f, e in zip(found, exact, strict=True) if e]
            return sum(shares) / len(shares) if shares else 1.0

        check.recall = recall_at(ef)
        if check.recall < RECALL_TARGET:
            for step in (s for s in EF_SEARCH_STEPS if s > ef):
                if recall_at(step) >= RECALL_TARGET:
                    check.ef_search_needed = step
                    break
    check.suggestion = _suggestion(check)
    return check


def _suggestion(check: IndexCheck) -> str | None:
    return suggestion(
        check,
        ef_setting="SEMSIM_EF_SEARCH={ef}",
        rebuild=f"semsim index rebuild -c {check.collection} --m {{m}} --ef-construction {{efc}}",
    )


def suggestion(check: IndexCheck, *, ef_setting: str, rebuild: str) -> str | None:
    """What reaches the target, in the words of the caller's settings (``{ef}``, ``{m}`` and
    ``{efc}`` in ``ef_setting`` and ``rebuild`` are filled in); None when the recall reaches it."""
    if check.recall is None or check.recall >= RECALL_TARGET:
        return None
    if check.ef_search_needed is not None:
        return (
            f"Below {RECALL_TARGET}: ef_search {check.ef_search_needed} reaches it "
            f"({ef_setting.format(ef=check.ef_search_needed)}, or ef_search= per search; each search reads more "
            "of the graph)."
        )
    m, efc = min(100, check.m * 2), min(1000, max(check.ef_construction * 2, 200))
    return (
        f"Below {RECALL_TARGET} even at ef_search {EF_SEARCH_STEPS[-1]}: build a denser graph, e.g. "
        f"{rebuild.format(m=m, efc=efc)} (a larger index and a slower build)."
    )
