"""Load, short form: 50 concurrent clients for about ten seconds against one real server process (uploads, lists,
DTO / metadata / thumbnail / full reads, deletes and tiny-model sessions, with a WebSocket client subscribed
to everything). No errors, nothing lost, every announced image accounted for, memory back within 10% of what
it was after the warm-up. The long form, with its figures, is bench/soak.py; the workload and the checks are
in tests/reliability/load.py."""

from __future__ import annotations

import asyncio

from tests.reliability.load import MIX, SERVER_ENV, run_load
from tests.reliability.process import ServerProcess


def test_fifty_clients_mixing_every_kind_of_request(tmp_path, tiny_model_files):
    with ServerProcess(tmp_path / "root", tmp_path / "server.log", env=SERVER_ENV) as server:
        report = asyncio.run(run_load(server, tiny_model_files["diffusers"], clients=50, seconds=10, warmup=4))
    print(report.summary())  # shown with `pytest -s`
    assert report.problems() == []
    # The mix really ran: every kind of request, images made both ways, some of them deleted again.
    assert set(MIX) <= set(report.stats.counts)
    assert report.session_status["completed"] >= 1
    assert report.shared.deleted and report.rows - report.shared.uploaded
