"""App config: connects the per-model signal receivers, the system checks and the per-connection
search defaults; nothing else.

No model is loaded and no query runs here (ARCHITECTURE.md decision 5); the search defaults are
set when a connection opens.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import setting_changed


class DjangoSemsimConfig(AppConfig):
    name = "django_semsim"
    label = "django_semsim"
    verbose_name = "Semantic search"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_semsim import checks  # noqa: F401  (registers the checks)
        from django_semsim.conf import reset_config
        from django_semsim.session import connect_session_defaults
        from django_semsim.signals import connect_signals

        setting_changed.connect(_on_setting_changed, dispatch_uid="django_semsim.setting_changed")
        connect_signals()
        reset_config()
        connect_session_defaults()


def _on_setting_changed(setting: str, **kwargs: object) -> None:
    if setting == "SEMSIM":
        from django_semsim.conf import reset_config

        reset_config()
