"""The FAQ as an app of its own (``django_semsim.faq``), keeping the tables it had in ``django_semsim``.

Until this app existed, ``django_semsim``'s migration 0002_faq created these four tables. Sites that
applied it keep their tables and rows: this migration declares the models (state only) and creates
each table only when it is missing, so a new site gets them and an old site adopts its own. The
content types (and so the permissions given to users and groups, and the admin log) move from
``django_semsim`` to this app's label.
"""

import django.db.models.deletion
import pgvector.django.indexes
import pgvector.django.vector
from django.db import migrations, models

_MODELS = [
    migrations.CreateModel(
        name="FAQ",
        fields=[
            ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ("question", models.CharField(max_length=500)),
            ("answer", models.TextField()),
            ("category", models.CharField(blank=True, db_index=True, max_length=100)),
            ("published", models.BooleanField(default=True, help_text="Only published entries match questions.")),
            (
                "external_id",
                models.CharField(blank=True, max_length=100, null=True, unique=True, verbose_name="FAQ id"),
            ),
            ("created_at", models.DateTimeField(auto_now_add=True)),
            ("updated_at", models.DateTimeField(auto_now=True)),
        ],
        options={
            "db_table": "django_semsim_faq",
            "verbose_name": "FAQ",
            "verbose_name_plural": "FAQs",
            "ordering": ["category", "question"],
        },
    ),
    migrations.CreateModel(
        name="FAQPhrasing",
        fields=[
            ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ("text", models.CharField(max_length=500)),
            (
                "faq",
                models.ForeignKey(
                    on_delete=django.db.models.deletion.CASCADE, related_name="phrasings", to="semsim_faq.faq"
                ),
            ),
        ],
        options={
            "db_table": "django_semsim_faqphrasing",
            "verbose_name": "alternative phrasing",
            "ordering": ["pk"],
        },
    ),
    migrations.CreateModel(
        name="FAQEmbedding",
        fields=[
            ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ("text_hash", models.CharField(blank=True, max_length=64, null=True)),
            ("embedding", pgvector.django.vector.VectorField(blank=True, dimensions=384, null=True)),
            ("created_at", models.DateTimeField(auto_now_add=True)),
            ("updated_at", models.DateTimeField(auto_now=True)),
            (
                "model",
                models.ForeignKey(
                    db_column="model_name",
                    db_index=False,
                    on_delete=django.db.models.deletion.PROTECT,
                    related_name="+",
                    to="django_semsim.embeddingmodel",
                ),
            ),
            (
                "source",
                models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.CASCADE,
                    related_name="semsim_embeddings",
                    to="semsim_faq.faq",
                ),
            ),
        ],
        options={
            "verbose_name": "FAQ embedding",
            "db_table": "django_semsim_faq_embedding",
            "indexes": [
                pgvector.django.indexes.HnswIndex(
                    ef_construction=64,
                    fields=["embedding"],
                    m=16,
                    name="semsim_3ea045e9d0_hnsw",
                    opclasses=["vector_cosine_ops"],
                )
            ],
            "constraints": [models.UniqueConstraint(fields=("source", "model"), name="semsim_3ea045e9d0_uniq")],
        },
    ),
    migrations.CreateModel(
        name="FAQPhrasingEmbedding",
        fields=[
            ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ("text_hash", models.CharField(blank=True, max_length=64, null=True)),
            ("embedding", pgvector.django.vector.VectorField(blank=True, dimensions=384, null=True)),
            ("created_at", models.DateTimeField(auto_now_add=True)),
            ("updated_at", models.DateTimeField(auto_now=True)),
            (
                "model",
                models.ForeignKey(
                    db_column="model_name",
                    db_index=False,
                    on_delete=django.db.models.deletion.PROTECT,
                    related_name="+",
                    to="django_semsim.embeddingmodel",
                ),
            ),
            (
                "source",
                models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.CASCADE,
                    related_name="semsim_embeddings",
                    to="semsim_faq.faqphrasing",
                ),
            ),
        ],
        options={
            "verbose_name": "alternative phrasing embedding",
            "db_table": "django_semsim_faqphrasing_embedding",
            "indexes": [
                pgvector.django.indexes.HnswIndex(
                    ef_construction=64,
                    fields=["embedding"],
                    m=16,
                    name="semsim_99812ea20c_hnsw",
                    opclasses=["vector_cosine_ops"],
                )
            ],
            "constraints": [models.UniqueConstraint(fields=("source", "model"), name="semsim_99812ea20c_uniq")],
        },
    ),
]

_ORDER = ["FAQ", "FAQPhrasing", "FAQEmbedding", "FAQPhrasingEmbedding"]
_MOVED = ["faq", "faqphrasing", "faqembedding", "faqphrasingembedding"]


def adopt_or_create(apps, schema_editor):  # type: ignore[no-untyped-def]
    """Create the tables a site lacks; move the FAQ content types of django_semsim to this app."""
    existing = set(schema_editor.connection.introspection.table_names())
    for name in _ORDER:
        model = apps.get_model("semsim_faq", name)
        if model._meta.db_table not in existing:
            schema_editor.create_model(model)
    if "django_content_type" in existing:
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                "UPDATE django_content_type SET app_label = 'semsim_faq' WHERE app_label = 'django_semsim' "
                "AND model = ANY(%s) AND NOT EXISTS (SELECT 1 FROM django_content_type t "
                "WHERE t.app_label = 'semsim_faq' AND t.model = django_content_type.model)",
                [_MOVED],
            )


def drop_tables(apps, schema_editor):  # type: ignore[no-untyped-def]
    for name in reversed(_ORDER):
        schema_editor.delete_model(apps.get_model("semsim_faq", name))


class Migration(migrations.Migration):
    initial = True

    dependencies = [("django_semsim", "0002_faq")]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=_MODELS),
        migrations.RunPython(adopt_or_create, drop_tables),
    ]
