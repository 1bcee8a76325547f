"""django_semsim.faq: an FAQ matched by meaning, as an app of its own.

Add ``"django_semsim.faq"`` to ``INSTALLED_APPS`` (after ``"django_semsim"``) to get the ``FAQ``
and ``FAQPhrasing`` models, their admin, and ``semsim_faq_import`` / ``semsim_faq_export``.
Import the models from ``django_semsim.faq.models``; nothing is imported here so that
``INSTALLED_APPS`` can load the package before the app registry is ready.
"""

__all__: list[str] = []
