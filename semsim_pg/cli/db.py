"""``semsim info`` and ``semsim db upgrade|downgrade|current``: the database and schema in use."""

from __future__ import annotations

import argparse
import json
from typing import Any

from semsim_pg import __version__
from semsim_pg.cli.common import out
from semsim_pg.errors import SemsimError
from semsim_pg.settings import get_settings

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``info`` and ``db`` to the ``semsim`` parser."""
    p = subparsers.add_parser("info", help="show the database, pgvector and model in use")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-model", action="store_true", help="do not load the model")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser("db", help="install or upgrade semsim's tables (Alembic migrations)")
    db = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    q = db.add_parser("upgrade", help="install or upgrade the schema (creates the vector extension if missing)")
    q.add_argument("revision", nargs="?", default="head")
    q.set_defaults(func=cmd_db_upgrade)
    q = db.add_parser(
        "downgrade",
        help="downgrade the schema ('base' removes semsim's tables and data); one that drops data needs --yes",
        description="Downgrade semsim's schema to REVISION. Below a revision that added data, the data goes: "
        "0007 the passage settings and all passages but the first (split texts are marked stale), 0006 which "
        "backend made each vector, 0005 each collection's text search language, 0004 the whole query log, 'base' "
        "everything. Such a downgrade says what it drops and does nothing without --yes.",
    )
    q.add_argument("revision", help="a revision id, 'base', or a step back such as -1")
    q.add_argument("--yes", action="store_true", help="drop what the downgrade drops (back up first)")
    q.set_defaults(func=cmd_db_downgrade)
    q = db.add_parser("current", help="show the installed schema revision")
    q.set_defaults(func=cmd_db_current)


def cmd_info(args: argparse.Namespace) -> int:
    from semsim_pg.db import get_engine, server_info

    settings = get_settings()
    info: dict[str, Any] = {
        "semsim_version": __version__,
        "embedded_server": settings.embedded,
        "data_dir": str(settings.data_dir),
    }
    engine = get_engine(settings)
    info.update(server_info(engine))
    # psql and other libpq clients refuse SQLAlchemy's driver name (postgresql+psycopg://); the
    # password is left out, not masked (libpq would send "***"): PGPASSWORD, ~/.pgpass or a prompt
    url = engine.url._replace(drivername="postgresql", password=None)  # set() takes None as "unchanged"
    url = url.difference_update_query(["password"])
    info["libpq_url"] = url.render_as_string(hide_password=False)
    from semsim_pg.backends import describe_choice
    from semsim_pg.encoder import get_encoder, resolve_model

    choice = None
    location: str | None = None
    if not args.no_model:
        encoder = get_encoder()
        info["model"] = encoder.describe()
        choice, location = encoder.backend_choice, encoder.source.location
    else:
        info["model"] = {"name": settings.model}
        try:
            location = resolve_model(settings.model).location
        except SemsimError:  # an unknown model: no record to look up
            location = None
    info["backend"] = describe_choice(choice, data_dir=settings.data_dir, location=location, threads=settings.threads)
    if args.json:
        out(json.dumps(info, indent=2))
        return 0
    model = info["model"]
    rows = [
        ("semsim", __version__),
        ("database", info["database_url"] + ("  (embedded server)" if settings.embedded else "")),
        (
            "libpq URL",
            info["libpq_url"] + "  (psql, BI tools" + (": while a semsim process runs)" if settings.embedded else ")"),
        ),
        ("data dir", info["data_dir"]),
        ("PostgreSQL", info["postgresql"]),
        ("pgvector", info["pgvector"] or f"not installed ({info['pgvector_available'] or 'not available'})"),
        ("schema", f"{info['schema_revision'] or 'not installed'} (this semsim: {info['schema_head']})"),
        ("memory", _memory(info)),
        ("model", model["name"]),
    ]
    if "dimension" in model:
        rows += [
            ("dimension", str(model["dimension"])),
            ("max tokens", str(model["max_seq_length"])),
            ("loaded from", f"{model['loaded_from']} ({model['source']})"),
            ("device", model["device"]),
            ("backend", model["backend_choice"] or f"{model['backend']} (SEMSIM_BACKEND={model['backend_requested']})"),
        ]
    rows += _backend_rows(info["backend"], settings.backend)
    for label, value in rows:
        out(f"{label:<12} {value}")
    return 0


def _backend_rows(backend: dict[str, Any], requested: str) -> list[tuple[str, str]]:
    """The CPU, threads and ``auto``'s figures: why this backend encodes here."""
    cpu = backend["cpu"]
    flags = ", ".join(cpu["flags"]) or "none known"
    rows = [
        (
            "CPU",
            f"{cpu['model']} (flags: {flags}; int8: {cpu['int8']}; native bf16: {'yes' if cpu['native_bf16'] else 'no'})",
        ),
        (
            "threads",
            f"{backend['threads']} (SEMSIM_THREADS)"
            if backend["threads"] != "default"
            else "SEMSIM_THREADS unset: the cores free when the model loads",
        ),
    ]
    if backend["fallback"]:
        rows.append(("auto", f"fell back: {backend['fallback']}"))
    if backend["record"] or backend["candidates"]:
        where = backend["record"] or "not recorded"
        rows.append(("auto record", f"{where}: chose {backend['chosen']}, measured {backend['measured_at']}"))
        for row in backend["candidates"]:
            rows.append(("", _candidate(row)))
    elif requested == "auto" and not backend["fallback"]:
        rows.append(("auto record", "none for these settings yet (the first encode measures)"))
    return rows


def _candidate(row: dict[str, Any]) -> str:
    name = f"{row['backend']:<11}"
    if "speedup" not in row:
        gate = row.get("gate")
        if gate is not None and not gate["passed"]:
            return f"{name} excluded: failed the quality gate ({'; '.join(gate['reasons'])})"
        return f"{name} excluded: {row.get('error', 'not measured')}"
    parts = [f"{row['speedup']:.2f}x torch fp32"]
    if "sentences_per_second" in row:
        parts.append(f"{row['sentences_per_second']} sentences/s")
    if "query_ms" in row:
        parts.append(f"query {row['query_ms']} ms")
    gate = row.get("gate")
    if gate is None:
        parts.append("the reference")
    else:
        parts.append(f"cosine mean {gate['mean_cosine']:.4f} / worst {gate['min_cosine']:.4f}")
        parts.append(f"gate-sample Spearman {gate['spearman']:.2f} (drop {gate['spearman_drop']:.2f})")
    return f"{name} " + ", ".join(parts)


def _memory(info: dict[str, Any]) -> str:
    """shared_buffers against semsim's HNSW indexes, which searches want in it."""
    buffers, hnsw = info["shared_buffers_bytes"] >> 20, info["hnsw_index_bytes"] >> 20
    fit = (
        "they fit"
        if info["hnsw_index_bytes"] <= info["shared_buffers_bytes"]
        else "they do not fit: raise shared_buffers, or searches read index pages from outside it"
    )
    warm = "pg_prewarm installed" if info["pg_prewarm"] else "no pg_prewarm (semsim warmup scans the indexes)"
    return f"shared_buffers {buffers} MB, HNSW indexes {hnsw} MB ({fit}); {warm}"


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from semsim_pg.db import current_revision, get_engine, safe_url, upgrade

    engine = get_engine()
    upgrade(engine, args.revision)
    out(f"semsim schema at {current_revision(engine)} on {safe_url(str(engine.url))}")
    return 0


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    from semsim_pg.db import current_revision, downgrade, downgrade_losses, get_engine, safe_url
    from semsim_pg.errors import InvalidInput

    engine = get_engine()
    judged = downgrade_losses(engine, args.revision)
    relative = any(mark in args.revision for mark in "+-@")
    if judged is None and relative and not args.yes:
        # a form Alembic reads but semsim does not (head-4, 0010-2, ...): what it drops is unknown.
        # (Anything else unknown is a name Alembic refuses itself, with the revisions it knows.)
        raise InvalidInput(
            f"Cannot tell what a downgrade to {args.revision!r} drops: give a revision id (semsim db current "
            "names the one in use), base or -N, or add --yes to downgrade anyway. Nothing was changed."
        )
    losses = judged or []
    dropped = "; ".join(f"{lost} ({rev})" for rev, lost in losses)
    if losses and not args.yes:
        raise InvalidInput(
            f"Downgrading semsim's schema to {args.revision} drops data: {dropped}. Nothing was changed: back up, "
            "then add --yes."
        )
    downgrade(engine, args.revision)
    out(f"semsim schema at {current_revision(engine) or 'base (removed)'} on {safe_url(str(engine.url))}")
    if losses:
        out(f"dropped: {dropped}")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    from semsim_pg.db import check_known_revision, current_revision, get_engine, head_revision
    from semsim_pg.errors import SchemaTooNew

    current = current_revision(get_engine())
    head = head_revision()
    state = "up to date" if current == head else "run `semsim db upgrade`"
    try:
        check_known_revision(current)
    except SchemaTooNew:
        state = "newer than this semsim: upgrade semsim (pip install -U semsim)"
    out(f"{current or 'not installed'} (head: {head}; {state})")
    return 0
