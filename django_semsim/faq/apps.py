"""App config of the FAQ: nothing runs at start-up (its models' signals are connected by django_semsim)."""

from __future__ import annotations

from django.apps import AppConfig


class FAQConfig(AppConfig):
    name = "django_semsim.faq"
    label = "semsim_faq"
    verbose_name = "FAQ"
    default_auto_field = "django.db.models.BigAutoField"
