"""Plumbing every fine-tuning run shares: loading a base model offline, the trainer's arguments,
threads, a progress bar with the loss and the dev metric, and saving the model atomically."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semsim_pg.backends.cpu import free_cores
from semsim_pg.errors import ConfigurationError, InvalidInput, ModelLoadError, NotImproved
from semsim_pg.finetune.records import RECORD_NAME
from semsim_pg.loading import one_line

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer
    from sqlalchemy.engine import Engine

    from semsim_pg.finetune.records import TrainingRecord

__all__ = [
    "adaptive_threads",
    "check_out",
    "load_bi_encoder",
    "load_cross_encoder",
    "offline_location",
    "quiet_model_card",
    "refuse_model_in_use",
    "refuse_unless_better",
    "require_training",
    "schedule",
    "staged_model_dir",
    "training_args",
    "use_all_cores",
]

logger = logging.getLogger(__name__)


@contextmanager
def quiet_model_card(progress: bool) -> Iterator[None]:
    """Without ``progress`` (-q), no "Computing widget examples" bar while a trainer is made.

    sentence-transformers fills the model card's widget examples when a trainer is made (the
    card's callback, on_init_end) under a tqdm bar of its own that no argument switches off. Its
    module's ``tqdm`` is swapped for one made with ``disable=True`` for that moment only; the card
    gets the same examples either way. (A training run is a job of its own: nothing else in the
    process draws that bar meanwhile.)"""
    if progress:
        yield
        return
    import functools
    import importlib

    try:
        card = importlib.import_module("sentence_transformers.base.model_card")
    except ImportError:  # pragma: no cover - older sentence-transformers keep it elsewhere
        card = importlib.import_module("sentence_transformers.model_card")
    original = getattr(card, "tqdm", None)
    if original is None:  # pragma: no cover - a version without the bar
        yield
        return
    card.tqdm = functools.partial(original, disable=True)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        card.tqdm = original  # type: ignore[attr-defined]


def require_training() -> None:
    from sentence_transformers.util import is_training_available

    if not is_training_available():
        raise ConfigurationError(
            "Fine-tuning needs the `datasets` and `accelerate` packages, which sentence-transformers' trainers "
            "use: pip install datasets accelerate."
        )


def use_all_cores(threads: int | None = None) -> int:
    """Set torch's threads: ``threads`` (or ``SEMSIM_THREADS``) when given, otherwise the cores that
    are free now (:func:`free_cores`); training re-checks them as it goes (:func:`adaptive_threads`)."""
    import torch

    from semsim_pg.settings import get_settings

    fixed = threads if threads is not None else get_settings().threads
    if fixed is not None and fixed < 1:
        raise InvalidInput(f"--threads must be at least 1, got {fixed}.")
    count, cores = (fixed, free_cores()[1]) if fixed is not None else free_cores()
    torch.set_num_threads(count)
    logger.info("training with %d of %d cores%s", count, cores, "" if fixed is not None else " (adapts to load)")
    return count


def adaptive_threads(threads: int | None, every: float = 30.0) -> Any:
    """A trainer callback that follows the machine's load between steps (``every`` seconds), unless
    the threads were fixed (``--threads`` or ``SEMSIM_THREADS``): on a shared machine the load
    changes during a run of minutes, and a thread too many makes every step several times slower."""
    import time

    import torch
    from transformers import TrainerCallback

    from semsim_pg.settings import get_settings

    class _Adaptive(TrainerCallback):
        def __init__(self) -> None:
            self.checked = time.monotonic()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if time.monotonic() - self.checked < every:
                return
            self.checked = time.monotonic()
            current = torch.get_num_threads()
            wanted, _ = free_cores(own=current)
            if wanted != current:
                logger.info("load changed: training with %d threads instead of %d", wanted, current)
                torch.set_num_threads(wanted)

    fixed = threads is not None or get_settings().threads is not None
    return None if fixed else _Adaptive()


#: a run on little data (a small FAQ) trains at least this many steps when no --epochs is given:
#: one epoch of a few steps at a fine-tuning learning rate barely moves the weights
MIN_STEPS = 20
#: ... in at most this many epochs (the best dev checkpoint is kept, so more only costs time)
MAX_AUTO_EPOCHS = 20.0


def check_training(
    *, epochs: float | None, batch_size: int, learning_rate: float | None, max_steps: int | None
) -> None:
    """Refuse training options no run could use, before a model loads or a negative is mined."""
    if epochs is not None and not (math.isfinite(epochs) and epochs > 0):
        raise InvalidInput(f"--epochs must be above 0, got {epochs}.")
    if batch_size < 1:
        raise InvalidInput(f"--batch-size must be at least 1, got {batch_size}.")
    if learning_rate is not None and not (math.isfinite(learning_rate) and 0 <= learning_rate < 1):
        raise InvalidInput(
            f"--learning-rate must be a number from 0 to below 1 (fine-tuning uses 1e-5 to 1e-4), got {learning_rate}."
        )
    if max_steps is not None and max_steps < 1:
        raise InvalidInput(f"--max-steps must be at least 1, got {max_steps}.")


def schedule(
    epochs: float | None, rows: int, batch_size: int, max_steps: int | None, evals_per_epoch: float
) -> tuple[float, int, int]:
    """Epochs, total steps and steps between dev evaluations for ``rows`` training rows.

    ``epochs`` None: one epoch, or as many as make :data:`MIN_STEPS` steps on little data."""
    per_epoch = max(1, math.ceil(rows / batch_size))
    if epochs is None:
        epochs = float(min(MAX_AUTO_EPOCHS, max(1.0, MIN_STEPS / per_epoch)))
    total = max_steps or math.ceil(per_epoch * epochs)
    eval_steps = max(1, math.ceil(total / max(1, round(evals_per_epoch * epochs))))
    return epochs, total, eval_steps


def offline_location(base: str, *, cross_encoder: bool = False) -> tuple[str, bool]:
    """Where to load the base model from (the packaged MiniLM, a directory, or a hub name), and
    whether to load it with ``local_files_only`` (local weights, or a hub name already cached),
    never asking a hub for those. A hub name neither cached nor downloadable fails at once."""
    from semsim_pg.loading import check_hub_model, resolve_model

    source = resolve_model(base)
    what, organization = (
        (f"{base!r} as a cross-encoder", "cross-encoder")
        if cross_encoder
        else (f"the base model {base!r}", "sentence-transformers")
    )
    local = source.local or check_hub_model(source.location, what=what, organization=organization, fix=_BASE_FIX)
    return source.location, local


_BASE_FIX = "Give a local model directory or all-MiniLM-L6-v2 (packaged)."


def load_bi_encoder(base: str) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    from semsim_pg.settings import get_settings

    location, local = offline_location(base)
    try:
        return SentenceTransformer(location, device=get_settings().device, local_files_only=local)
    except Exception as exc:  # the hub, the disk or the weights: all mean "cannot load"
        raise ModelLoadError(f"Cannot load the base model {base!r}: {one_line(exc)}. {_BASE_FIX}") from exc


def load_cross_encoder(base: str) -> CrossEncoder:
    """``base`` as a one-score cross-encoder: a saved CrossEncoder, or a plain transformer (such
    as the packaged all-MiniLM-L6-v2) whose body loads under a new one-logit head."""
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    from semsim_pg.settings import get_settings

    location, local = offline_location(base, cross_encoder=True)
    try:
        model: CrossEncoder = CrossEncoder(
            location,
            num_labels=1,
            device=get_settings().device,
            activation_fn=torch.nn.Sigmoid(),
            local_files_only=local,
        )
        return model
    except Exception as exc:
        raise ModelLoadError(f"Cannot load {base!r} as a cross-encoder: {one_line(exc)}. {_BASE_FIX}") from exc


#: a folder holding one of these is a saved model (sentence-transformers' module list, semsim's
#: own record of a fine-tuning); ``config.json`` counts only beside weights (:data:`MODEL_WEIGHTS`):
#: a project's or a tool's folder has a config.json too
MODEL_MARKERS = ("modules.json", RECORD_NAME)
MODEL_WEIGHTS = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "model.onnx",  # an ONNX export (optimum's layout)
    "tf_model.h5",  # a TensorFlow-only model
)

#: what a saved sentence-transformers or cross-encoder model (or a copy from a hub) holds, by name:
#: configs, tokenizer files, weights (sharded too), exports, the hub's card and files. Module folders
#: (``1_Pooling``, ``2_Normalize``) and exports (``onnx``, ``openvino``) hold the same kind of files;
#: ``.cache`` is huggingface-cli's download record. Anything else (``src/``, ``.git``, ``main.py``,
#: ``data.csv``, ``notes.txt``, ``package.json``) means the folder is more than a model, and
#: --overwrite would delete it with the model: names, not suffixes, since a user's own notes or
#: training data end in .txt, .json or .md as a tokenizer's files do.
_MODEL_FILE = re.compile(
    r"(config|config_sentence_transformers|modules|sentence_bert_config|tokenizer|tokenizer_config"
    r"|special_tokens_map|added_tokens|generation_config|data_config|preprocessor_config|semsim-finetune)\.json"
    r"|vocab\.(txt|json)|merges\.txt|(spiece|sentencepiece\.bpe|tokenizer)\.model|README\.md|\.gitattributes"
    r"|train_script\.py|(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?|tf_model\.h5"
    r"|flax_model\.msgpack|rust_model\.ot|\w*\.onnx(_data)?|openvino_model\w*\.(xml|bin)",
    re.IGNORECASE,
)
_MODEL_FOLDER = re.compile(r"\d+_[A-Za-z]\w*|onnx|openvino")
_HUB_CACHE = ".cache"


def _not_of_a_model(folder: Path, *, top: bool = True) -> list[str]:
    """The entries of ``folder`` (its module folders walked) that a saved model would not hold."""
    foreign: list[str] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            if top and entry.name == _HUB_CACHE:
                continue
            if top and _MODEL_FOLDER.fullmatch(entry.name):
                foreign += [f"{entry.name}/{name}" for name in _not_of_a_model(entry, top=False)]
            else:
                foreign.append(f"{entry.name}/")
        elif not _MODEL_FILE.fullmatch(entry.name):
            foreign.append(entry.name)
    return foreign


def _is_model_folder(out: Path) -> bool:
    if any((out / marker).is_file() for marker in MODEL_MARKERS):
        return True
    return (out / "config.json").is_file() and any((out / weights).is_file() for weights in MODEL_WEIGHTS)


def check_out(out: Path, overwrite: bool, *, engine: Engine | None = None) -> None:
    """Refuse an existing, non-empty output directory unless ``overwrite``, and even then one that
    holds a collection's model (:func:`refuse_model_in_use`, in ``engine``'s database or the
    configured one), is no model at all (a parent folder of models, a project, a home), or holds
    more than a model (a project folder with a model's files in it)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise InvalidInput(
                f"{out} exists and is not empty; fine-tuning would replace it. Choose another --out or pass --overwrite."
            )
        refuse_model_in_use(out, engine)
        # --overwrite replaces the whole folder: meant for an older model there, never for a folder
        # of other things (--out models where models/m1 is the model meant, --out a project).
        # Refusing a real model costs a new --out; deleting a project's files cannot be undone.
        if not out.is_dir() or not _is_model_folder(out):
            raise InvalidInput(
                f"{out} is not empty and holds no model (no {' or '.join(MODEL_MARKERS)}, nor config.json with "
                f"{' or '.join(MODEL_WEIGHTS[:2])}): --overwrite replaces only a model's folder, and would delete "
                f"everything in this one. Give a new or model folder as --out (e.g. {out / 'model'}); nothing was "
                "written."
            )
        foreign = _not_of_a_model(out)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise InvalidInput(
                f"{out} holds a model and also what a saved model does not ({shown}): --overwrite replaces the whole "
                f"folder and would delete them. Move them out, or give a new folder as --out (e.g. {out / 'model'}); "
                "nothing was written."
            )
    # Where the model will be written must take it, found before a model loads or a step runs:
    # the first folder of ``out`` that does not exist yet is the one made.
    from semsim_pg.fsutil import check_output_path

    made = next((p for p in (out, *out.parents) if p.parent.exists()), out)
    check_output_path(made, "--out", directory=True)


def refuse_model_in_use(out: Path, engine: Engine | None = None) -> None:
    """InvalidInput when the folder ``out`` is, or holds, the model of a collection (or of the
    Django app's vectors, when its tables are in the same database): replaced in place, its new
    weights would encode those collections' queries against vectors of the old ones, and nothing
    would notice (or, a parent folder replaced, the model is gone). The safe way is a new folder
    and ``semsim reembed``, which switches without downtime.

    A database that cannot be reached is not a reason to refuse (a run on pair files may be on a
    machine without one): a warning says the folder was not checked. Without a database URL, an
    embedded server that was never set up holds no collections and is not started for this."""
    import sqlalchemy as sa

    from semsim_pg import queries
    from semsim_pg.db import read_connection
    from semsim_pg.errors import SemsimError

    model = str(out.resolve())
    try:
        engine = engine or _configured_engine()
        if engine is None:
            return
        with read_connection(engine) as conn:
            using: Sequence[Any] = []  # (name, model) rows
            if conn.scalar(queries.collections_table()) is not None:  # a Django site's database has none
                using = conn.execute(queries.collections_using_model(model)).all()
            django: str | None = None
            if conn.scalar(queries.django_models_table()) is not None:
                django = conn.scalar(queries.django_model_recorded(model))
    except (sa.exc.SQLAlchemyError, SemsimError, OSError) as exc:
        logger.warning(
            "could not check whether a collection's vectors were made with %s (%s); replacing it anyway: a "
            "collection that was would search with other weights than its vectors' (write to a new folder "
            "instead, then `semsim reembed -c NAME --model NEW`)",
            out,
            one_line(exc),
        )
        return
    if not using and not django:
        return
    collections = [name for name, _ in using]
    users = [f"collection {name!r}" for name in collections]
    users += [f"the Django app's vectors (its table {queries.DJANGO_MODELS_TABLE})"] if django else []
    # a model inside ``out`` (--out a parent folder): name it, the user may not have thought of it
    inside = sorted({path for _, path in using} | {django or model} - {model})
    what = (
        f"holds the model of {' and '.join(users)} ({', '.join(inside)})"
        if inside
        else f"is the model of {' and '.join(users)}"
    )
    how = (
        f"`semsim reembed -c {collections[0]} --model NEW` (no downtime)"
        if collections
        else "SEMSIM = {'MODEL': NEW} and `manage.py semsim_reindex --all`"
    )
    raise InvalidInput(
        f"{out} {what}: replaced in place, their queries would be encoded with new weights against vectors of "
        f"the old ones, or by a model that is gone. Write to a new folder (--out NEW), then switch with {how}; "
        "nothing was written."
    )


def _configured_engine() -> Engine | None:
    """The configured database's engine; None when it is the embedded server and that was never set up."""
    from semsim_pg.db import get_engine
    from semsim_pg.server import embedded_server_status
    from semsim_pg.settings import get_settings

    settings = get_settings()
    if settings.embedded and not embedded_server_status(settings.data_dir)["initialised"]:
        return None
    return get_engine(settings)


@contextmanager
def staged_model_dir(out: Path) -> Iterator[Path]:
    """A temporary directory beside ``out`` to train and save into; on success it replaces ``out``
    in one rename, on any failure (an error, Ctrl-C, SIGTERM turned into SystemExit) it is removed
    and ``out`` is left as it was."""
    from semsim_pg.fsutil import atomic_directory

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out, overwrite=True) as tmp:
        yield Path(tmp)


def training_args(
    cls: Any,
    work: Path,
    *,
    epochs: float,
    batch_size: int,
    max_steps: int | None,
    learning_rate: float,
    seed: int,
    progress: bool,
    eval_steps: int | None = None,
    metric: str | None = None,
    **extra: Any,
) -> Any:
    """The trainer's arguments. With ``eval_steps`` the dev metric is measured every so many steps,
    a checkpoint is kept for the best one (weights only) and loaded at the end."""
    import torch

    from semsim_pg.settings import get_settings

    device = get_settings().device
    evaluation: dict[str, Any] = {"eval_strategy": "no", "save_strategy": "no"}
    if eval_steps:
        evaluation = {
            "eval_strategy": "steps",
            "eval_steps": eval_steps,
            "save_strategy": "steps",
            "save_steps": eval_steps,
            "save_only_model": True,
            "save_total_limit": 1,
            "load_best_model_at_end": True,
            "metric_for_best_model": metric,
            "greater_is_better": True,
        }
    return cls(
        output_dir=str(work),
        num_train_epochs=epochs,
        max_steps=max_steps if max_steps else -1,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=0.1,  # a float is a ratio of the total steps (transformers 5)
        seed=seed,
        report_to="none",
        logging_steps=10,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available() and device != "cpu",  # pinning needs an accelerator
        use_cpu=device == "cpu",
        **evaluation,
        **extra,
    )


def progress_callbacks(trainer: Any, progress: bool, describe: Callable[[dict[str, float]], str | None]) -> Any:
    """Show the loss and the dev metric on the trainer's progress bar instead of printing log lines."""
    from transformers import PrinterCallback, ProgressCallback

    if not progress:
        trainer.remove_callback(PrinterCallback)
        return trainer

    class _Postfix(ProgressCallback):
        def __init__(self) -> None:
            super().__init__()
            self.shown: dict[str, str] = {}

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            if self.training_bar is None or not logs:
                return
            if "loss" in logs:
                self.shown["loss"] = f"{float(logs['loss']):.4f}"
            dev = describe(logs)
            if dev:
                self.shown["dev"] = dev
            self.training_bar.set_postfix(self.shown, refresh=True)

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_Postfix())
    return trainer


def _best_eval(history: list[dict[str, Any]], metric: str) -> dict[str, float] | None:
    """The dev metrics of the best evaluation during training: the checkpoint loaded at the end."""
    key = f"eval_dev_{metric}"
    evals = [entry for entry in history if key in entry]
    if not evals:
        return None
    best = max(evals, key=lambda entry: float(entry[key]))
    return {k.removeprefix("eval_"): float(v) for k, v in best.items() if k.startswith("eval_dev_")}


def plain_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {key.removeprefix("dev_"): round(float(value), 4) for key, value in metrics.items()}


def _describe(metric: str) -> Any:
    def describe(logs: dict[str, float]) -> str | None:
        value = logs.get(f"eval_dev_{metric}")
        return None if value is None else f"{metric} {float(value):.2f}"

    return describe


def refuse_unless_better(record: TrainingRecord) -> None:
    """NotImproved (nothing is saved) unless the record's dev metric rose."""
    if record.gain <= 0:
        raise NotImproved(
            f"The tuned model is not better on the dev part ({record.metric} {record.before[record.metric]:.2f} -> "
            f"{record.after[record.metric]:.2f}); nothing was saved to {record.out}. Try more data, --epochs or "
            "another --learning-rate."
        )


def drop_work_files(tmp: Path) -> None:
    import shutil

    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("semsim", "sentence-transformers", "transformers", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def train_and_measure(
    trainer: Any, evaluator: Any, model: Any, metric: str, progress: bool, threads: int | None = None
) -> tuple[Any, dict[str, float]]:
    """Train with a progress bar showing the dev metric, threads following the load unless
    ``threads`` fixes them; return the trainer's state and the dev metrics of the best evaluation
    (the checkpoint loaded at the end), or a fresh one."""
    progress_callbacks(trainer, progress, _describe(metric))
    adaptive = adaptive_threads(threads)
    if adaptive is not None:
        trainer.add_callback(adaptive)
    state = trainer.train()
    after = plain_metrics(_best_eval(trainer.state.log_history, metric) or evaluator(model))
    return state, after
