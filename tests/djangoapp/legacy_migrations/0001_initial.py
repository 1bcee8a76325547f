"""pgvector and the table of encoder models.

Every generated companion model has a foreign key to ``EmbeddingModel``, so each app's
companion migration depends on this one, and ``migrate`` creates the extension before any
vector column.
"""

from django.db import migrations, models
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        VectorExtension(),
        migrations.CreateModel(
            name="EmbeddingModel",
            fields=[
                ("name", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("dimension", models.PositiveIntegerField()),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"verbose_name": "embedding model"},
        ),
    ]
