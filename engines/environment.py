"""What an engine process gets from the environment, and what of its command line may be printed.

Engines need none of the secrets of the environment that started supervisord: the router's keys
(`ULLM_API_KEY`, `ULLM_ADMIN_KEY`), `HF_TOKEN`, or any other variable named like a secret are left out. They run
offline and without telemetry: vLLM reports usage statistics unless told not to, and the Hugging Face libraries
would fetch a missing model or tokenizer; models come from disk only (`scripts/download_model.py` is the one
step that goes online). A variable set in models.yaml (`engines.<engine>.env`) is the user's choice and wins.
Standard library only: the launcher runs this at every engine start.
"""

from __future__ import annotations

import re
from typing import Mapping

# Name parts that mark a secret: ULLM_API_KEY, HF_TOKEN, HUGGING_FACE_HUB_TOKEN, AWS_SECRET_ACCESS_KEY,
# --api-key, --hf-token (but not TOKENIZERS_PARALLELISM or --tokenizer-mode: whole parts only).
SECRET_PARTS = frozenset({"key", "keys", "token", "secret", "password", "passwd", "credential", "credentials",
                          "auth", "apikey"})
QUIET = {
    "VLLM_NO_USAGE_STATS": "1",  # vLLM's usage reports
    "DO_NOT_TRACK": "1",  # the cross-tool convention (vLLM honours it too)
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: never download; a model not on disk fails to load
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
REDACTED = "***"


def is_secret_name(name: str) -> bool:
    return any(part in SECRET_PARTS for part in re.split(r"[-_.]+", name.lower()) if part)


def engine_environment(inherited: Mapping[str, str], configured: Mapping[str, str]) -> dict[str, str]:
    """The inherited environment without secrets, the QUIET switches, then the configured variables."""
    return {**{k: v for k, v in inherited.items() if not is_secret_name(k)}, **QUIET, **configured}


def redacted_argv(argv: list[str]) -> list[str]:
    """argv fit for a log: the value of a secret-named flag (`--api-key X`, `--api-key=X`) replaced."""
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        secret = flag.startswith("-") and is_secret_name(flag.lstrip("-"))
        if secret and eq:
            out.append(f"{flag}={REDACTED}")
        else:
            out.append(arg)
            hide_next = secret and not eq
    return out
