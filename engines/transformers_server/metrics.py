"""The engine's own Prometheus metrics, `transformers:`-prefixed like vLLM's `vllm:`, labelled with the served
model's name. One registry per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # no *_created series: vLLM's and llama.cpp's have none either

SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class EngineMetrics:
    def __init__(self, model_name: str, kind: str):
        self.registry = CollectorRegistry()
        labels = {"model_name": model_name}
        r = self.registry
        self.info = Gauge("transformers:model_info", "The served model, its kind and how its streams arrive.",
                          ["model_name", "kind", "streaming"], registry=r)
        self.requests = Counter("transformers:requests", "Generation requests by outcome (ok, cancelled, error, "
                                "queue_full, loading, bad_request).", ["model_name", "status"], registry=r)
        self.prompt_tokens = Counter("transformers:prompt_tokens", "Prompt tokens of finished generations.",
                                     ["model_name"], registry=r).labels(**labels)
        self.generation_tokens = Counter("transformers:generation_tokens", "Tokens generated.", ["model_name"],
                                         registry=r).labels(**labels)
        self.diffusion_steps = Counter("transformers:diffusion_steps", "Denoising steps run (diffusion models).",
                                       ["model_name"], registry=r).labels(**labels)
        self.generation_seconds = Histogram("transformers:generation_seconds", "Seconds of one generation, in the "
                                            "worker thread.", ["model_name"], buckets=SECONDS_BUCKETS,
                                            registry=r).labels(**labels)
        self.queue_seconds = Histogram("transformers:queue_seconds", "Seconds a request waited for the generation "
                                       "slot.", ["model_name"], buckets=SECONDS_BUCKETS, registry=r).labels(**labels)
        self.waiting = Gauge("transformers:requests_waiting", "Requests queued for the generation slot.",
                             ["model_name"], registry=r).labels(**labels)
        self.running = Gauge("transformers:requests_running", "Generations in progress (0 or 1).", ["model_name"],
                             registry=r).labels(**labels)
        self._labels, self._kind = labels, kind

    def loaded(self, streaming: str) -> None:
        self.info.labels(model_name=self._labels["model_name"], kind=self._kind, streaming=streaming).set(1)

    def outcome(self, status: str) -> None:
        self.requests.labels(model_name=self._labels["model_name"], status=status).inc()
