"""save() latency in immediate mode: a save that changes the text against one that changes none.

    SEMSIM_DATA_DIR=/tmp/bench-data .venv/bin/python benchmarks/django_save_latency.py [--saves 200]

The text is encoded after commit by the background thread, so the two p50s should be close (target:
within 2x). Both kinds of save alternate on the same rows in one run; the "inline" row shows the old
behaviour (encoding in the saving thread) for comparison. Uses benchmarks/django_bench.py's database.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from django_bench import reset, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=200, help="saves of each kind")
    args = parser.parse_args()
    setup_django()
    from django.test import override_settings

    from django_semsim import sync
    from tests.djangoapp.models import Article

    reset()
    sync.get_model_encoder().encode(["warm up the model"])
    rows = [Article.objects.create(title=f"Article {i}", body="about saving") for i in range(20)]
    sync.wait_idle()
    print("| SYNC | save() unchanged text, p50 | save() changed text, p50 | ratio | background catch-up |")
    print("|---|---|---|---|---|")
    for mode in ("immediate", "inline"):
        unchanged: list[float] = []
        changed: list[float] = []
        with override_settings(SEMSIM={"SYNC": mode, "BATCH_SIZE": 64}):
            for i in range(args.saves):
                row = rows[i % len(rows)]
                start = time.perf_counter()
                row.save()
                unchanged.append(time.perf_counter() - start)
                row.title = f"Article {i} revised"
                start = time.perf_counter()
                row.save()
                changed.append(time.perf_counter() - start)
            start = time.perf_counter()
            sync.wait_idle()
            catch_up = time.perf_counter() - start
        p50u, p50c = statistics.median(unchanged) * 1000, statistics.median(changed) * 1000
        print(f"| {mode} | {p50u:.2f} ms | {p50c:.2f} ms | {p50c / p50u:.2f}x | {catch_up:.1f} s after the last save |")
    sync.stop_background()


if __name__ == "__main__":
    from _entry import run

    run(main)
