"""The dispatch both transports share: lookup, methods, bad queries, bugs, gzip."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator, Mapping

import pytest

from tinyllm.http import Headers, Response, Router


def ok(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
    return Response.json({"query": query, "accept": headers.get("accept")})


def dispatch(router: Router, method: str = "GET", path: str = "/ok", query: str = "",
             headers: Mapping[str, str] | None = None) -> Response:
    return router.dispatch(method, path, query, Headers(headers or {}))


def test_a_route_gets_the_parsed_query_and_headers_in_any_case() -> None:
    r = dispatch(Router({"/ok": ok}), query="a=1&a=2&b=", headers={"ACCEPT": "x/y"})
    assert r.status == 200
    assert json.loads(r.body) == {"query": {"a": ["1", "2"], "b": [""]}, "accept": "x/y"}


def test_trailing_slash_and_several_candidate_paths() -> None:
    router = Router({"/ok": ok, "/api/metrics": ok})
    assert dispatch(router, path="/ok/").status == 200
    assert router.dispatch("GET", ("/metrics", "/api/metrics"), "", Headers({})).status == 200


def test_unknown_path_is_404_naming_the_paths_there_are() -> None:
    r = dispatch(Router({"/ok": ok, "/health": ok}), path="/nope/" + "x" * 500)
    assert r.status == 404
    error = json.loads(r.body)["error"]
    assert error.endswith("try /health, /ok") and len(error) < 300


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_other_methods_are_405_with_allow(method: str) -> None:
    r = dispatch(Router({"/ok": ok}), method=method)
    assert r.status == 405 and r.headers["Allow"] == "GET, HEAD"
    assert "use GET or HEAD" in json.loads(r.body)["error"]


def test_a_malformed_query_and_a_routes_value_error_are_400() -> None:
    def picky(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        raise ValueError("n must be a number; got 'x'")

    router = Router({"/ok": ok, "/picky": picky})
    too_many = "&".join(f"k{i}=1" for i in range(101))
    r = dispatch(router, query=too_many)
    assert r.status == 400 and "Max number of fields" in json.loads(r.body)["error"]
    r = dispatch(router, path="/picky")
    assert r.status == 400 and json.loads(r.body) == {"error": "n must be a number; got 'x'"}
    assert router.errors == 0


def test_a_bug_in_a_route_is_500_counted_and_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        raise KeyError("oops")

    router = Router({"/broken": broken})
    r = dispatch(router, path="/broken")
    assert r.status == 500 and json.loads(r.body) == {"error": "internal error"}
    assert router.errors == 1
    assert "route /broken raised" in caplog.text and "KeyError: 'oops'" in caplog.text


def big(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
    return Response(200, b"x" * 4096, "text/plain")


@pytest.mark.parametrize(("accept", "gzipped"), [
    ("gzip", True), ("deflate, gzip;q=0.5", True), ("GZIP", True), ("gzip;q=0", False),
    ("identity", False), ("", False),
])
def test_gzip_when_the_client_accepts_it(accept: str, gzipped: bool) -> None:
    r = dispatch(Router({"/big": big}), path="/big", headers={"Accept-Encoding": accept})
    assert ("Content-Encoding" in r.headers) is gzipped
    assert (gzip.decompress(r.body) if gzipped else r.body) == b"x" * 4096


def test_small_answers_are_not_gzipped() -> None:
    r = dispatch(Router({"/ok": ok}), headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in r.headers and json.loads(r.body)


def test_a_stream_is_gzipped_a_piece_at_a_time_and_closed() -> None:
    closed = []

    def pieces() -> Iterator[bytes]:
        try:
            yield b"second "
            yield b"third"
        finally:
            closed.append(True)

    def streamed(query: dict[str, list[str]], headers: Mapping[str, str]) -> Response:
        return Response(200, b"first ", "text/plain", rest=pieces())

    r = dispatch(Router({"/s": streamed}), path="/s", headers={"Accept-Encoding": "gzip"})
    assert r.headers["Content-Encoding"] == "gzip" and r.rest is not None
    decoder = zlib.decompressobj(31)
    assert decoder.decompress(r.body) == b"first "  # the first piece stands alone
    rest = list(r.rest)
    assert decoder.decompress(b"".join(rest)) == b"second third" and closed == [True]
