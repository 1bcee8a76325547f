"""App config: connects the per-model signal receivers, the system checks, the per-connection
search defaults and the companions' database cascade after migrate; nothing else.

No query runs here (ARCHITECTURE.md decision 5); the search defaults are set when a connection
opens. The model is loaded here only with ``SEMSIM['PRELOAD']``, in processes that serve or encode.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from django.apps import AppConfig
from django.core.signals import setting_changed
from django.db.models.signals import post_migrate


class DjangoSemsimConfig(AppConfig):
    name = "django_semsim"
    label = "django_semsim"
    verbose_name = "Semantic search"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_semsim import checks  # noqa: F401  (registers the checks)
        from django_semsim.background import connect_request_signals
        from django_semsim.cascade import on_post_migrate
        from django_semsim.conf import reset_config
        from django_semsim.session import connect_session_defaults
        from django_semsim.signals import connect_signals

        setting_changed.connect(_on_setting_changed, dispatch_uid="django_semsim.setting_changed")
        # this app's only: sent once per migrate, after every app's migrations ran
        post_migrate.connect(on_post_migrate, sender=self, dispatch_uid="django_semsim.cascade")
        connect_request_signals()
        connect_signals()
        reset_config()
        connect_session_defaults()
        if _wants_preload():
            preload()


def _on_setting_changed(setting: str, **kwargs: object) -> None:
    if setting == "SEMSIM":
        from django_semsim.conf import reset_config

        reset_config()


logger = logging.getLogger(__name__)

#: management commands that encode (the rest, like migrate or collectstatic, never load the model)
_ENCODING_COMMANDS = frozenset({"runserver", "semsim_worker", "semsim_reindex", "semsim_faq_import"})


def _wants_preload(argv: list[str] | None = None) -> bool:
    from django_semsim.conf import get_config
    from semsim_pg.errors import ConfigurationError

    try:
        if not get_config().preload:
            return False
    except ConfigurationError:
        return False  # check semsim.E005 reports the settings, with the other checks
    argv = sys.argv if argv is None else argv
    path = argv[0] if argv else ""
    program = os.path.basename(path)
    # `python -m django` runs django/__main__.py; `python -m gunicorn` (uvicorn, waitress) runs
    # their own __main__.py, and those serve requests
    is_django_main = program == "__main__.py" and os.path.basename(os.path.dirname(path)) == "django"
    if program in ("manage.py", "django-admin", "django-admin.py") or is_django_main:
        command = argv[1] if len(argv) > 1 else ""
        if command not in _ENCODING_COMMANDS:
            return False
        # runserver's autoreloader parent only watches files; its child (RUN_MAIN) serves
        if command == "runserver" and "--noreload" not in argv and os.environ.get("RUN_MAIN") != "true":
            return False
    return True


def preload() -> None:
    """Load the configured model and encode one text, so that the first request is as fast as the tenth."""
    from django_semsim.encoding import get_model_encoder

    start = time.perf_counter()
    encoder = get_model_encoder()
    encoder.encode(["warm up"], show_progress_bar=False)
    logger.info("model %s ready in %.1f s", encoder.name, time.perf_counter() - start)
