"""Argument checks shared by the core, the CLI and the Django app: one rule, one message.

Each check raises :class:`~semsim_pg.errors.InvalidInput` (or its :class:`InvalidQuery` child)
with a message that names the argument, the value received and what would be accepted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from semsim_pg.errors import InvalidInput, InvalidQuery
from semsim_pg.sql import METRICS

__all__ = ["MAX_K", "MAX_NAME_LENGTH", "check_k", "check_name", "check_vectors"]

#: the most hits one search returns (and the most candidates a rerank reads)
MAX_K = 1000
MAX_NAME_LENGTH = 200


def check_k(k: Any, name: str = "k") -> int:
    """``k`` as a whole number from 1 to :data:`MAX_K`, else :class:`InvalidQuery`."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidQuery(f"{name} must be a whole number from 1 to {MAX_K}, got {k!r}.")
    return k


def check_name(name: Any, what: str = "collection name") -> str:
    """A non-empty name of at most :data:`MAX_NAME_LENGTH` characters, stripped."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"A {what} must be a non-empty text, got {name!r}.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"A {what} must be at most {MAX_NAME_LENGTH} characters long.")
    return name.strip()


def check_vectors(
    vectors: npt.NDArray[np.float32],
    what: str = "vectors",
    error: type[InvalidInput] = InvalidInput,
    *,
    metric: str | None = None,
) -> None:
    """Refuse NaN or infinite values (PostgreSQL's vector type does too, less clearly), and a
    zero vector where ``metric`` cannot measure one (cosine: it has no direction)."""
    if not np.all(np.isfinite(vectors)):
        raise error(f"The {what} hold NaN or infinite values.")
    if metric is not None and METRICS[metric].needs_direction:
        zero = np.flatnonzero(~np.any(np.atleast_2d(vectors) != 0, axis=1))
        if zero.size:
            where = f" (row {int(zero[0])})" if np.ndim(vectors) == 2 else ""
            raise error(
                f"The {what} hold a zero vector{where}: {metric} similarity is undefined for it. "
                "Give vectors with at least one non-zero value."
            )
