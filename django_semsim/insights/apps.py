"""App config of the search insights: nothing runs at start-up."""

from __future__ import annotations

from django.apps import AppConfig


class InsightsConfig(AppConfig):
    name = "django_semsim.insights"
    label = "semsim_insights"
    verbose_name = "Search insights"
    default_auto_field = "django.db.models.BigAutoField"
