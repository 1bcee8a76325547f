"""Collections whose texts are split into passages: ingest, search (each document once, by its
best passage), per-document re-encoding, the SQL functions, the CLI and bad input."""

from __future__ import annotations

import itertools
import json

import pytest
import sqlalchemy as sa

from semsim_pg.chunking import DEFAULT_CHUNK_TOKENS
from semsim_pg.cli import main
from semsim_pg.errors import CollectionNotFound, InvalidInput
from semsim_pg.sql import vector_literal

#: a long text whose third part is about something else than its start
LONG = (
    "The city council met on Monday to discuss the new budget for road repairs. "
    "Several members asked for more money for bicycle lanes in the old town. "
    "The mayor promised a decision before the summer holidays begin. "
    "Residents complained about potholes on the main street near the station. "
    "Meanwhile, at the zoo, a baby giraffe was born during the night. "
    "The keepers say the calf stood up within an hour and is drinking well. "
    "Visitors can see the giraffe and its mother from next week on."
)
DOCS = [
    ("council", LONG),
    ("lions", "The lions at the zoo sleep most of the day in the shade."),
    ("bread", "Our bakery sells rye bread and sourdough every morning."),
    ("trains", "The night train to Vienna leaves at ten from platform four."),
]


def rows_of(store, collection: str) -> list[tuple[str, int, int, int | None]]:  # type: ignore[no-untyped-def]
    """(external id, passage, start, end) of the collection's stored vectors."""
    with store.engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT d.external_id, e.passage, e.passage_start, e.passage_end FROM semsim.embeddings e"
                    " JOIN semsim.documents d ON d.id = e.document_id JOIN semsim.collections c ON c.id = d.collection_id"
                    " WHERE c.name = :c ORDER BY 1, 2"
                ),
                {"c": collection},
            )
        ]


@pytest.fixture()
def chunked(store, collection_name):  # type: ignore[no-untyped-def]
    store.create_collection(collection_name, chunk=32, chunk_overlap=4)
    store.upsert(collection_name, DOCS)
    return collection_name


def test_long_texts_are_stored_as_passages_short_ones_whole(store, chunked, encoder) -> None:  # type: ignore[no-untyped-def]
    coll = store.get_collection(chunked)
    assert (coll.chunk_size, coll.chunk_overlap) == (32, 4)
    rows = rows_of(store, chunked)
    council = [r for r in rows if r[0] == "council"]
    assert len(council) >= 4 and [r[1] for r in council] == list(range(len(council)))
    assert council[0][2] == 0 and council[-1][3] is None  # the first from the start, the last to the end
    for before, after in itertools.pairwise(council):
        assert after[2] < before[3]  # overlapping
    assert [r for r in rows if r[0] == "bread"] == [("bread", 0, 0, None)]  # fits: one passage, the whole text
    assert store.stale_count(chunked) == 0
    assert next(c for c in store.list_collections() if c.name == chunked).embedded == 4  # documents, not passages


def test_search_returns_each_document_once_with_its_best_passage(store, chunked) -> None:  # type: ignore[no-untyped-def]
    for mode in ("semantic", "hybrid", "lexical"):
        hits = store.search(chunked, "a giraffe calf was born at the zoo", 4, mode=mode)
        ids = [h.external_id for h in hits]
        assert len(ids) == len(set(ids)), (mode, ids)
        top = hits[0]
        assert top.external_id == "council", (mode, ids)
        assert top.passage > 0 and "giraffe" in top.passage_text, (mode, top.passage_text)
        assert top.passage_text == LONG[top.passage_start : top.passage_end]
        assert top.semantic_text() == top.passage_text  # what a reranker reads
        bread = next(h for h in hits if h.external_id == "bread") if "bread" in ids else None
        if bread is not None:
            assert (bread.passage, bread.passage_start, bread.passage_end) == (0, 0, len(bread.text))
    # min_similarity applies to each document's best passage
    hits = store.search(chunked, "a giraffe calf was born at the zoo", 4)
    kept = store.search(chunked, "a giraffe calf was born at the zoo", 4, min_similarity=hits[1].similarity - 1e-6)
    assert [h.external_id for h in kept] == [h.external_id for h in hits[:2]]
    # the same as an exact scan, and a vector query gets the same passage
    exact = store.search(chunked, "a giraffe calf was born at the zoo", 4, exact=True)
    approx = store.search(chunked, "a giraffe calf was born at the zoo", 4)
    assert [(h.external_id, h.passage) for h in exact] == [(h.external_id, h.passage) for h in approx]
    # the best passage's similarity is the document's: above that of its first passage
    first = store.search(chunked, "the city council budget for road repairs", 1)[0]
    assert first.external_id == "council" and first.passage == 0
    assert approx[0].similarity > 0.3


def test_k_distinct_documents_even_when_one_document_has_the_nearest_passages(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    """A document of many near passages fills the first read (4k passages): search reads more."""
    giraffes = " ".join(f"Giraffe fact {i}: the giraffe is the tallest animal on earth." for i in range(30))
    docs = [("giraffes", giraffes)] + [(f"other{i}", f"Note {i} about trains and timetables.") for i in range(5)]
    store.create_collection(collection_name, chunk=16, chunk_overlap=0)
    store.upsert(collection_name, docs)
    assert len([r for r in rows_of(store, collection_name) if r[0] == "giraffes"]) > 12
    for exact in (False, True):
        hits = store.search(collection_name, "how tall is a giraffe", 3, exact=exact)
        assert next(h.external_id for h in hits) == "giraffes"
        assert len({h.external_id for h in hits}) == 3
    hits = store.search(collection_name, "how tall is a giraffe", 3, filter={"missing": 1})
    assert hits == []
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT external_id, passage FROM semsim.search(:c, CAST(:v AS vector), 3)"),
            {"c": collection_name, "v": vector_literal(store.query_vector(collection_name, "how tall is a giraffe"))},
        ).all()
    assert len({r[0] for r in rows}) == 3 and rows[0][0] == "giraffes"


def test_sql_functions_return_documents_once_with_the_store_s_passage(store, chunked, engine) -> None:  # type: ignore[no-untyped-def]
    query = "a giraffe calf was born at the zoo"
    vector = vector_literal(store.query_vector(chunked, query))
    with engine.connect() as conn:
        semantic = conn.execute(
            sa.text("SELECT * FROM semsim.search(:c, CAST(:v AS vector), 4)"), {"c": chunked, "v": vector}
        ).all()
        hybrid = conn.execute(
            sa.text("SELECT * FROM semsim.hybrid_search(:c, :t, CAST(:v AS vector), 4)"),
            {"c": chunked, "t": query, "v": vector},
        ).all()
        similar = conn.execute(sa.text("SELECT external_id FROM semsim.similar(:c, 'lions', 3)"), {"c": chunked}).all()
    hits = store.search(chunked, query, 4)
    assert [(r.external_id, r.passage, r.passage_start, r.passage_end) for r in semantic] == [
        (h.external_id, h.passage, h.passage_start, h.passage_end) for h in hits
    ]
    store_hybrid = store.search(chunked, query, 4, mode="hybrid")
    assert [(r.external_id, r.passage) for r in hybrid] == [(h.external_id, h.passage) for h in store_hybrid]
    assert [r.score for r in hybrid] == pytest.approx([h.score for h in store_hybrid])
    assert len({r[0] for r in similar}) == 3 and "lions" not in {r[0] for r in similar}

    # A document found by a word in a passage far in meaning from the query shows the passage that
    # holds the word, as the store does (migration 0011; before it, the function showed the nearest).
    store.upsert(chunked, [("late", WORDS_LATE)])

    def shown(hits) -> dict[str, tuple[int, int, int]]:  # type: ignore[no-untyped-def]
        return {h.external_id: (h.passage, h.passage_start, h.passage_end) for h in hits}

    for query, code_shown in (
        # only the passage far in meaning holds a word: lexical and hybrid both show it
        ("municipal politicians debating public finances QV-4471Z", True),
        # two passages hold words: hybrid shows the nearer (the giraffe's), lexical the code's
        ("giraffe born at the zoo QV-4471Z filed", False),
    ):
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT * FROM semsim.hybrid_search(:c, :t, CAST(:v AS vector), 4)"),
                {"c": chunked, "t": query, "v": vector_literal(store.query_vector(chunked, query))},
            ).all()
        store_hybrid = store.search(chunked, query, 4, mode="hybrid")
        assert [r.external_id for r in rows] == [h.external_id for h in store_hybrid], query
        assert shown(rows) == shown(store_hybrid), query
        assert [r.similarity for r in rows] == pytest.approx([h.similarity for h in store_hybrid], abs=1e-5)
        late = shown(rows)["late"]
        assert ("QV-4471Z" in WORDS_LATE[late[1] : late[2]]) is code_shown, (query, late)
        (lexical,) = store.search(chunked, query, 1, mode="lexical")
        assert lexical.external_id == "late"
        assert (shown([lexical])["late"] == late) is code_shown, query
        if code_shown:  # the premise: by meaning alone the document shows another passage
            nearest = next(h for h in store.search(chunked, query, 5) if h.external_id == "late")
            assert nearest.passage != late[0] and "QV-4471Z" not in nearest.passage_text


def test_changed_text_re_encodes_only_that_document_and_drops_its_old_passages(store, chunked, encoder) -> None:  # type: ignore[no-untyped-def]
    before = encoder.encoded_count
    result = store.upsert(chunked, DOCS)
    assert (result.unchanged, result.encoded, encoder.encoded_count - before) == (4, 0, 0)

    short = "The council approved the road budget."
    result = store.upsert(chunked, [("council", short), *DOCS[1:]])
    assert (result.updated, result.encoded, encoder.encoded_count - before) == (1, 1, 1)
    assert [r for r in rows_of(store, chunked) if r[0] == "council"] == [("council", 0, 0, None)]
    assert "giraffe" not in store.search(chunked, "giraffe calf", 1)[0].passage_text

    before = encoder.encoded_count
    result = store.upsert(chunked, [("council", LONG)])  # split again
    council = [r for r in rows_of(store, chunked) if r[0] == "council"]
    assert len(council) >= 4 and result.encoded == 1
    assert encoder.encoded_count - before == len(council)  # its passages, nothing else


def test_reconcile_splits_a_text_changed_outside_semsim(store, chunked) -> None:  # type: ignore[no-untyped-def]
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE semsim.documents SET text = :t WHERE external_id = 'bread'"
                " AND collection_id = (SELECT id FROM semsim.collections WHERE name = :c)"
            ),
            {"t": LONG.replace("giraffe", "zebra"), "c": chunked},
        )
    assert store.stale_count(chunked) == 1
    assert store.reconcile(chunked) == 1
    assert store.stale_count(chunked) == 0
    bread = [r for r in rows_of(store, chunked) if r[0] == "bread"]
    assert len(bread) == len([r for r in rows_of(store, chunked) if r[0] == "council"]) >= 4
    hit = store.search(chunked, "a zebra foal was born", 1)[0]
    assert hit.external_id == "bread" and "zebra" in hit.passage_text


def test_an_unsplit_collection_is_unchanged(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    store.upsert(store.create_collection(collection_name), DOCS)
    assert {r[1:] for r in rows_of(store, collection_name)} == {(0, 0, None)}
    hits = store.search(collection_name, "a giraffe calf was born at the zoo", 4)
    assert all((h.passage, h.passage_start, h.passage_end) == (0, 0, len(h.text)) for h in hits)
    assert hits[0].passage_text == hits[0].text
    plan = store.explain(collection_name, "giraffe", 4, analyze=False, force_index=True)
    assert "DISTINCT" not in plan.upper() and "Unique" not in plan


def test_bad_chunk_settings_write_nothing(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    for chunk, overlap, message in [
        (8, None, "below 16 tokens"),
        (300, None, "larger than the 256 tokens the model reads"),
        (64, 64, "must be smaller than the chunk size 64"),
        (None, 8, "chunk_overlap needs chunk"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            store.create_collection(collection_name, chunk=chunk, chunk_overlap=overlap)
        with pytest.raises(CollectionNotFound):
            store.get_collection(collection_name)
    store.upsert(store.create_collection(collection_name), DOCS[:1])
    with pytest.raises(InvalidInput, match="does not split its texts, and its 1 documents"):
        store.create_collection(collection_name, chunk=64)
    assert store.get_collection(collection_name).chunk_size is None
    with pytest.raises(InvalidInput, match="vectors= gives one per document"):
        store.drop_collection(collection_name)
        store.create_collection(collection_name, chunk=64)
        store.upsert(collection_name, DOCS[:1], vectors=[[0.0] * 384])
    assert store.count(collection_name) == 0


def test_an_empty_collection_takes_a_chunk_setting(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    store.create_collection(collection_name)
    assert store.create_collection(collection_name, chunk=48).chunk_overlap == 6
    assert store.create_collection(collection_name).chunk_size == 48  # kept without chunk=


def test_index_check_and_rebuild_work_faiss_refuses(store, chunked) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.faiss_index.stream import stream_vectors

    store.build_index(chunked, rebuild=True)
    check = store.check_index(chunked, sample=5, k=3)
    assert check.state == "valid" and check.recall is not None and check.recall > 0.9
    with pytest.raises(InvalidInput, match="one vector per document"):
        next(stream_vectors(store, chunked))


def test_cli_ingest_chunk_and_search_json(capsys, store, collection_name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in DOCS))
    assert main(["-q", "ingest", str(path), "-c", collection_name, "--chunk", "8"]) == 1
    assert "below 16 tokens" in capsys.readouterr().err
    assert main(["-q", "ingest", str(path), "-c", collection_name, "--chunk", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["encoded"] == 4
    assert main(["-q", "search", "giraffe calf born", "-c", collection_name, "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits[0]["external_id"] == "council" and hits[0]["passage"] > 0
    assert "giraffe" in hits[0]["passage_text"]
    assert hits[0]["passage_text"] == LONG[hits[0]["passage_start"] : hits[0]["passage_end"]]
    assert main(["-q", "search", "giraffe calf born", "-c", collection_name, "-k", "1"]) == 0
    assert f"[p{hits[0]['passage']}]" in capsys.readouterr().out
    assert main(["-q", "ingest", str(path), "-c", collection_name, "--chunk", "64"]) == 1
    assert "cannot switch to chunk 64" in capsys.readouterr().err
    store.drop_collection(collection_name)
    assert main(["-q", "ingest", str(path), "-c", collection_name, "--chunk", "--json"]) == 0
    assert store.get_collection(collection_name).chunk_size == DEFAULT_CHUNK_TOKENS


def test_rerank_reads_the_best_passage(store, chunked, tiny_cross_encoder_path) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.rerank import get_reranker, search_and_rerank

    reranker = get_reranker(str(tiny_cross_encoder_path))
    query = "a giraffe calf was born at the zoo"
    reranked = search_and_rerank(store, chunked, query, candidates=4, top_k=4, reranker=reranker, mode="hybrid")
    assert len({r.hit.external_id for r in reranked}) == 4
    council = next(r for r in reranked if r.hit.external_id == "council")
    # scored on the passage that matched, not on the whole (longer than the model reads) text
    assert council.rerank_score == pytest.approx(reranker.score(query, [council.hit.passage_text])[0], abs=1e-5)


#: a long text whose one rare word sits in a passage far in meaning from the query below
WORDS_LATE = LONG.replace(
    "Visitors can see the giraffe and its mother from next week on.",
    "The keepers filed report QV-4471Z about the birth.",
)


def test_lexical_and_hybrid_hits_show_the_passage_that_holds_the_words(store, collection_name) -> None:  # type: ignore[no-untyped-def]
    """A document found by its words shows (and a reranker reads) a passage holding them, not the
    passage nearest in meaning; a document found by meaning alone keeps its nearest passage."""
    store.create_collection(collection_name, chunk=32, chunk_overlap=4)
    store.upsert(collection_name, [("late", WORDS_LATE), *DOCS[1:]])
    # by meaning the council passage is nearest; by words only the last passage holds "QV-4471Z"
    query = "municipal politicians debating public finances QV-4471Z"
    nearest = store.search(collection_name, query, 1)[0]
    assert nearest.external_id == "late" and "QV-4471Z" not in nearest.passage_text  # the premise
    for mode in ("lexical", "hybrid"):
        hit = store.search(collection_name, query, 4, mode=mode)[0]
        assert hit.external_id == "late" and hit.lexical_rank == 1, mode
        assert "QV-4471Z" in hit.passage_text, (mode, hit.passage, hit.passage_text)
        assert hit.passage_text == WORDS_LATE[hit.passage_start : hit.passage_end]
        # the similarity stays the document's (its nearest passage's), as in a semantic search
        assert hit.similarity == pytest.approx(nearest.similarity, abs=1e-5), mode
    # of two passages with words, a lexical hit shows the one whose words match best (the code and
    # "filed"), a hybrid one the nearest by meaning of those holding a word (the giraffe's)
    query = "giraffe born at the zoo QV-4471Z filed"
    lexical = store.search(collection_name, query, 1, mode="lexical")[0]
    assert "QV-4471Z" in lexical.passage_text and "giraffe" not in lexical.passage_text
    hybrid = store.search(collection_name, query, 1, mode="hybrid")[0]
    assert "giraffe" in hybrid.passage_text and "QV-4471Z" not in hybrid.passage_text
    # found by meaning only (no word of the query in it): the nearest passage, as before
    hybrid = store.search(collection_name, "a newborn animal at the zoological garden", 4, mode="hybrid")
    dense = {
        h.external_id: h.passage for h in store.search(collection_name, "a newborn animal at the zoological garden", 4)
    }
    for hit in hybrid:
        if hit.lexical_rank is None and hit.external_id in dense:
            assert hit.passage == dense[hit.external_id]
