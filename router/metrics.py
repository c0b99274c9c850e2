"""The router's own Prometheus metrics, measured the same way for both engines so they share one panel.

Names carry the `unified_` prefix and a unit; labels are bounded (engine names, catalog/served model names,
endpoint names, status codes), never raw user input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from router.engine_state import State

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
RATE_BUCKETS = (1, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000, 10000)
LOAD_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200)
SAMPLE_SECONDS = 5.0


@dataclass
class RequestRecord:
    """What one proxied request did, filled in as it goes and observed once at the end."""
    engine: str = "none"
    model: str = "none"
    status: int = 0
    first_byte_after: float | None = None  # seconds from arrival to the engine's first response byte
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    resends: int = 0  # times the request was sent again because the engine had closed the pooled connection
    peer: str | None = None  # the peer router that answered it (router/peers.py), instead of an engine here
    failure: str | None = None  # the code of a failure on the way: no connection, dropped, silent, peer down
    delivered: bool = False  # the client was sent the stream's final `data: [DONE]`

    def client_left(self) -> None:
        """The client hung up: 499 (nginx's "client closed request"), unless it had the whole answer already (the
        openai SDK closes the connection as soon as it reads [DONE], before the stream's end)."""
        if not self.delivered:
            self.status = 499


@dataclass
class ProcessSample:
    rss_bytes: float = 0
    # the anonymous part of rss: what the tree takes from MemAvailable and gives back when it stops (its mapped
    # files, shared libraries and mmapped GGUFs, are page cache, which MemAvailable counts as available anyway)
    anon_bytes: float = 0
    cpu_seconds: float = 0
    threads: float = 0


class EngineProcessCollector:
    """Exposes the latest psutil sample of each engine's process tree (sampled off the event loop)."""

    def __init__(self) -> None:
        self.samples: dict[str, ProcessSample] = {}

    def collect(self) -> Iterable:
        rss = GaugeMetricFamily("unified_engine_memory_rss_bytes", "Resident memory of the engine's process tree",
                                labels=["engine"])
        cpu = CounterMetricFamily("unified_engine_cpu_seconds", "CPU seconds used by the engine's process tree "
                                  "(resets when the engine restarts)", labels=["engine"])
        threads = GaugeMetricFamily("unified_engine_threads", "Threads in the engine's process tree", labels=["engine"])
        for engine, sample in self.samples.items():
            rss.add_metric([engine], sample.rss_bytes)
            cpu.add_metric([engine], sample.cpu_seconds)
            threads.add_metric([engine], sample.threads)
        return [rss, cpu, threads]


class RouterProcessCollector:
    """The router's own resident memory, open file descriptors and asyncio tasks, read at each scrape: what a
    leak would grow (scripts/soak.py watches them)."""

    def __init__(self) -> None:
        self.process = psutil.Process()

    def collect(self) -> Iterable:
        with self.process.oneshot():
            rss, fds = self.process.memory_info().rss, self.process.num_fds()
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped outside the event loop (a test's direct call)
            tasks = 0
        yield GaugeMetricFamily("unified_router_memory_rss_bytes", "Resident memory of the router process", rss)
        yield GaugeMetricFamily("unified_router_open_fds", "Open file descriptors of the router process", fds)
        yield GaugeMetricFamily("unified_router_asyncio_tasks", "asyncio tasks alive in the router", tasks)


def sample_tree(pid: int) -> ProcessSample:
    sample = ProcessSample()
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return sample
    for proc in procs:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                rss = proc.memory_info().rss
                sample.rss_bytes += rss
                sample.anon_bytes += anon_bytes(proc.pid, rss)
                sample.cpu_seconds += times.user + times.system
                sample.threads += proc.num_threads()
        except psutil.Error:
            continue
    return sample


def anon_bytes(pid: int, rss: int) -> int:
    """The process's RssAnon (Linux, /proc/<pid>/status); its whole rss where the kernel does not say."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss


@dataclass
class RouterMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("unified_requests", "Requests answered, by engine, model, endpoint and HTTP status",
                                ["engine", "model", "endpoint", "status"], registry=r)
        self.duration = Histogram("unified_request_duration_seconds", "Time from arrival to the last byte sent",
                                  ["engine", "model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("unified_time_to_first_token_seconds",
                              "Time from arrival to the engine's first response byte (first token when streaming)",
                              ["engine", "model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("unified_prompt_tokens", "Prompt tokens, from the engines' usage",
                                     ["engine", "model"], registry=r)
        self.generated_tokens = Counter("unified_generated_tokens", "Generated tokens, from the engines' usage",
                                        ["engine", "model"], registry=r)
        self.tokens_per_second = Histogram("unified_generation_tokens_per_second",
                                           "Generated tokens per second of generation time, per request",
                                           ["engine", "model"], buckets=RATE_BUCKETS, registry=r)
        self.load_duration = Histogram("unified_model_load_duration_seconds", "Model load (engine start) time",
                                       ["engine", "model", "outcome"], buckets=LOAD_BUCKETS, registry=r)
        self.supervisor_events = Counter("unified_supervisor_events", "Process-state events supervisord reported "
                                         "for an engine (router/supervisor_events.py)", ["engine", "event"],
                                         registry=r)
        self.restarts = Counter("unified_engine_restarts", "Engine processes replaced outside a load "
                                "(crash restarts, supervisorctl restart)", ["engine"], registry=r)
        self.resends = Counter("unified_upstream_resends", "Requests sent to the engine again because their "
                               "connection failed before any of them was written", ["engine"], registry=r)
        self.in_flight = Gauge("unified_requests_in_flight", "Requests being answered by the engine",
                               ["engine"], registry=r)
        self.queued = Gauge("unified_requests_queued", "Requests waiting for the engine to finish loading",
                            ["engine"], registry=r)
        self.state = Gauge("unified_engine_state", "1 for the engine's current lifecycle state, else 0",
                           ["engine", "state"], registry=r)
        self.transitions = Counter("unified_engine_transitions", "Lifecycle state changes, by source and target "
                                   "state", ["engine", "source", "target"], registry=r)
        self.swaps = Counter("unified_model_swaps", "Loads started, by the model swapped in (API, on-demand, "
                             "start-up)", ["engine", "model"], registry=r)
        self.swap_wait = Histogram("unified_swap_wait_seconds", "Time requests waited for their model to be "
                                   "loaded (answered, refused or timed out)", ["engine"], buckets=LOAD_BUCKETS,
                                   registry=r)
        self.waiting_by_model = Gauge("unified_requests_waiting", "Requests waiting for a load, by the model "
                                      "they wait for", ["engine", "model"], registry=r)
        self._waited_for: set[tuple[str, str]] = set()  # (engine, model) label pairs of waiting_by_model
        self.on_demand_failures = Counter("unified_on_demand_failures", "On-demand loads that failed (outcome "
                                          "failed; the model served before comes back) and requests refused "
                                          "because that failure is remembered (outcome refused)",
                                          ["engine", "model", "outcome"], registry=r)
        self.peer_requests = Counter("unified_peer_requests", "Requests forwarded to a peer router, by peer, its "
                                     "model, endpoint and HTTP status (503 peer_down: refused here at once)",
                                     ["peer", "model", "endpoint", "status"], registry=r)
        self.peer_errors = Counter("unified_peer_errors", "Forwarded requests that failed on the way to or from "
                                   "the peer, by reason: peer_unreachable, peer_disconnected, timeout, peer_failed "
                                   "(mid-answer), peer_down (refused here at once while it was down)",
                                   ["peer", "reason"], registry=r)
        self.peer_duration = Histogram("unified_peer_request_duration_seconds", "Time from arrival to the last "
                                       "byte of a request a peer answered", ["peer", "endpoint"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.peer_ttft = Histogram("unified_peer_time_to_first_token_seconds", "Time from arrival to the peer's "
                                   "first response byte", ["peer", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.peer_up = Gauge("unified_peer_up", "1 while the peer answers its probes, 0 while it is down",
                             ["peer"], registry=r)
        self.peer_probe = Gauge("unified_peer_probe_seconds", "How long the peer's last answered probe took",
                                ["peer"], registry=r)
        self.rpc_worker_up = Gauge("unified_rpc_worker_up", "1 while a llama.cpp rpc worker of the model an engine "
                                   "serves answers, 0 while it does not (worker: its place in the model's rpc list)",
                                   ["engine", "worker"], registry=r)
        self._rpc_workers: set[tuple[str, str]] = set()  # label pairs of rpc_worker_up
        self.processes = EngineProcessCollector()
        r.register(self.processes)
        r.register(RouterProcessCollector())

    def watch(self, name: str, state: Callable[[], State], in_flight: Callable[[], int],
              waiting: Callable[[], int]) -> None:
        """Gauges read live from the engine's manager: no second copy of its counters to keep in step."""
        self.in_flight.labels(name).set_function(in_flight)
        self.queued.labels(name).set_function(waiting)
        for each in State:
            self.state.labels(name, each.value).set_function(lambda s=each: float(state() is s))
        self.restarts.labels(name)
        self.resends.labels(name)
        self.swap_wait.labels(name)

    # the lifecycle's events (router.lifecycle_events.LifecycleEvents)
    def engine_moved(self, engine: str, source: State, target: State) -> None:
        self.transitions.labels(engine, source.value, target.value).inc()

    def engine_restarted(self, engine: str) -> None:
        self.restarts.labels(engine).inc()

    def model_swapped(self, engine: str, model: str) -> None:
        self.swaps.labels(engine, model).inc()

    def waited(self, engine: str, seconds: float) -> None:
        self.swap_wait.labels(engine).observe(seconds)

    def on_demand_failed(self, engine: str, model: str, refused: bool) -> None:
        self.on_demand_failures.labels(engine, model, "refused" if refused else "failed").inc()

    def waiting_changed(self, engine: str, by_model: dict[str, int]) -> None:
        """Set each model's waiting count; models nobody waits for any more go back to 0."""
        for seen_engine, model in self._waited_for:
            if seen_engine == engine and model not in by_model:
                self.waiting_by_model.labels(engine, model).set(0)
        for model, count in by_model.items():
            self._waited_for.add((engine, model))
            self.waiting_by_model.labels(engine, model).set(count)

    # the peers' events (router.peers.PeerEvents)
    def peer_probed(self, peer: str, up: bool, seconds: float | None) -> None:
        self.peer_up.labels(peer).set(1 if up else 0)
        if seconds is not None:
            self.peer_probe.labels(peer).set(seconds)

    def forget_peer(self, peer: str) -> None:
        """A peer removed from the config: no more series that say it is up or down."""
        for gauge in (self.peer_up, self.peer_probe):
            with contextlib.suppress(KeyError):
                gauge.remove(peer)

    def observe_peer_request(self, record: RequestRecord, endpoint: str, seconds: float) -> None:
        self.peer_requests.labels(record.peer, record.model, endpoint, str(record.status)).inc()
        if record.failure:
            self.peer_errors.labels(record.peer, record.failure).inc()
        if record.status >= 400:
            return
        self.peer_duration.labels(record.peer, endpoint).observe(seconds)
        if record.first_byte_after is not None:
            self.peer_ttft.labels(record.peer, endpoint).observe(record.first_byte_after)

    def observe_request(self, record: RequestRecord, endpoint: str, seconds: float) -> None:
        labels = (record.engine, record.model, endpoint)
        self.requests.labels(*labels, str(record.status)).inc()
        if record.resends:
            self.resends.labels(record.engine).inc(record.resends)
        if record.status >= 400 or record.engine == "none":
            return
        self.duration.labels(*labels).observe(seconds)
        if record.first_byte_after is not None:
            self.ttft.labels(*labels).observe(record.first_byte_after)
        if record.prompt_tokens is not None:
            self.prompt_tokens.labels(record.engine, record.model).inc(record.prompt_tokens)
        if record.completion_tokens:
            self.generated_tokens.labels(record.engine, record.model).inc(record.completion_tokens)
            generating = seconds - (record.first_byte_after or 0)
            if generating <= 0.001 or record.first_byte_after is None:
                generating = seconds
            self.tokens_per_second.labels(record.engine, record.model).observe(record.completion_tokens / generating)

    def observe_load(self, engine: str, model: str, seconds: float, ok: bool) -> None:
        self.load_duration.labels(engine, model, "success" if ok else "failure").observe(seconds)

    def rpc_workers_seen(self, answers: dict[tuple[str, str], bool]) -> None:
        """The rpc workers of the models served now, (engine, worker) → whether it answers; no series for others."""
        for labels in self._rpc_workers - set(answers):
            self.rpc_worker_up.remove(*labels)
        for labels, up in answers.items():
            self.rpc_worker_up.labels(*labels).set(1 if up else 0)
        self._rpc_workers = set(answers)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def sample_processes(self, engine_pids: Callable[[], dict[str, int]]) -> None:
        """Every few seconds, measure each engine's process tree (its root PID, 0 for none) in a worker thread."""
        while True:
            for name, pid in engine_pids().items():
                self.processes.samples[name] = await asyncio.to_thread(sample_tree, pid) if pid else ProcessSample()
            await asyncio.sleep(SAMPLE_SECONDS)
