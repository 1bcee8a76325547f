"""The example site as the Docker image serves it: Django's WSGI application behind gunicorn,
with WhiteNoise serving the files ``collectstatic`` gathered into STATIC_ROOT at build time
(compressed, cached forever under hashed names only where the storage adds them).

Copied into the image next to ``manage.py``; ``runserver`` is for the compose ``dev`` profile only.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_site.settings")

from django.conf import settings  # noqa: E402 - the settings module must be named first
from django.core.wsgi import get_wsgi_application  # noqa: E402
from whitenoise import WhiteNoise  # noqa: E402

application = WhiteNoise(get_wsgi_application(), root=settings.STATIC_ROOT, prefix=settings.STATIC_URL)
