"""scripts/soak.py's judgement: which errors a lifecycle operation explains, and where it may point."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.stack import PROJECT

spec = importlib.util.spec_from_file_location("soak", PROJECT / "scripts" / "soak.py")
soak = sys.modules["soak"] = importlib.util.module_from_spec(spec)  # (dataclasses look their module up)
spec.loader.exec_module(soak)


def make_soak() -> "soak.Soak":
    run = soak.Soak(url="http://127.0.0.1:1", streams=1, seconds=1, max_requests=1, max_tokens=1,
                    engines=["vllm", "llamacpp"], lifecycle_engine="llamacpp", restart_command=None, sample_seconds=1)
    run.disturbances.append(soak.Disturbance("llamacpp", "restart", started=10, ended=20))
    return run


@pytest.mark.parametrize("outcome, explained", [
    (soak.Outcome("llamacpp", "http_503:upstream_error", 12, 12.1), True),  # during the restart
    (soak.Outcome("llamacpp", "stream_error:upstream_error", 5, 11), True),  # a stream cut by it
    (soak.Outcome("llamacpp", "http_503:unavailable_error", 12, 12.1), True),  # the new process still loading
    (soak.Outcome("llamacpp", "http_503:unavailable_error", 21, 21.5), False),  # but not once it is back
    (soak.Outcome("vllm", "http_503:upstream_error", 12, 12.1), False),  # the other engine was not disturbed
    (soak.Outcome("llamacpp", "http_503:upstream_error", 21, 21.5), False),  # after the engine was back
    (soak.Outcome("llamacpp", "stream_truncated", 12, 13), False),  # a stream must end with [DONE] or an error
    (soak.Outcome("llamacpp", "http_500:server_error", 12, 13), False),  # never the router's own failure
    (soak.Outcome("llamacpp", "client_timeout", 12, 13), False),
])
def test_only_documented_errors_during_a_disturbance_are_explained(outcome, explained):
    assert make_soak().explained(outcome) is explained


@pytest.mark.parametrize("url", ["http://10.0.0.5:8080", "http://example.com", "http://0.0.0.0:8080"])
def test_it_refuses_anything_but_loopback(url):
    with pytest.raises(SystemExit):
        soak.loopback_only(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/", "http://localhost:1", "http://[::1]:8080"])
def test_loopback_is_accepted(url):
    assert soak.loopback_only(url) == url.rstrip("/")


def test_error_bodies_are_read_by_type():
    assert soak.error_type(b'{"error": {"type": "engine_unavailable"}}') == "engine_unavailable"
    assert soak.error_type(b"<html>oops</html>") == "not_openai_shaped"
