"""A session's database server starts from a prepared state: the fixtures' side of it.

:func:`prepare_for_session` runs the shared pipeline (:mod:`pytest_services._db.prepare`)
with the session's folders, and keeps the logs of a build that failed, whose error names
one of them.
"""

from __future__ import annotations

from logging import Logger

import pytest

from pytest_services import folders
from pytest_services._db import spare
from pytest_services._db.prepare import prepare_state_data_dir
from pytest_services._db.protocol import Engine
from pytest_services._db.state import DatabaseInit, State
from pytest_services.service import get_run_id

__all__ = ["prepare_for_session"]


def prepare_for_session(
    request: pytest.FixtureRequest,
    engine: Engine,
    init: DatabaseInit,
    database: str,
    data_dir: str,
    log: Logger,
) -> State:
    """Fill ``data_dir`` with a copy of the state ``init`` makes in ``database``."""
    logs = folders.log_dir(request.getfixturevalue("base_dir"))
    request.addfinalizer(spare.finish)  # before the session's folders go
    try:
        return prepare_state_data_dir(
            engine,
            init,
            database,
            data_dir,
            request.getfixturevalue("run_dir"),
            logs,
            log,
            get_run_id(request.config),
            spares=True,
        )
    except BaseException:
        folders.keep_logs(logs)
        raise
