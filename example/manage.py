#!/usr/bin/env python
"""The example site: ``python manage.py migrate && python manage.py load_sample_data && python manage.py runserver``."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # run from a checkout without installing: the repository root holds django_semsim and semsim_pg
    sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
