// Live status of the configured engines from GET /v1/status (its top-level keys are exactly the engines models.yaml
// configures, in its order: one, two or three of vllm, llamacpp, transformers), polled (faster while something
// loads or stops), shown in the top bar. An engine with max_instances > 1 holds several models at once,
// one per instance: its card then lists the instances under the line that shows the most recently used one.

import { apiJson } from "./api.js";

export const ENGINE_LABELS = { vllm: "vLLM", llamacpp: "llama.cpp", transformers: "Transformers" };

// An engine's name for people: its label, else the name itself (an engine this page does not know yet).
export function engineLabel(name) {
  return ENGINE_LABELS[name] ?? name;
}
const SLOW_MS = 2000;
const FAST_MS = 700;

// The exact lifecycle state when the router gives it, else the coarse status.
export function stateOf(engine) {
  return engine?.state ?? engine?.status ?? "unknown";
}

export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// Whether the engine may hold several models at once (its card and the model picker then show the instances):
// max_instances > 1, or an instance beyond a lowered max_instances that still holds a model (status lists it).
export function hasInstances(engine) {
  return Array.isArray(engine?.instances) && ((engine.max_instances ?? 1) > 1 || engine.instances.length > 1);
}

// The engine's instances (a one-instance engine: none listed, so callers fall back to the top-level fields).
export function instancesOf(engine) {
  return hasInstances(engine) ? engine.instances : [];
}

// Whether the engine serves a model now, or is loading one (on any instance): what compare mode sends to.
export function servesModel(engine) {
  return [engine, ...instancesOf(engine)].some((i) => i?.model && ["loaded", "loading"].includes(stateOf(i)));
}

function formatBytes(bytes) {
  if (bytes == null) return null;
  return bytes >= 1 << 30 ? `${(bytes / (1 << 30)).toFixed(1)} GiB` : `${Math.round(bytes / (1 << 20))} MiB`;
}

export class StatusMonitor {
  constructor(container) {
    this.container = container;
    this.engines = {};
    this.known = false; // whether a status answer has arrived (until then the engines are not known)
    this.loadingSeen = {}; // engine → page clock (ms) when this page first saw it loading
    this.listeners = [];
    this.fast = false;
    this.timer = null;
  }

  onChange(listener) {
    this.listeners.push(listener);
  }

  // Seconds the engine has been loading: from the router's loading_since, unless this browser's clock disagrees
  // with the router's (then from when this page first saw it loading).
  loadingSeconds(name) {
    const engine = this.engines[name];
    if (!engine || stateOf(engine) !== "loading") return null;
    const since = engine.loading_since;
    const fromRouter = since == null ? null : Date.now() / 1000 - since;
    if (fromRouter != null && fromRouter >= 0 && fromRouter < 86400) return fromRouter;
    return (Date.now() - (this.loadingSeen[name] ?? Date.now())) / 1000;
  }

  async poll() {
    clearTimeout(this.timer);
    try {
      const body = await apiJson("/v1/status");
      this.engines = body;
      this.known = true;
      this.error = null;
    } catch (err) {
      this.error = err.message;
    }
    for (const [name, engine] of Object.entries(this.engines)) {
      if (stateOf(engine) === "loading") this.loadingSeen[name] ??= Date.now();
      else delete this.loadingSeen[name];
    }
    this.render();
    for (const listener of this.listeners) listener(this.engines);
    // any instance counts: a model loading beside the one shown at the top level is a load in progress too
    const busy = Object.values(this.engines).some((e) => [e, ...instancesOf(e)].some(
      (i) => ["loading", "stopping"].includes(stateOf(i))));
    clearTimeout(this.timer); // a poll that overlapped this one must not leave a second timer running
    this.timer = setTimeout(() => this.poll(), busy || this.fast ? FAST_MS : SLOW_MS);
  }

  render() {
    const cards = Object.entries(this.engines).map(([name, engine]) => this.card(name, engine));
    if (this.error) {
      const note = document.createElement("span");
      note.className = "error-box";
      note.textContent = `status unavailable: ${this.error}`;
      cards.push(note);
    }
    this.container.replaceChildren(...cards);
  }

  card(name, engine) {
    const state = stateOf(engine);
    const card = document.createElement("div");
    card.className = "engine-card";
    card.dataset.engine = name;
    card.dataset.state = state;
    const add = (cls, text, title) => appendSpan(card, cls, text, title);
    add("name", engineLabel(name));
    add(`badge ${state}`, state);
    if (engine.model) add("model", engine.model, engine.model_path ?? "");
    if (state === "loading") add("elapsed", formatDuration(this.loadingSeconds(name)));
    if (state === "loaded" && engine.uptime_seconds != null) add("muted uptime", `up ${formatDuration(engine.uptime_seconds)}`);
    const memory = formatBytes(engine.memory_rss_bytes);
    if (memory) add("muted memory", memory, "memory of the engine's processes (RSS)");
    if (engine.in_flight || engine.waiting) {
      add("muted busy", `${engine.in_flight ?? 0} running${engine.waiting ? `, ${engine.waiting} waiting` : ""}`);
    }
    const spread = spreadOf(engine.distributed);
    if (spread) add(`spread${spread.down ? " warn-text" : " muted"}`, spread.text, spread.title);
    if (state === "loading" && engine.distributed?.waiting_for) {
      add("waiting-for warn-text", `waiting for ${engine.distributed.waiting_for}`);
    }
    if (state === "error" && engine.last_error) {
      add("error-text", engine.last_error.split("\n")[0].slice(0, 80), engine.last_error);
    }
    if (hasInstances(engine)) card.append(this.instanceList(engine));
    return card;
  }

  // One line per instance: which model it holds (or free), its state, its requests, pinned, memory.
  instanceList(engine) {
    const list = document.createElement("ul");
    list.className = "instances";
    for (const instance of engine.instances) {
      const item = document.createElement("li");
      item.dataset.instance = instance.name;
      item.dataset.state = instance.state;
      const add = (cls, text, title) => appendSpan(item, cls, text, title);
      const shown = instance.name === engine.instance;
      add("name", instance.name, shown ? "most recently used: the line above shows it" : `port ${instance.port}`);
      add(`badge ${instance.state}`, instance.state);
      if (instance.model) add("model", instance.model);
      else add("muted free", "free", "no model: the next model that fits loads here");
      if (instance.pinned) add("pin", "pinned", "never evicted for another model (pinned or keep_loaded)");
      if (instance.in_flight || instance.waiting) {
        add("muted busy", `${instance.in_flight ?? 0} running${instance.waiting ? `, ${instance.waiting} waiting` : ""}`);
      }
      const memory = formatBytes(instance.memory_rss_bytes);
      if (memory) add("muted memory", memory, "memory of the instance's processes (RSS)");
      list.append(item);
    }
    return list;
  }
}

// How the engine's model spans more than its own process (status's `distributed`, docs/distributed.md), in a few
// words: the boxes and workers, and any rpc worker that does not answer (`down`); null for a model on one process.
export function spreadOf(distributed) {
  if (!distributed) return null;
  const workers = distributed.rpc_workers ?? [];
  if (workers.length) {
    const down = workers.filter((w) => !w.answers).length;
    const title = workers.map((w) => `${w.address}: ${w.answers ? "answers" : "does not answer"}`).join("\n");
    const text = `${distributed.runtime} across ${workers.length + 1} boxes` +
      (down ? `, ${down} of ${workers.length} worker${workers.length > 1 ? "s" : ""} not answering` : "");
    return { text, title, down };
  }
  const ranks = (distributed.tensor_parallel_size ?? 1) * (distributed.pipeline_parallel_size ?? 1);
  const where = (distributed.nnodes ?? 1) > 1 ? ` across ${distributed.nnodes} boxes` : "";
  return { text: `${distributed.runtime}, ${ranks} ranks${where}`, title: `tensor parallel ${
    distributed.tensor_parallel_size ?? 1}, pipeline parallel ${distributed.pipeline_parallel_size ?? 1}`, down: 0 };
}

// A <span class=cls title=title>text</span> at the end of `parent` (text, never HTML).
function appendSpan(parent, cls, text, title) {
  const span = document.createElement("span");
  span.className = cls;
  span.textContent = text;
  if (title) span.title = title;
  parent.append(span);
  return span;
}
