from __future__ import annotations

import pytest

pytest_plugins = "pytester"


@pytest.fixture(autouse=True)
def _inner_sessions_use_private_tmpdir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inner pytest sessions put their folders (and logs kept after failures) in our tmp."""
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("tmpdir")))
