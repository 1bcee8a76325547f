"""A search page (text box, topic filter, results with scores) and an article page with similar articles."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render

from semsim_pg.errors import InvalidQuery

from .models import Article


def search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    topic = request.GET.get("topic", "")
    if "\x00" in query or "\x00" in topic:
        # PostgreSQL cannot hold a NUL character in text: a bad request, not a server error
        return HttpResponseBadRequest("The search text and the topic cannot contain NUL characters.")
    articles = Article.objects.filter(published=True)
    if topic:
        articles = articles.filter(topic=topic)
    page = None
    error = ""
    if query:
        try:
            # lazy: the paginator's count() and its page slice each run one statement
            results = articles.semantic_search(query, k=50, min_similarity=0.1)
            page = Paginator(results, 10).get_page(request.GET.get("page"))
        except InvalidQuery as exc:
            error = str(exc)
    topics = Article.objects.order_by("topic").values_list("topic", flat=True).distinct()
    context = {"query": query, "topic": topic, "topics": topics, "page": page, "error": error}
    return render(request, "articles/search.html", context)


def detail(request: HttpRequest, pk: int) -> HttpResponse:
    article = get_object_or_404(Article, pk=pk, published=True)  # a draft is not public by its URL
    similar = Article.objects.filter(published=True).similar_to(article, k=5)
    return render(request, "articles/detail.html", {"article": article, "similar": similar})
