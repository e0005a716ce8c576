"""Each pytest-xdist worker has a database of its own.

Run with ``-n 2 --dist each`` and ``SHOP_SYNC_DIR`` set to an empty folder: both workers
commit a row, wait for each other, and then each must see its own row only. Without
``SHOP_SYNC_DIR`` the test only checks its own committed row.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from catalog.models import Category

WORKERS = 2
TIMEOUT = 60.0


def wait_for_markers(sync_dir: Path, worker_id: str, suffix: str) -> None:
    """Write this worker's marker and wait until every worker has written its own.

    The markers are ``<worker_id>`` (row committed) and ``<worker_id>.checked`` (looked).
    """
    (sync_dir / f"{worker_id}{suffix}").write_text(str(os.getpid()))
    deadline = time.monotonic() + TIMEOUT
    while True:
        markers = sorted(
            p.name for p in sync_dir.iterdir() if p.suffix == suffix and p.stem.count(".") == 0
        )
        if len(markers) >= WORKERS:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"only {markers} of {WORKERS} workers reached the barrier in {sync_dir}")
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_rows_of_other_workers_are_invisible(worker_id):
    mine = f"isolation-{worker_id}"
    Category.objects.create(name=mine)  # committed: this test runs without a transaction
    sync_dir = os.environ.get("SHOP_SYNC_DIR")
    if sync_dir:
        # Both workers have committed their row once both markers exist.
        wait_for_markers(Path(sync_dir), worker_id, "")
    try:
        seen = set(
            Category.objects.filter(name__startswith="isolation-").values_list("name", flat=True)
        )
        assert seen == {mine}
    finally:
        if sync_dir:
            # Keep our row until the other worker has looked, too.
            wait_for_markers(Path(sync_dir), worker_id, ".checked")
