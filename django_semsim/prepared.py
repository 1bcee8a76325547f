"""The compiled SQL of a semantic search, kept per query shape.

A search evaluated as it was built (``list(Model.objects.filter(...).semantic_search(q, k))``)
is the same two-layer statement every time, but for the query vector. Building it costs about
a dozen queryset clones and compiling it walks a subquery with a FilteredRelation join and
annotations: more client time than PostgreSQL needs to answer it from the HNSW index
(``benchmarks/django_bench.py --only ratio``). So ``semantic_search()`` keeps the search as a
recipe until something needs its ``Query`` (:mod:`django_semsim.query`), and evaluating an
untouched recipe takes the SQL from here: compiled once by Django for the first search of a
shape, then reused with the new vector put in the parameter slots that held the first one's.

The key holds everything that SQL depends on: the model, the database alias, the base
queryset's filters with the type and value of every operand and its ordering, and the search's
own arguments (k, metric, search parameters, exact, similarity bound, encoder model). A base
queryset this module cannot describe exactly (joins, annotations, select_related, expressions in
filters, ...) gets no key and is compiled by Django as before; so does anything chained after the
search, since chaining builds the real ``Query`` first.
"""

from __future__ import annotations

import datetime
import decimal
import threading
import uuid
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.core.signals import setting_changed
from django.db import connections
from django.db.models.expressions import Col
from django.db.models.lookups import Lookup
from django.db.models.sql import Query
from django.db.models.sql.datastructures import BaseTable, Join
from django.db.models.sql.where import WhereNode

__all__ = ["CompiledSearch", "base_shape", "cache_info", "clear", "lookup", "remember"]

#: compiled shapes kept (least recently used dropped): a key holds filter values, e.g. a tenant id
MAX_SHAPES = 512
#: operand types whose value (with its type) fully describes a filter's parameter
_CONSTANTS = frozenset(
    {
        bool,
        int,
        float,
        str,
        type(None),
        decimal.Decimal,
        datetime.date,
        datetime.datetime,
        datetime.time,
        datetime.timedelta,
        uuid.UUID,
    }
)
#: Query attributes described by the key (the rest must hold Django's defaults)
_KEYED = frozenset({"model", "where", "order_by", "alias_map", "alias_refcount", "table_map"})
#: Query attributes that do not change the SQL: a cached property, the last lookup's joins and the
#: aliases a sticky filter may reuse (reset when the search clones the query; sticky queries have no key)
_IGNORED = frozenset({"base_table", "_lookup_joins", "used_aliases"})
_MISSING = object()
_pristine: dict[type, dict[str, Any]] = {}


def base_shape(query: Any) -> Hashable | None:
    """A key for the SQL a search over ``query`` compiles to, or None when ``query`` holds anything
    but plain filters on the model's own columns (constants) and an ordering by field names, i.e.
    anything the key would not describe exactly."""
    if type(query) is not Query:
        return None
    model = query.model
    pristine = _pristine.get(model)
    if pristine is None:
        pristine = _pristine[model] = vars(Query(model))
    for name, value in vars(query).items():
        if name in _KEYED or name in _IGNORED:
            continue
        default = pristine.get(name, getattr(Query, name, _MISSING))
        if value is not default and (default is _MISSING or value != default):
            return None
    table = model._meta.db_table
    aliases = _aliases_key(query, table)
    ordering = query.order_by
    if aliases is None or not all(type(item) is str for item in ordering):
        return None
    where = _node_key(query.where, table)
    if where is None:
        return None
    return (model, where, tuple(ordering), aliases)


def _aliases_key(query: Any, table: str) -> Hashable | None:
    """The model's table, and joins no clause uses any more (a related manager's filter on its
    foreign key joins the other table, then trims the join: refcount 0, absent from the SQL)."""
    parts: list[Hashable] = []
    for alias, join in query.alias_map.items():
        count = query.alias_refcount.get(alias)
        if alias == table:
            if type(join) is not BaseTable or join.table_name != table:
                return None
            parts.append((alias, count))
        elif type(join) is Join and not count and join.filtered_relation is None:
            parts.append((alias, count, join.identity, join.join_type, join.nullable))
        else:
            return None
    tables = tuple((name, tuple(names)) for name, names in query.table_map.items())
    return (tuple(parts), tables)


def _node_key(node: Any, table: str) -> Hashable | None:
    if type(node) is not WhereNode:  # NothingNode (none()), ExtraWhere, ...: not described here
        return None
    parts: list[Hashable] = []
    for child in node.children:
        part = _node_key(child, table) if isinstance(child, WhereNode) else _lookup_key(child, table)
        if part is None:
            return None
        parts.append(part)
    return (node.connector, node.negated, tuple(parts))


def _lookup_key(lookup: Any, table: str) -> Hashable | None:
    if not isinstance(lookup, Lookup):
        return None
    lhs = lookup.lhs
    if type(lhs) is not Col or lhs.alias != table:
        return None
    rhs = _constant_key(lookup.rhs)
    if rhs is None:
        return None
    return (type(lookup), lhs.target, lhs.output_field, rhs)


def _constant_key(value: Any) -> Hashable | None:
    """(type, value), so that 1, 1.0 and True (equal in Python) are three keys; None when the value
    is not a constant (an expression, a queryset, a model instance, ...)."""
    kind = type(value)
    if kind in _CONSTANTS:
        return (kind, value)
    if kind in (list, tuple):
        items = tuple(_constant_key(item) for item in value)
        return None if any(item is None for item in items) else (kind, items)
    return None


class CompiledSearch:
    """A search statement as Django compiled it, with the positions of its query vector."""

    __slots__ = ("compiler_class", "params", "slots", "sql", "state")

    def __init__(self, sql: str, params: tuple[Any, ...], slots: tuple[int, ...], state: dict[str, Any], kind: type):
        self.sql = sql
        self.params = params
        self.slots = slots
        self.state = state
        self.compiler_class = kind

    @classmethod
    def compile(cls, query: Any, using: str, vector: str) -> CompiledSearch | None:
        """Compile ``query`` (a search whose vector parameter is the string object ``vector``);
        None when the statement cannot be reused (no such parameter, or an empty result)."""
        compiler = query.get_compiler(using=using)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:
            return None
        # the very object: a filter value equal to the vector's text stays what it is
        slots = tuple(i for i, param in enumerate(params) if param is vector)
        if not sql or not slots:
            return None
        # what the compile step left on the compiler (select, klass_info, annotation_col_map,
        # col_count, ...) is what executing and reading the rows need; the connection is per thread
        state = {name: value for name, value in vars(compiler).items() if name != "connection"}
        return cls(sql, tuple(params), slots, state, type(compiler))

    def compiler(self, using: str, vector: str) -> Any:
        """A compiler of this statement for ``vector``, ready for ``execute_sql()``."""
        params = list(self.params)
        for slot in self.slots:
            params[slot] = vector
        kind = _prepared_class(self.compiler_class)
        compiler: Any = object.__new__(kind)
        compiler.__dict__.update(self.state)
        compiler.connection = connections[using]
        compiler.prepared = (self.sql, params)
        return compiler


class _PreparedMixin:
    prepared: tuple[str, list[Any]]

    def as_sql(self, *args: Any, **kwargs: Any) -> tuple[str, list[Any]]:
        return self.prepared


_classes: dict[type, type] = {}


def _prepared_class(kind: type) -> type:
    prepared = _classes.get(kind)
    if prepared is None:
        prepared = _classes[kind] = type(f"Prepared{kind.__name__}", (_PreparedMixin, kind), {})
    return prepared


class WithCompiler:
    """A queryset as Django's ModelIterable reads it, whose ``query.get_compiler()`` is a prepared one."""

    def __init__(self, queryset: Any, compiler: Any) -> None:
        self._queryset = queryset
        self._compiler = compiler

    @property
    def query(self) -> WithCompiler:
        return self

    def get_compiler(self, *args: Any, **kwargs: Any) -> Any:
        return self._compiler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queryset, name)


class _Store:
    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = self.misses = 0
        self._entries: OrderedDict[Hashable, CompiledSearch] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> CompiledSearch | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Hashable, entry: CompiledSearch) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


_store = _Store(MAX_SHAPES)


def lookup(key: Hashable) -> CompiledSearch | None:
    return _store.get(key)


def remember(key: Hashable, entry: CompiledSearch) -> None:
    _store.put(key, entry)


def clear(**_: Any) -> None:
    """Forget every compiled search (connected to ``setting_changed``: a test's DATABASES or SEMSIM)."""
    _store.clear()


def cache_info() -> dict[str, int]:
    """Hits, misses and shapes held (for tests and benchmarks)."""
    with _store._lock:
        return {"hits": _store.hits, "misses": _store.misses, "shapes": len(_store._entries)}


setting_changed.connect(clear, dispatch_uid="django_semsim.prepared.clear")
