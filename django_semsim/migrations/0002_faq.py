"""Empty since the FAQ became its own app (``django_semsim.faq``, label ``semsim_faq``).

This migration used to create the FAQ tables. It stays, with no operation, so that sites which
applied it keep a consistent history; ``semsim_faq``'s 0001_initial adopts the tables it created
(same names, rows kept) or creates them on sites that install the FAQ app.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("django_semsim", "0001_initial")]

    operations: list[migrations.operations.base.Operation] = []
