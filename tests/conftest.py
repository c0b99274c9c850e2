import pytest

from tests.stack import DECOY_SECRETS, Stack, make_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    """One real process tree for the whole session: supervisord, the router, vLLM (CPU) and llama-server,
    both engines loaded with the tiny models. Started once; torn down at the end."""
    stack = make_stack(tmp_path_factory.mktemp("ullm"))
    stack.start(env=DECOY_SECRETS)  # the engines must not receive them (tests/e2e/test_browser_safety.py)
    try:
        stack.wait_loaded("llamacpp", timeout=120)
        stack.wait_loaded("vllm", timeout=300)
        yield stack
    finally:
        stack.stop()
    illegal = [line for line in stack.router_log().splitlines() if "illegal transition" in line]
    assert not illegal, f"the router made transitions its state table does not allow: {illegal}"


@pytest.fixture
def restore_llamacpp(stack):
    """For tests that break or swap llama.cpp's model: put the default tiny model back afterwards."""
    yield
    status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-a-gguf"})
    assert status == 200, body
