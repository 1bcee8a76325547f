"""Staff searching an admin changelist are not the users the query log measures."""

from __future__ import annotations

import pytest
from django.test import override_settings
from django.urls import reverse

from tests.test_django_insights import _rows, _user, faqs, log_rows, site  # noqa: F401 (fixtures)


@pytest.mark.usefixtures("site", "faqs")
def test_a_changelist_search_is_not_logged() -> None:
    staff = _user("browser", "semsim_faq.view_faq")
    with override_settings(SEMSIM={"SYNC": "inline", "QUERY_LOG": True}):
        for mode in ("meaning", "hybrid"):
            page = staff.get(reverse("admin:semsim_faq_faq_changelist"), {"q": "shipping", "search_mode": mode})
            assert page.status_code == 200 and "How long does shipping take?" in page.content.decode()
    assert _rows() == []
