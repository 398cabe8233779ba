"""Every HTTP API is described at ``/openapi.json``, and Schemathesis, generating requests
from that description (valid and invalid), finds no 5xx and no answer that breaks it.

The gateway runs as ``tinyllm serve --db`` in front of a fake OpenAI-compatible upstream
that answers every valid call; the store's routes also run alone, as ``tinyllm metrics
--db``. Schemathesis runs as its CLI (``st run``) with every check, one worker (its
generator hits a CPython 3.11 ``ast`` race when threads draw at once), a fixed seed in
the fast run and a random one in the soak.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_process import GatewayProcess, ModelUpstream, StoreProcess

Figure = Callable[..., None]
ST = [str(Path(sys.executable).parent / "st")]

GATEWAY_PATHS = {
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
    "/v1/models/{id}", "/api/chat", "/api/generate", "/api/embed", "/api/embeddings",
    "/api/tags", "/api/version", "/api/show", "/api/ps", "/", "/metrics", "/health",
    "/ready", "/dashboard", "/dashboard/data", "/openapi.json",
}
STORE_PATHS = {"/api/metrics", "/api/metrics/export"}
# The store's since/until may not be reversed (a relation between two parameters that
# OpenAPI cannot state), its times have more spellings than a pattern can list exactly
# ("+0.0", " 7d"), and its model ids take any Unicode letter (which a JSON Schema
# pattern, ASCII-only, cannot say): "valid by the schema, refused" and "invalid by the
# schema, accepted" are both expected there, so the two checks that hold the server to
# the schema's exact boundary are off for those two routes (every answer is still
# checked against the schema, and any 5xx still fails).
STORE_ROUTES = "^/api/metrics"
# Methods a server declares handlers for. Python's http.server answered any other (TRACE,
# CONNECT, made-up ones) 501 before our router saw it; tinyllm.http.threaded now hands
# them to the router (405 with Allow), which this suite checks.
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_SECTION = re.compile(r"^_{3,} ([A-Z]+) (\S+) _{3,}$")
_CODE = re.compile(r"^- (ST\d+) ")
_ERRORED = re.compile(r"\b[1-9]\d* errored\b|Errors:")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("openapi")
    db = tmp / "metrics.db"
    with ModelUpstream() as upstream, GatewayProcess(upstream.url, tmp, db=db,
                                                     models=("ok",)) as gateway:
        httpx.post(f"{gateway.url}/v1/chat/completions", json={
            "model": "ok", "messages": [{"role": "user", "content": "hi"}]})
        with StoreProcess(db) as store:
            yield gateway.url, store.url


def test_the_gateway_describes_every_route_it_serves(
    servers: tuple[str, str], figure: Figure,
) -> None:
    gateway, _ = servers
    doc = httpx.get(f"{gateway}/openapi.json").json()
    paths = set(doc["paths"])
    missing = (GATEWAY_PATHS | STORE_PATHS) - paths
    figure("gateway routes described", f"{len(paths)} paths, {len(missing)} missing",
           "every route", not missing)
    assert not missing
    assert doc["openapi"].startswith("3.")
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["model", "messages"]
    assert body["properties"]["model"]["enum"] == ["ok"]  # the models served
    error = chat["responses"]["400"]["content"]["application/json"]["schema"]
    assert error["properties"]["error"]["required"] == ["message", "type", "param", "code"]
    # every path described is answered (not a 404 from the router)
    for path, item in doc["paths"].items():
        if "get" in item and "{" not in path:
            assert httpx.get(f"{gateway}{path}").status_code != 404, path


def test_the_store_server_describes_its_routes(servers: tuple[str, str]) -> None:
    _, store = servers
    doc = httpx.get(f"{store}/openapi.json").json()
    assert STORE_PATHS | {"/metrics", "/health", "/openapi.json"} <= set(doc["paths"])
    export = doc["paths"]["/api/metrics/export"]["get"]
    assert [p["name"] for p in export["parameters"]][:2] == ["format", "prefix"]


def _schemathesis(url: str, tmp: Path, *extra: str) -> tuple[int, int, str]:
    """``st run`` over ``url``'s description: (exit status, cases generated, output)."""
    result = subprocess.run(
        [*ST, "run", f"{url}/openapi.json", "--checks", "all", "--workers", "1",
         "--generation-database", "none", "--no-color", *extra],
        capture_output=True, text=True, timeout=900, cwd=tmp)
    out = result.stdout + result.stderr
    (tmp / "st.out").write_text(out)
    summary = out[out.rfind("SUMMARY"):]
    cases = next((int(line.split()[0]) for line in summary.splitlines()
                  if " generated" in line), 0)
    return result.returncode, cases, out


def _failures(out: str) -> list[tuple[str, str, str]]:
    """(method, path, code) of every failure in ``st run``'s output."""
    found, where = [], ("", "")
    for line in out.splitlines():
        if match := _SECTION.match(line):
            where = (match.group(1), match.group(2))
        elif (match := _CODE.match(line)) and where[0]:
            found.append((*where, match.group(1)))
    return found


def _run_all(url: str, tmp: Path, *extra: str) -> tuple[int, list[tuple[str, str, str]],
                                                         str]:
    """Every route with every check, the store's without positive_data_acceptance."""
    rest = tmp / "rest"
    store = tmp / "store"
    rest.mkdir()
    store.mkdir()
    _, cases1, out1 = _schemathesis(url, rest, "--exclude-path-regex", STORE_ROUTES, *extra)
    _, cases2, out2 = _schemathesis(
        url, store, "--include-path-regex", STORE_ROUTES, "--exclude-checks",
        "positive_data_acceptance,negative_data_rejection", *extra)
    failures = _failures(out1) + _failures(out2)
    # Errors (a request that timed out, a generation error) are failures too.
    failures += [("(error)", "(run)", "error") for o in (out1, out2) if _ERRORED.search(
        o[o.rfind("SUMMARY"):])]
    return cases1 + cases2, failures, out1[-6000:] + out2[-6000:]


def _check(which: str, cases: int, failures: list[tuple[str, str, str]], out: str,
           figure: Figure, label: str = "schemathesis") -> None:
    odd = [f for f in failures if f[0] not in KNOWN_METHODS and f[2] in ("ST101", "ST204")]
    real = [f for f in failures if f not in odd]
    figure(f"{label} vs the {which}: failures", f"{len(real)} in {cases} cases",
           "0 (no 5xx, all conform)", not real)
    if which == "store":
        methods = sorted({f[0] for f in odd})
        figure(f"{label} vs the store: undeclared methods", f"501 to {', '.join(methods)}"
               if odd else "405", "405, never 5xx", not odd)
    assert not odd, odd
    assert cases > 0, out
    assert not real, out


def test_with_keys_schemathesis_finds_no_5xx_and_every_401_is_described(
    tmp_path: Path, figure: Figure,
) -> None:
    key = "sk-reliability-test-key"
    with ModelUpstream() as upstream, GatewayProcess(
            upstream.url, tmp_path, db=tmp_path / "metrics.db", models=("ok",),
            key=key) as gateway:
        doc = httpx.get(f"{gateway.url}/openapi.json").json()
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert "401" in doc["paths"]["/api/metrics"]["get"]["responses"]
        assert "security" not in doc["paths"]["/health"]["get"]
        cases, failures, out = _run_all(
            gateway.url, tmp_path, "--max-examples", "5", "--seed", "20261202",
            "--phases", "examples,coverage,fuzzing", "-H", f"Authorization: Bearer {key}")
    _check("gateway with keys", cases, failures, out, figure)


@pytest.mark.parametrize("which", ["gateway", "store"])
def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_description(
    servers: tuple[str, str], tmp_path: Path, figure: Figure, which: str,
) -> None:
    url = servers[0] if which == "gateway" else servers[1]
    cases, failures, out = _run_all(url, tmp_path, "--max-examples", "15", "--seed",
                                    "20261202", "--phases", "examples,coverage,fuzzing")
    _check(which, cases, failures, out, figure)


@pytest.mark.soak
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("which", ["gateway", "store"])
def test_schemathesis_soak(
    servers: tuple[str, str], tmp_path: Path, figure: Figure, which: str,
) -> None:
    # A random seed, 300 examples per operation and every phase (stateful included),
    # within 4 minutes for each half of the routes.
    url = servers[0] if which == "gateway" else servers[1]
    cases, failures, out = _run_all(url, tmp_path, "--max-examples", "300",
                                    "--max-time", "240")
    _check(which, cases, failures, out, figure, "schemathesis soak")
