"""FAQ files: read and check a CSV/TSV, write it in one transaction, export it back.

Exported cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-`` or
``@``, also after leading tabs or carriage returns) get a leading ``'``, the guard OWASP's "CSV
injection" advice and spreadsheet-safe exporters use; the import removes exactly that one quote,
so import -> export -> import gives back the same entries. A cell that already starts with
quotes before such a character gets one more, so the round trip stays lossless for it too.

Which entry a ``faq_id`` names: the export writes :attr:`FAQ.faq_id` (the entry's ``external_id``,
or for an entry without one its primary key), and the import reads an id back the same way, so
importing one's own export updates the entries in place (same keys, same phrasings, nothing
encoded again) instead of adding a copy of each. See :func:`_by_faq_id` and :func:`export_rows`.

Phrasings the admin added from unanswered questions (``FAQPhrasing.promoted``) exist only in the
database until an export writes them out, so an import of a file that does not list them keeps
them (:attr:`ImportResult.kept`); only ``replace`` (the file is the whole truth) removes them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.db import models, transaction
from django.db.models import Q

from django_semsim.faq.models import FAQ, FAQPhrasing
from semsim_pg.errors import InputFileError, InvalidInput
from semsim_pg.faq import (  # the core reader names lines in errors
    ALTERNATIVES_SEPARATOR,
    FAQ_COLUMNS,
    PUBLISHED_COLUMN,
    FAQEntry,
    check_alternatives,
    guard_cell,
    kept_promoted_note,
    parse_published,
    read_rows,
    unguard_cell,
)

__all__ = [
    "EXPORT_COLUMNS",
    "EntryChange",
    "ImportEntry",
    "ImportResult",
    "export_csv",
    "import_entries",
    "read_entries",
]

#: columns of the CSV written by export (read back by import): the core's FAQ file columns, and
#: whether the entry is published (a draft exported and imported again stays a draft)
EXPORT_COLUMNS = (*FAQ_COLUMNS, PUBLISHED_COLUMN)
#: prefix of the key of an imported entry that has no faq_id (it is matched by its question)
QUESTION_KEY = "question:"


@dataclass(frozen=True)
class ImportEntry(FAQEntry):
    """An entry of a Django FAQ file: the core's entry and its ``published`` column (None: the file
    does not say, so a new entry gets the model's default and an existing one keeps its own)."""

    published: bool | None = None


@dataclass(frozen=True)
class EntryChange:
    """What an import did to one entry, for the admin's history (``action``: added, changed or deleted)."""

    faq: FAQ
    action: str
    #: the entry's fields the file changed (changed entries)
    fields: tuple[str, ...] = ()
    phrasings_added: int = 0
    phrasings_removed: int = 0


@dataclass(frozen=True)
class ImportResult:
    """Entries created, updated and (``replace``) removed; promoted phrasings the file did not list, kept."""

    created: int
    updated: int
    removed: int
    kept: int = 0
    #: entries the file gives as they are stored (nothing written for them)
    unchanged: int = 0
    #: what was done to each entry added, changed or deleted (for the admin's history)
    changes: tuple[EntryChange, ...] = field(default=(), compare=False)

    def kept_note(self, export: str, replace: str = "--replace") -> str:
        """The words that say what was kept, how to save it (``export``) and what removes it (``replace``)."""
        return kept_promoted_note(self.kept, export, replace)


def _limits() -> dict[str, tuple[str, int | None]]:
    """Entry attribute -> (column, the longest value the database column holds)."""

    def length(model: type[models.Model], name: str) -> int | None:
        return getattr(model._meta.get_field(name), "max_length", None)

    return {
        "faq_id": ("faq_id", length(FAQ, "external_id")),
        "question": ("question", length(FAQ, "question")),
        "answer": ("answer", None),
        "category": ("category", length(FAQ, "category")),
    }


def check_entry(entry: FAQEntry) -> None:
    """Refuse what PostgreSQL would refuse (a NUL character, a value longer than its column)."""
    faq_id = entry.faq_id.removeprefix(QUESTION_KEY)
    values = [(column, getattr(entry, name) or "", limit) for name, (column, limit) in _limits().items()]
    if entry.faq_id.startswith(QUESTION_KEY):
        values[0] = ("faq_id", "", None)
    phrasing_limit = getattr(FAQPhrasing._meta.get_field("text"), "max_length", None)
    values += [("alternatives", text, phrasing_limit) for text in entry.alternatives]
    for column, value, limit in values:
        if "\x00" in value:
            raise InvalidInput(f"FAQ {faq_id!r}: the {column} holds a NUL character, which PostgreSQL cannot store.")
        if limit is not None and len(value) > limit:
            raise InvalidInput(
                f"FAQ {faq_id!r}: the {column} is {len(value)} characters long; at most {limit} fit. Shorten it."
            )


def read_entries(path: str | Path, *, display_name: str | None = None) -> list[ImportEntry]:
    """Entries from a .csv/.tsv with header ``[faq_id,] question, answer[, category][, alternatives][,
    published]`` (alternatives separated by "|"; published true or false, empty for not said). The whole file is checked first; an error names its line, so a
    caller imports all of a file or nothing. Without a faq_id an entry is keyed by its question.
    ``display_name``: what errors call the file instead of ``path`` (the admin's upload, saved under
    a name of the server's, is told by the user's name)."""
    label = display_name or str(path)
    entries: list[ImportEntry] = []
    seen: dict[str, int] = {}
    optional = ("faq_id", "category", "alternatives", PUBLISHED_COLUMN)
    for line, raw in read_rows(path, ("question", "answer"), optional, display_name=display_name):
        row = {name: unguard_cell(value) for name, value in raw.items()}
        for name in ("question", "answer"):
            if not row[name]:
                raise InputFileError(f"{label}, line {line}: the {name} is empty.")
        faq_id = row.get("faq_id") or QUESTION_KEY + row["question"]
        if faq_id in seen:
            raise InputFileError(
                f"{label}, line {line}: entry {faq_id.removeprefix(QUESTION_KEY)!r} appears again (first on line "
                f"{seen[faq_id]}); put other phrasings in the alternatives column instead."
            )
        seen[faq_id] = line
        alternatives = tuple(a.strip() for a in row.get("alternatives", "").split(ALTERNATIVES_SEPARATOR) if a.strip())
        try:
            published = parse_published(row.get(PUBLISHED_COLUMN, ""))
            entry = ImportEntry(
                faq_id, row["question"], row["answer"], row.get("category") or None, alternatives, published=published
            )
            check_entry(entry)
        except InvalidInput as exc:
            raise InputFileError(f"{label}, line {line}: {exc}") from None
        entries.append(entry)
    if not entries:
        raise InputFileError(f"{label}: holds no FAQ entries, only a header.")
    return entries


#: entries with no external_id (the admin and models.FAQ.faq_id take an empty one for none)
_WITHOUT_EXTERNAL_ID = Q(external_id__isnull=True) | Q(external_id="")
#: the largest primary key PostgreSQL's bigint holds: a longer number in a file names no entry
_MAX_KEY = 2**63 - 1


def _as_key(faq_id: str) -> int | None:
    """The primary key ``faq_id`` is written as (``str(pk)`` exactly), else None."""
    if not (faq_id.isascii() and faq_id.isdigit()) or str(int(faq_id)) != faq_id or int(faq_id) > _MAX_KEY:
        return None
    return int(faq_id)


def _by_faq_id(faqs: models.QuerySet[FAQ], ids: Sequence[str]) -> dict[str, FAQ]:
    """faq_id -> the entry it names: the one with that external_id, else (the id being a primary key
    written as the export writes it) the entry with that key if it has no external_id.

    Why this and not another fix of the round trip: the export writes FAQ.faq_id, the id the CLI, the
    evaluation files and ``to_dict()`` show, and the core's FAQ files need one; an id read back the way
    it was written keeps an edited question the same entry. An external_id comes first because a file
    gave it on purpose; a key names only an entry without one, whose faq_id it is. The one id that
    could name two entries (a key that is also another entry's external_id) is never written:
    :func:`export_rows` keys such an entry by its question instead. So a faq_id from this site's export
    names one entry; a file from elsewhere whose numeric ids are not external ids here would update the
    entries with those keys, as it names them.
    """
    found: dict[str, FAQ] = faqs.in_bulk(ids, field_name="external_id")
    keys = {key: faq_id for faq_id in ids if faq_id not in found and (key := _as_key(faq_id)) is not None}
    if keys:
        for faq in faqs.filter(_WITHOUT_EXTERNAL_ID, pk__in=keys):
            found[keys[faq.pk]] = faq
    return found


def import_entries(entries: Sequence[FAQEntry], *, replace: bool = False, using: str = "default") -> ImportResult:
    """Write entries in one transaction (their vectors follow after commit); all are checked first.

    An entry whose ``faq_id`` names an existing one (:func:`_by_faq_id`) updates it (its phrasings
    replaced, except promoted ones it does not list: those are kept), an entry without one the entry
    with its question; with ``replace``, entries absent from ``entries`` are deleted, and so are
    promoted phrasings the entries do not list. ``published`` is set from an :class:`ImportEntry`
    that gives it; otherwise a new entry gets the model's default and an existing one keeps its own.
    What was done to each entry is in :attr:`ImportResult.changes` (unchanged entries are not).
    """
    for entry in entries:
        check_entry(entry)
    created = updated = kept = unchanged = 0
    changes: list[EntryChange] = []
    with transaction.atomic(using=using):
        faqs = FAQ.objects.using(using)
        ids = [e.faq_id for e in entries if not e.faq_id.startswith(QUESTION_KEY)]
        questions = [e.question for e in entries if e.faq_id.startswith(QUESTION_KEY)]
        existing = _by_faq_id(faqs, ids)
        if replace:
            stale = faqs.exclude(pk__in=[faq.pk for faq in existing.values()]).exclude(question__in=questions)
            # loaded (key and question only) before they go, for the history of who removed them
            changes += [EntryChange(faq, "deleted") for faq in stale.only("pk", "question")]
            stale.delete()
        removed = len(changes)
        by_question = {f.question: f for f in faqs.filter(question__in=questions)}
        for entry in entries:
            keyed_by_question = entry.faq_id.startswith(QUESTION_KEY)
            faq = by_question.get(entry.question) if keyed_by_question else existing.get(entry.faq_id)
            published = getattr(entry, "published", None)
            fields = {"question": entry.question, "answer": entry.answer, "category": entry.category or ""}
            if published is not None:
                fields["published"] = published
            new = faq is None
            if faq is None:
                faq = FAQ(external_id=None if keyed_by_question else entry.faq_id)
                created += 1
            changed_fields = tuple(name for name, value in fields.items() if new or getattr(faq, name) != value)
            if changed_fields:  # an entry given as it is stored is not saved (nor counted as updated)
                for name, value in fields.items():
                    setattr(faq, name, value)
                faq.save(using=using)
            listed = {text.casefold() for _, text in entry.phrasings()[1:]}
            current = {} if new else {p.text.casefold(): p for p in faq.phrasings.all()}
            added = deleted = 0
            for folded, phrasing in current.items():
                if folded in listed:
                    if phrasing.promoted:  # the file has it now: the file decides from here on
                        phrasing.promoted = False
                        phrasing.save(using=using, update_fields=["promoted"])
                    continue
                if phrasing.promoted and not replace and folded != entry.question.casefold():
                    kept += 1
                else:
                    phrasing.delete()
                    deleted += 1
            for _, text in entry.phrasings()[1:]:
                if text.casefold() not in current:
                    FAQPhrasing.objects.using(using).create(faq=faq, text=text)
                    added += 1
            if new:
                changes.append(EntryChange(faq, "added", phrasings_added=added))
            elif changed_fields or added or deleted:
                updated += 1
                changes.append(EntryChange(faq, "changed", changed_fields, added, deleted))
            else:
                unchanged += 1
    return ImportResult(created, updated, removed, kept, unchanged, tuple(changes))


def export_rows(queryset: Iterable[FAQ]) -> list[list[str]]:
    """One row of :data:`EXPORT_COLUMNS` per entry, each cell guarded against formula injection.

    The faq_id is FAQ.faq_id, which the import reads back (:func:`_by_faq_id`); for an entry without
    an external_id whose key some entry (exported or not) has as its external_id, that id would name
    the other entry, so it is left empty: the import then keys the entry by its question.

    A phrasing holding "|" (written by code: the admin's forms refuse it) would come back as two, so
    such an entry is refused (:class:`InvalidInput` naming it) rather than written."""
    faqs = list(queryset)
    keys = {str(faq.pk) for faq in faqs if not faq.external_id}
    using = queryset.db if isinstance(queryset, models.QuerySet) else None
    taken = set(FAQ.objects.db_manager(using).filter(external_id__in=keys).values_list("external_id", flat=True))
    rows = []
    for faq in faqs:
        texts = [p.text for p in faq.phrasings.all()]
        check_alternatives(faq.faq_id, texts, "reword it in the admin (the entry's alternative phrasings)")
        faq_id = "" if not faq.external_id and faq.faq_id in taken else faq.faq_id
        published = "true" if faq.published else "false"
        cells = [faq_id, faq.question, faq.answer, faq.category, ALTERNATIVES_SEPARATOR.join(texts), published]
        rows.append([guard_cell(cell) for cell in cells])
    return rows


def export_csv(queryset: Iterable[FAQ] | None = None, *, delimiter: str = ",") -> str:
    """The entries as CSV text (header ``faq_id, question, answer, category, alternatives, published``):
    the import's format. Raises :class:`InvalidInput` for an entry that would not read back (:func:`export_rows`)."""
    if queryset is None:
        queryset = FAQ.objects.all()
    if isinstance(queryset, models.QuerySet):
        queryset = queryset.prefetch_related("phrasings")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    writer.writerows(export_rows(queryset))
    return buffer.getvalue()
