"""Which encoder and cross-encoder the Django side uses: from ``SEMSIM`` settings and the core.

Its own module so that the QuerySet, the sync machinery and the FAQ app can all ask for the model
without importing each other. Nothing here loads a model until a caller asks for one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django_semsim.conf import get_config
from semsim_pg.errors import InvalidQuery

if TYPE_CHECKING:
    from semsim_pg.encoder import Encoder
    from semsim_pg.rerank import Reranker

__all__ = ["get_model_encoder", "resolve_reranker"]


def get_model_encoder() -> Encoder:
    """The process-wide encoder of ``SEMSIM['MODEL']`` (the core's, shared with semsim_pg)."""
    from semsim_pg.encoder import get_encoder

    config = get_config()
    return get_encoder(config.model, device=config.device)


def resolve_reranker(rerank: Any) -> Reranker | None:
    """False/None: no reranking; True: the configured cross-encoder (SEMSIM["CROSS_ENCODER"], else the
    core's SEMSIM_CROSS_ENCODER); a text: that model name or directory; a Reranker: itself."""
    if rerank is None or rerank is False:
        return None
    from semsim_pg.rerank import Reranker, get_reranker

    if isinstance(rerank, Reranker):
        return rerank
    if rerank is True:
        return get_reranker(get_config().cross_encoder)
    if isinstance(rerank, str) and rerank.strip():
        return get_reranker(rerank)
    raise InvalidQuery(f"rerank must be False, True, a cross-encoder name or directory, or a Reranker; got {rerank!r}.")
