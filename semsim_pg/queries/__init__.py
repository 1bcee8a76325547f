"""semsim's SQL, in one place: statements on SQLAlchemy Core with pgvector's operators.

Only this package names semsim's tables (and the migrations, which create them). Everything
else (the store, reembed, the FAQ, retrieval evaluation, FAISS builds) executes what it returns.
Each function returns a statement and runs nothing, so callers choose the connection and the
transaction.
"""

from semsim_pg.queries.collections import (
    delete_collection,
    find_collection,
    insert_collection,
    list_collections,
    lock_collection_model,
    set_collection_model,
)
from semsim_pg.queries.documents import (
    STAGING,
    copy_staging,
    count_documents,
    create_staging,
    delete_documents,
    document_vector,
    external_ids,
    get_document,
    lock_documents_share,
    model_names,
    remove_model_rows,
    sample_embeddings,
    stale_count,
    stale_rows,
    stored_hashes,
    stream_embeddings,
    upsert_staged_documents,
    vector_count,
    write_staged_vectors,
    write_vectors_cas,
)
from semsim_pg.queries.faq import faq_entries, faq_phrasings
from semsim_pg.queries.indexes import (
    IndexedCollection,
    collection_indexes,
    create_index,
    drop_index,
    index_name,
    index_predicate,
    index_size,
    index_validity,
    indexed_vectors,
    reindex,
)
from semsim_pg.queries.search import Explain, search_settings, search_statement

__all__ = [
    "STAGING",
    "Explain",
    "IndexedCollection",
    "collection_indexes",
    "copy_staging",
    "count_documents",
    "create_index",
    "create_staging",
    "delete_collection",
    "delete_documents",
    "document_vector",
    "drop_index",
    "external_ids",
    "faq_entries",
    "faq_phrasings",
    "find_collection",
    "get_document",
    "index_name",
    "index_predicate",
    "index_size",
    "index_validity",
    "indexed_vectors",
    "insert_collection",
    "list_collections",
    "lock_collection_model",
    "lock_documents_share",
    "model_names",
    "reindex",
    "remove_model_rows",
    "sample_embeddings",
    "search_settings",
    "search_statement",
    "set_collection_model",
    "stale_count",
    "stale_rows",
    "stored_hashes",
    "stream_embeddings",
    "upsert_staged_documents",
    "vector_count",
    "write_staged_vectors",
    "write_vectors_cas",
]
