"""Lexical search: a tsvector per document kept in step with its text, a GIN index, a language
per collection, and the SQL functions of lexical and hybrid search.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

``collections.text_search_config`` names the PostgreSQL text search configuration
(``english``, ``simple``, ``italian``, ...) of a collection. A generated column cannot read
another table, so ``documents.tsv`` is written by a trigger instead: before every insert, and
before every update that touches the text or moves the row to another collection, whatever
wrote it (the store, Django, ``UPDATE semsim.documents SET text = ...`` in psql). Changing a
collection's configuration recomputes its documents' tsvectors in the same transaction.

Rows from before this revision get their tsvector here, so lexical search works on them at once.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TRIGGERS = r"""
CREATE FUNCTION semsim.documents_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.tsv := to_tsvector(
    (SELECT c.text_search_config FROM semsim.collections c WHERE c.id = NEW.collection_id), NEW.text);
  RETURN NEW;
END
$$;

CREATE TRIGGER documents_tsv BEFORE INSERT OR UPDATE OF text, collection_id ON semsim.documents
FOR EACH ROW EXECUTE FUNCTION semsim.documents_tsv();

CREATE FUNCTION semsim.collections_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE semsim.documents SET tsv = to_tsvector(NEW.text_search_config, text) WHERE collection_id = NEW.id;
  RETURN NULL;
END
$$;

CREATE TRIGGER collections_tsv AFTER UPDATE OF text_search_config ON semsim.collections
FOR EACH ROW WHEN (OLD.text_search_config IS DISTINCT FROM NEW.text_search_config)
EXECUTE FUNCTION semsim.collections_tsv();
"""

# Any-of-the-words query: the lexemes of the text under the configuration (stop words gone,
# words stemmed), OR-ed. PostgreSQL's own text form of a stripped tsvector quotes each lexeme
# ('a' 'b'), and a lexeme never holds a space, so joining the quoted lexemes with ' | ' is a
# valid tsquery whatever the user typed: no user text is ever parsed as query syntax.
QUERY_FUNCTION = r"""
CREATE FUNCTION semsim.any_words_query(config regconfig, query_text text) RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT replace(strip(to_tsvector(config, query_text))::text, ''' ''', ''' | ''')::tsquery
$$;
"""


def upgrade() -> None:
    op.execute("ALTER TABLE semsim.collections ADD COLUMN text_search_config regconfig NOT NULL DEFAULT 'english'")
    op.execute("ALTER TABLE semsim.documents ADD COLUMN tsv tsvector")
    # Rows from before: one pass, then the trigger keeps every later write in step.
    op.execute(
        "UPDATE semsim.documents d SET tsv = to_tsvector(c.text_search_config, d.text)"
        " FROM semsim.collections c WHERE c.id = d.collection_id"
    )
    op.execute("ALTER TABLE semsim.documents ALTER COLUMN tsv SET NOT NULL")
    op.execute(TRIGGERS)
    op.execute("CREATE INDEX ix_documents_tsv ON semsim.documents USING gin (tsv)")
    op.execute(QUERY_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION semsim.any_words_query(regconfig, text)")
    op.execute("DROP TRIGGER collections_tsv ON semsim.collections")
    op.execute("DROP FUNCTION semsim.collections_tsv()")
    op.execute("DROP TRIGGER documents_tsv ON semsim.documents")
    op.execute("DROP FUNCTION semsim.documents_tsv()")
    op.execute("DROP INDEX semsim.ix_documents_tsv")
    op.execute("ALTER TABLE semsim.documents DROP COLUMN tsv")
    op.execute("ALTER TABLE semsim.collections DROP COLUMN text_search_config")
