"""Admin helpers for semantic models (the FAQ's admin lives in ``django_semsim.faq.admin``).

django_semsim registers nothing with the admin site itself.
"""

__all__: list[str] = []
