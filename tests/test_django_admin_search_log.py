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


@pytest.mark.usefixtures("site", "faqs")
def test_trying_a_question_is_not_logged(tiny_cross_encoder_path) -> None:  # type: ignore[no-untyped-def]
    from django_semsim.faq.models import FAQ

    staff = _user("tester", "semsim_faq.view_faq")
    logged = {"SYNC": "inline", "QUERY_LOG": True}
    for semsim in (logged, {**logged, "CROSS_ENCODER": str(tiny_cross_encoder_path)}):  # one answer(), then two
        with override_settings(SEMSIM=semsim):
            page = staff.get(reverse("admin:semsim_faq_faq_try"), {"question": "qwzx staff only probe", "k": 3})
        assert page.status_code == 200 and page.context["answer"] is not None
        assert (page.context["reranked"] is not None) == ("CROSS_ENCODER" in semsim)
    assert _rows() == []
    with override_settings(SEMSIM=logged):
        FAQ.objects.answer("qwzx staff only probe")  # the same question from the site is logged
    assert [row.query_text for row in _rows()] == ["qwzx staff only probe"]
