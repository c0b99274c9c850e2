"""Engine metrics re-exported through the router gain engine/model labels without losing their own, and each
scrape path reads one process: an engine's name its instance 0, an instance's name that instance."""

import asyncio

from aiohttp.test_utils import make_mocked_request

from router import state
from router.config import parse_config
from router.engine_group import find_instance
from router.handlers.metrics import add_labels, engine_metrics
from tests.unit.fakes import make_group, no_illegal_transitions, spec  # noqa: F401 (an autouse fixture)


def test_labels_are_added_to_plain_and_labelled_samples():
    text = (b"# HELP llamacpp:tokens_predicted_total Generated tokens\n"
            b"# TYPE llamacpp:tokens_predicted_total counter\n"
            b"llamacpp:tokens_predicted_total 3\n"
            b'vllm:num_requests_running{engine="x",model_name="m"} 1.0\n'
            b'vllm:ttft_bucket{le="0.1",model_name="a \\"q\\""} 2.0 1700000000\n')
    out = add_labels(text, {"engine": "vllm", "model": "tiny"}).splitlines()
    assert out[0].startswith(b"# HELP") and out[1].startswith(b"# TYPE")
    assert out[2] == b'llamacpp:tokens_predicted_total{engine="vllm",model="tiny"} 3'
    # vLLM's own `engine` (an index) is kept as exported_engine; ours names the engine
    assert out[3] == b'vllm:num_requests_running{exported_engine="x",model_name="m",engine="vllm",model="tiny"} 1.0'
    assert out[4] == b'vllm:ttft_bucket{le="0.1",model_name="a \\"q\\"",engine="vllm",model="tiny"} 2.0 1700000000'


def test_an_engines_name_scrapes_its_instance_0_even_when_another_instance_was_used_last(tmp_path):
    config = parse_config("engines: {llamacpp: {port: 18002, max_instances: 2}}\n")
    group, _, _ = make_group(tmp_path, config)
    asyncio.run(group.instances[1].load(spec("b")))
    engines = {"llamacpp": group}
    assert group.primary is group.instances[1]  # what /v1/status shows at the engine's top level
    assert find_instance(engines, "llamacpp") is group.instances[0]
    assert find_instance(engines, "llamacpp-1") is group.instances[1]
    assert find_instance(engines, "llamacpp-9") is None

    request = make_mocked_request("GET", "/metrics/engines/llamacpp", match_info={"engine": "llamacpp"})
    request.app[state.ENGINES] = engines
    response = asyncio.run(engine_metrics(request))
    assert response.body == b"# engine llamacpp is idle\n"  # not instance 1's series a second time
