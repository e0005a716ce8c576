"""Sparse copies of data directories: same bytes, holes kept as holes."""

from __future__ import annotations

import os
from pathlib import Path

from pytest_services._db.sparse import BLOCK, copy_tree, sparsify_tree


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_zero_blocks_become_holes_and_copies_keep_them(tmp_path: Path) -> None:
    source = tmp_path / "data"
    (source / "db").mkdir(parents=True)
    big = source / "ibdata1"
    content = b"\1" * 100 + bytes(40 * BLOCK) + b"tail" + bytes(3 * BLOCK) + b"end"
    big.write_bytes(content)
    small = source / "db" / "t.frm"
    small.write_bytes(b"\0\0small\0")
    before = _allocated(big)
    assert sparsify_tree(str(source)) == str(source)
    assert big.read_bytes() == content and small.read_bytes() == b"\0\0small\0"
    assert _allocated(big) < before / 4  # tmp file systems have holes
    target = tmp_path / "copy"
    copy_tree(str(source), str(target))
    assert (target / "ibdata1").read_bytes() == content
    assert (target / "db" / "t.frm").read_bytes() == b"\0\0small\0"
    assert _allocated(target / "ibdata1") < before / 4
    copy_tree(str(source), str(target))  # into an existing copy, as a retry does
    assert (target / "ibdata1").read_bytes() == content
