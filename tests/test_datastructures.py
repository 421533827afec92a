"""tether.datastructures: the request's headers and query parameters."""

from __future__ import annotations

from tether.datastructures import Headers, QueryParams


def test_headers_length_iteration_and_keys_agree_on_distinct_names():
    """`len()` counted every header line while iteration gave each name once."""
    headers = Headers([("X-A", "1"), ("x-a", "2"), ("Host", "h")])
    assert len(headers) == len(list(headers)) == len(headers.keys()) == 2
    assert dict(headers) == {"x-a": "1", "host": "h"}  # as dict() reads a mapping
    assert len(headers.items()) == 3 and headers.getlist("X-a") == ["1", "2"]


def test_query_params_length_iteration_and_keys_agree_on_distinct_names():
    params = QueryParams("a=1&b=2&a=3")
    assert len(params) == len(list(params)) == len(params.keys()) == 2
    assert dict(params) == {"a": "3", "b": "2"} and params.getlist("a") == ["1", "3"]
