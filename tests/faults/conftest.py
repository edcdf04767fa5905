"""The fault suite's fork server, shared by its files for the whole session."""

from __future__ import annotations

import pytest
from harness import ForkServer


@pytest.fixture(scope="session")
def forks(tmp_path_factory):
    server = ForkServer(tmp_path_factory.mktemp("fault-logs"))
    yield server
    server.close()
    (tmp_path_factory.getbasetemp() / "fault-cases.txt").write_text(str(server.cases))
