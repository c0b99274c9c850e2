"""Engine metrics re-exported through the router gain engine/model labels without losing their own."""

from router.handlers.metrics import add_labels


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
