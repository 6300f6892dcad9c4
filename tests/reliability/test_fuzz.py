"""Schema fuzzing: Schemathesis generates requests for every route of our own /openapi.json (valid ones,
boundary values, invalid ones, and chains that follow one response into the next request) against a real
server holding the tiny models, a board, uploaded images and a generated one. Every answer must be one the
document declares, in the declared content type and schema, and none may be a 500.

This is the short form for CI (a fixed seed, a few examples per route); bench/fuzz_soak.py runs it for as
long as you like with fresh seeds. Requests it once failed are kept as plain tests in test_fuzz_findings.py."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import start_live_server
from tests.reliability.fuzz_target import (
    GENERATING,
    SHARED_GRAPH_ROUTES_SKIP_COVERAGE,
    fuzz_document,
    fuzz_settings,
    place_models,
    run_fuzzer,
    seed_server,
)

# For the fuzzing and stateful phases; the coverage phase, most of the cases and of the finds so far, walks
# every boundary whatever this says. With a fixed seed these are the same examples every run: fresh ones are
# bench/fuzz_soak.py's job.
MAX_EXAMPLES = 20
SEED = 20261127


@pytest.mark.timeout(600)
def test_every_route_answers_as_its_openapi_document_says(tmp_path: Path, tiny_model_files, database_url) -> None:
    settings = fuzz_settings(tmp_path / "root", database_url)
    settings.create_layout()
    place_models(settings, tiny_model_files)
    live = start_live_server(settings)
    try:
        seeded = seed_server(live.url)
        document = httpx.get(f"{live.url}/openapi.json").json()
        fuzzed = fuzz_document(document, settings.root_path, seeded)
        report = run_fuzzer(
            live.url,
            fuzzed,
            tmp_path / "fuzz",
            max_examples=MAX_EXAMPLES,
            seed=SEED,
            extra_args=("--exclude-path-regex", GENERATING),
            config=SHARED_GRAPH_ROUTES_SKIP_COVERAGE,
        )
        print(f"\nschemathesis: {report.generated} requests, {len(report.failures)} failures (seed {report.seed})")
        assert report.ok, report.output[-30_000:]
        # It really ran every phase, on every route it was given, and more than one fuzzing round per route.
        assert report.phases == dict.fromkeys(("examples", "coverage", "fuzzing", "stateful"), "success")
        assert report.operations["tested"] == report.operations["selected"] > 0, report.operations
        fuzzed_paths = [path for path in document["paths"] if not re.match(GENERATING, path)]
        assert report.generated > MAX_EXAMPLES * len(fuzzed_paths)
        # The walk of a graph's schema that the workflow routes leave to POST /sessions/ happened there.
        graph_walk = report.valid_rates.get("POST /api/v1/sessions/", {}).get("coverage", {})
        assert sum(graph_walk.values()) > 1000, graph_walk
        refused = run_fuzzer(
            live.url,
            fuzzed,
            tmp_path / "fuzz" / "a1111",
            max_examples=MAX_EXAMPLES // 2,
            seed=SEED,
            extra_args=("--include-path-regex", GENERATING, "--mode", "negative", "--phases", "coverage,fuzzing"),
        )
        print(f"schemathesis, A1111 generation routes: {refused.generated} invalid requests")
        assert refused.ok, refused.output[-30_000:]
        assert refused.generated > 10 * 4
        # Still healthy, and still serving what it served before.
        assert httpx.get(f"{live.url}/health").json() == {"status": "ok"}
        assert httpx.get(f"{live.url}/api/v1/images/").status_code == 200
    finally:
        live.stop()
    # Nothing the fuzzer could name took the server outside its root: every model it registered lies inside.
    registry = yaml.safe_load(settings.models_yaml.read_text())
    paths = [entry["path"] for key, entry in registry.items() if key != "__metadata__"]
    assert paths and all(not Path(path).is_absolute() for path in paths), paths
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fuzz", "root"]
