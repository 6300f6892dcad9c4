"""The shared queue's rules inside one process on a real PostgreSQL (the multi-process behaviour is in
test_workers.py): an expired lease puts a session back first in line, `max_attempts` lost tries fail it, what a
lost try published goes; and the settings and SQL translation that PostgreSQL needs."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from PIL import Image
from starlette.testclient import TestClient

from server.app import build_app
from server.cli import main as cli_main
from server.config import Settings, SettingsError, load_settings
from server.db_postgres import redacted, translate
from server.events import ImageCreated, ModelsChanged
from server.graph.shared_worker import AFFINITY_WAIT_S, SharedExecutor, affinity_pick
from server.graph.standard import txt2img_graph
from server.images.errors import AttemptLost
from server.tasks import stop_tasks
from tests.conftest import BASE_URL
from tests.images.conftest import png_bytes
from tests.postgres import PostgresCluster

MODEL = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}


@pytest.fixture
def api_only(tmp_path, postgres_cluster: PostgresCluster, tiny_model_files) -> Iterator[TestClient]:
    """A server on a fresh PostgreSQL database that runs no sessions: nothing claims what is queued."""
    settings = Settings(
        root=str(tmp_path / "root"),
        watch=False,
        database=postgres_cluster.fresh_database(),
        run_sessions=False,
        max_attempts=2,
    )
    with TestClient(build_app(settings), base_url=BASE_URL, raise_server_exceptions=False) as client:
        imported = client.post("/api/v1/models/import", json={"location": str(tiny_model_files["diffusers"])})
        assert imported.status_code == 201, imported.text
        yield client


def _as_if_a_worker_took_it(client: TestClient, session_id: str, attempts: int) -> None:
    """What a worker's claim writes, with a lease that has already run out (the worker died)."""
    executor: SharedExecutor = client.app.state.services.executor

    async def claim() -> None:
        async with executor.db.connection() as conn:
            data = await conn.fetchval("SELECT data FROM sessions WHERE id = $1", session_id)
            session = msgspec.json.decode(data)
            session.update(status="running", worker="gone", attempts=attempts, started_at="2000-01-01T00:00:00+00:00")
            await conn.execute(
                "UPDATE sessions SET data = $1, lease_owner = 'gone', lease_expires_at = now() - interval '1 second' "
                "WHERE id = $2",
                msgspec.json.encode(session).decode(),
                session_id,
            )

    client.portal.call(claim)


def test_an_expired_lease_puts_the_session_back_first_in_line_then_fails_it_after_max_attempts(api_only) -> None:
    client = api_only
    executor: SharedExecutor = client.app.state.services.executor
    ids = []
    for seed in (1, 2):
        created = client.post("/api/v1/sessions/", json=txt2img_graph(MODEL, "x", width=64, height=64, seed=seed))
        ids.append(created.json()["id"])
        assert client.put(f"/api/v1/sessions/{ids[-1]}/invoke").status_code == 202
    first, second = ids
    assert client.get("/api/v1/queue").json()["pending"] == [first, second]

    # The lost try had published an image of this session.
    uploaded = client.post("/api/v1/images/upload", files={"file": ("a.png", png_bytes(), "image/png")}).json()
    assert client.patch(f"/api/v1/images/{uploaded['image_name']}", json={"session_id": first}).status_code == 200

    _as_if_a_worker_took_it(client, first, attempts=1)
    assert client.portal.call(executor.reap) == [first]
    back = client.get(f"/api/v1/sessions/{first}").json()
    assert (back["status"], back["attempts"]) == ("queued", 1)
    assert client.get(f"/api/v1/images/{uploaded['image_name']}").status_code == 404
    client.portal.call(executor._refresh_status)
    assert client.get("/api/v1/queue").json()["pending"] == [first, second], "not first in line again"

    _as_if_a_worker_took_it(client, first, attempts=2)
    assert client.portal.call(executor.reap) == [first]
    failed = client.get(f"/api/v1/sessions/{first}").json()
    assert failed["status"] == "failed"
    assert "stopped answering 2 time(s)" in " ".join(failed["errors"].values())


def test_a_running_session_is_not_reaped_while_its_lease_holds(api_only) -> None:
    client = api_only
    executor: SharedExecutor = client.app.state.services.executor
    created = client.post("/api/v1/sessions/", json=txt2img_graph(MODEL, "x", width=64, height=64)).json()
    assert client.put(f"/api/v1/sessions/{created['id']}/invoke").status_code == 202

    async def hold() -> None:
        async with executor.db.connection() as conn:
            await conn.execute(
                "UPDATE sessions SET lease_owner = 'alive', lease_expires_at = now() + interval '1 minute' "
                "WHERE id = $1",
                created["id"],
            )

    client.portal.call(hold)
    assert client.portal.call(executor.reap) == []


def test_the_background_loops_stop_even_when_a_wake_up_races_the_cancellation(api_only) -> None:
    """A NOTIFY wakes the event relay and the queue's upkeep in the very turn of the loop that cancels them (what
    Ctrl-C does while a session streams progress). Waited with 3.11's `asyncio.wait_for`, that cancellation was
    lost, the loops ran on and the server never exited."""
    event_log = api_only.app.state.event_log
    executor: SharedExecutor = api_only.app.state.services.executor

    async def race() -> list[str]:
        woken = {"imagegraph-event-relay", "imagegraph-queue-maintenance"}
        loops = [task for task in [*event_log._tasks, *executor._tasks] if task.get_name() in woken]
        assert len(loops) == 2
        event_log._relay_wake.set()
        executor._status_wake.set()
        await stop_tasks(loops, timeout_s=5.0)
        return [task.get_name() for task in loops if not task.done()]

    assert api_only.portal.call(race) == []


def test_workers_lists_no_one_on_an_api_only_server(api_only) -> None:
    assert api_only.get("/api/v1/workers").json() == {"workers": []}
    assert api_only.get("/api/v1/app/config").json()["database"].startswith("postgresql (postgresql://postgres@")


def test_placeholders_become_numbered_outside_quoted_text() -> None:
    sql = "SELECT count(*) FROM images INDEXED BY images_filters WHERE a = ? AND b LIKE '?%' AND c IN (?, ?)"
    assert translate(sql) == "SELECT count(*) FROM images WHERE a = $1 AND b LIKE '?%' AND c IN ($2, $3)"


def test_a_password_never_shows() -> None:
    assert redacted("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redacted("postgresql://me@db/x") == "postgresql://me@db/x"


def test_a_database_that_is_not_postgresql_is_refused_naming_the_setting(capsys) -> None:
    with pytest.raises(SettingsError, match="`database`"):
        load_settings({"database": "mysql://db/x"}, environ={})
    assert cli_main(["worker", "--database", "sqlite:///x.db", "--root", "/tmp/nowhere"]) == 2
    assert "`database`" in capsys.readouterr().err


def test_a_worker_refuses_a_model_file_that_differs_from_the_recorded_one(tmp_path, postgres_cluster, tiny_model_files):
    copy = tmp_path / "mine" / "tiny"
    shutil.copytree(tiny_model_files["diffusers"], copy)
    settings = Settings(root=str(tmp_path / "root"), watch=False, database=postgres_cluster.fresh_database())
    with TestClient(build_app(settings), base_url=BASE_URL, raise_server_exceptions=False) as client:
        assert client.post("/api/v1/models/import", json={"location": str(copy)}).status_code == 201
        executor: SharedExecutor = client.app.state.services.executor
        created = client.post("/api/v1/sessions/", json=txt2img_graph(MODEL, "x", width=64, height=64)).json()
        stored = client.portal.call(executor.store.get, created["id"])
        assert client.portal.call(executor.identities.problem, stored) is None  # the first use records it

        weights = next(copy.joinpath("unet").glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes() + b"\0")  # another copy behind this machine's mount
        node, why = client.portal.call(executor.identities.problem, stored)
        assert node == "model" and "sd-1/main/tiny" in why and str(copy) in why

        # A server's sync saw the model change: its new file is recorded at the next use.
        client.portal.call(executor.on_event, ModelsChanged(added=[], removed=[], updated=["sd-1/main/tiny"]))
        deadline = time.monotonic() + 10
        while client.portal.call(executor.identities.problem, stored) is not None:
            assert time.monotonic() < deadline, "the recorded identity was not forgotten"
            time.sleep(0.05)


def test_a_worker_takes_a_session_for_the_model_it_has_loaded_but_never_keeps_the_oldest_waiting_long() -> None:
    now = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)

    def queued(seconds_ago: float) -> str:
        return (now - timedelta(seconds=seconds_ago)).isoformat()

    queue = [(queued(5), "sd-1/main/a"), (queued(4), "sd-1/main/b"), (queued(3), "sd-1/main/c")]
    assert affinity_pick(queue, {"sd-1/main/c"}, now) == 2, "the loaded model's session first"
    assert affinity_pick(queue, {"sd-1/main/x"}, now) == 0, "nothing loaded matches: first in line"
    assert affinity_pick(queue, {"sd-1/main/a", "sd-1/main/c"}, now) == 0, "the oldest's model is loaded too"
    waited = [(queued(AFFINITY_WAIT_S), "sd-1/main/a"), *queue[1:]]
    assert affinity_pick(waited, {"sd-1/main/c"}, now) == 0, "the oldest waited long enough: its turn"


def test_a_worker_whose_lease_ran_out_publishes_no_image_of_that_session(
    tmp_path, postgres_cluster, tiny_model_files
) -> None:
    """A worker cut off from the database (alive, its heartbeat failing) may still finish a step and save an
    image: once its lease has run out, that image gets no record, no file and no `image_created`."""
    settings = Settings(root=str(tmp_path / "root"), watch=False, database=postgres_cluster.fresh_database())
    with TestClient(build_app(settings), base_url=BASE_URL, raise_server_exceptions=False) as client:
        executor: SharedExecutor = client.app.state.services.executor
        images = client.app.state.services.images
        assert client.post("/api/v1/models/import", json={"location": str(tiny_model_files["diffusers"])}).is_success
        session_id = client.post("/api/v1/sessions/", json=txt2img_graph(MODEL, "x", width=64, height=64)).json()["id"]
        seen: list = []
        client.app.state.services.events.add_listener(seen.append)

        def lease(seconds: int) -> None:
            async def set_lease() -> None:
                async with executor.db.connection() as conn:
                    await conn.execute(
                        "UPDATE sessions SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2) "
                        "WHERE id = $3",
                        executor.name,
                        seconds,
                        session_id,
                    )

            client.portal.call(set_lease)

        def save():
            # What a run's node does: the guard comes with the services the worker gives the run.
            guard = client.portal.call(executor._run_services).publish_guard
            return client.portal.call(lambda: images.save(Image.new("RGB", (8, 8)), session_id=session_id, guard=guard))

        lease(60)
        kept = save()
        lease(-1)
        with pytest.raises(AttemptLost, match=session_id):
            save()
        lease(60)
        later = save()  # the try holds the lease again: its images are published
        deadline = time.monotonic() + 10
        while len([e for e in seen if isinstance(e, ImageCreated)]) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # an event for the refused image would have come by now
        announced = [e.image.image_name for e in seen if isinstance(e, ImageCreated)]
        assert announced == [kept.image_name, later.image_name]
        assert client.get("/api/v1/images/", params={"limit": 10}).json()["total"] == 2
        on_disk = sorted(p.name for p in settings.images_dir.glob("*.png"))
        assert on_disk == sorted(announced), "the refused image's file was left behind"
