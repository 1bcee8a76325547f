"""Search insights for Django sites: the query log of ``FAQ.objects.answer()`` and two admin pages,
"Unanswered questions" and "Search insights".

Add ``"django_semsim.insights"`` to ``INSTALLED_APPS`` (after ``django_semsim`` and, for the FAQ
pages, ``django_semsim.faq``), migrate, and set ``SEMSIM["QUERY_LOG"] = True``. The log is the
core's (:mod:`semsim_pg.insights`: buffered, written off the request path, never failing a
request) kept in this app's own table.
"""
