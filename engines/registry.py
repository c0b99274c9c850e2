"""The engines the project knows, by the one spelling used everywhere (YAML, supervisord, labels, URLs)."""

from engines import llamacpp, vllm
from engines.spec import ENGINE_NAMES

ADAPTERS = {"vllm": vllm, "llamacpp": llamacpp}
assert tuple(ADAPTERS) == ENGINE_NAMES
