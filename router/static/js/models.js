// Engine and model picker, and loading a model: the configured engines (/v1/status's top-level keys), the catalog
// and loaded models from GET /v1/models, a Load button that shows the engine's state and the elapsed time, and the
// engine's own error text when a load fails.
// An engine with several instances (max_instances > 1) holds several models at once: the list marks each
// resident model with its instance, and picking one loads nothing, since a chat request naming it goes to its
// instance; Load then adds a model beside the resident ones (keep_others) instead of replacing the shown one.
// A peer router's models (docs/scale-out.md) are listed as peer/model under their engine; a chat naming one goes
// to that peer, which loads it itself, so they are never offered for a load here.

import { apiJson } from "./api.js";
import { engineLabel, formatDuration, hasInstances, instancesOf, servesModel, stateOf } from "./status.js";

const $ = (id) => document.getElementById(id);

export class ModelPicker {
  // `preferred`: the engine picked when this page last ran (localStorage), picked again once it is listed.
  constructor(status, onEngineChange, preferred) {
    this.status = status;
    this.onEngineChange = onEngineChange;
    this.preferred = preferred;
    this.models = [];
    this.loading = null; // {engine, name, started} while this page's load request runs
    this.served = {}; // engine → the models it held (top level, then each instance) at the last status poll
    this.looks = {}; // engine → its instances' states and pins at the last status poll
    this.lastServed = {}; // engine → model it served when the list was last filled
    $("engine").addEventListener("change", () => { this.clearError(); this.fill(); this.onEngineChange(this.engine); });
    $("model").addEventListener("change", () => { this.clearError(); this.offer(); });
    $("load").addEventListener("click", () => this.load());
    $("offer-load").addEventListener("click", () => this.load());
    status.onChange((engines) => this.statusChanged(engines));
  }

  get engine() {
    return $("engine").value;
  }

  // The configured engines, in models.yaml's order: /v1/status's top-level keys; until status has answered, the
  // engines the model list names.
  engineNames() {
    if (this.status.known) return Object.keys(this.status.engines);
    return [...new Set(this.models.filter((m) => !m.peer).map((m) => m.engine).filter(Boolean))];
  }

  // Lists the configured engines in the engine picker (one, two or three). The pick stays when its engine is
  // still listed; else the remembered pick, else the first engine that serves a model, else the first one.
  // Returns whether the list changed.
  syncEngines() {
    const names = this.engineNames();
    const select = $("engine");
    const listed = [...select.options].map((o) => o.value);
    if (JSON.stringify(listed) === JSON.stringify(names)) return false;
    const current = select.value;
    select.replaceChildren(...names.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = engineLabel(name);
      return option;
    }));
    const serving = names.find((name) => servesModel(this.status.engines[name]));
    select.value = names.includes(current) ? current
      : names.includes(this.preferred) ? this.preferred : serving ?? names[0] ?? "";
    return true;
  }

  // Compare mode's engines, in the configured order: every engine that serves a model (or is loading one), and
  // the picked engine when a model is picked there (the request loads it on demand, or says why it cannot).
  compareEngines() {
    const picked = $("model").value ? this.engine : null;
    return this.engineNames().filter((name) => name === picked || servesModel(this.status.engines[name]));
  }

  set engine(name) {
    $("engine").value = name;
    this.fill();
  }

  // The model a chat request on `engine` names: the one picked when that engine is picked, else what it serves.
  // A resident model on another instance is named like any other: the router sends the request there, no swap.
  modelFor(engine) {
    if (engine === this.engine && $("model").value) return $("model").value;
    return this.status.engines[engine]?.model ?? undefined;
  }

  async refresh() {
    try {
      this.models = (await apiJson("/v1/models")).data ?? [];
      this.syncEngines();
      this.fill();
      return null;
    } catch (err) {
      return err;
    }
  }

  // The instance of `engine` that holds `model` (any state), from the last status poll; null when none does or
  // the engine has one instance.
  instanceHolding(engine, model) {
    return instancesOf(this.status.engines[engine]).find((i) => i.model === model) ?? null;
  }

  // Whether `engine` holds `model`: what its top level shows, or (several instances) any instance's model.
  holds(engine, model) {
    return this.status.engines[engine]?.model === model || this.instanceHolding(engine, model) !== null;
  }

  // The option's text: its state where the engine holds it (and, with several instances, on which one).
  label(m, served) {
    if (m.peer) return `${m.id} (${m.state === "peer_down" ? "peer down" : `${m.resident ? m.state : "not loaded"} on ${m.peer}`})`;
    const engine = this.status.engines[this.engine];
    if (hasInstances(engine)) {
      const instance = this.instanceHolding(this.engine, m.id);
      if (!instance) return `${m.id} (not loaded)`;
      return `${m.id} (${instance.state} on ${instance.name}${instance.pinned ? ", pinned" : ""})`;
    }
    const loaded = m.id === served || ["loaded", "loading"].includes(m.state);
    return loaded ? `${m.id} (${m.id === served ? stateOf(engine) : m.state})` : `${m.id} (not loaded)`;
  }

  // Fills the model list for the picked engine, keeping the choice, else picking the model it serves.
  fill() {
    const select = $("model");
    const previous = select.value;
    const served = this.status.engines[this.engine]?.model;
    const several = hasInstances(this.status.engines[this.engine]);
    const mine = this.models.filter((m) => m.engine === this.engine);
    select.replaceChildren(...mine.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = this.label(m, served);
      const instance = this.instanceHolding(this.engine, m.id);
      if (instance) option.dataset.instance = instance.name;
      return option;
    }));
    const ids = mine.map((m) => m.id);
    // One instance: a load happened, follow it. Several: the shown model changes whenever another resident
    // model is used, by this page or any client, so the pick stays (this page's own loads pick what they load).
    const servedChanged = served !== this.lastServed[this.engine];
    this.lastServed[this.engine] = served;
    const keep = (several || !servedChanged) && ids.includes(previous);
    select.value = keep ? previous : served && ids.includes(served) ? served : ids[0] ?? "";
    this.offer();
  }

  // Picking a model the engine does not hold offers to load it; a resident one needs nothing (no swap).
  offer() {
    const picked = $("model").value;
    const engine = this.status.engines[this.engine];
    // a peer's model (peer/model) is loaded by the peer itself when a message asks for it: nothing to load here
    const onPeer = this.models.some((m) => m.id === picked && m.peer);
    const show = Boolean(picked) && !onPeer && !this.loading && !this.holds(this.engine, picked);
    $("model-offer").hidden = !show;
    if (show) {
      const beside = hasInstances(engine) ? " Loading it keeps the resident models where memory and max_instances allow." : "";
      const onDemand = engine?.on_demand ? " Or just send a message: the router loads it on demand." : "";
      $("model-offer-text").textContent =
        `${picked} is not loaded on ${engineLabel(this.engine)}.${beside}${onDemand}`;
    }
  }

  // A model came or went on an instance: list the models again (a path loaded outside the catalog appears
  // there); only a state or a pin changed: relabel the list.
  statusChanged(engines) {
    const listed = this.syncEngines(); // the configured engines can change with a config reload
    const held = (e) => JSON.stringify([e.model, ...instancesOf(e).map((i) => i.model)]);
    const looks = (e) => JSON.stringify(instancesOf(e).map((i) => [i.state, i.pinned]));
    const changed = Object.entries(engines).some(([name, e]) => this.served[name] !== held(e));
    const relabel = Object.entries(engines).some(([name, e]) => this.looks[name] !== looks(e));
    this.served = Object.fromEntries(Object.entries(engines).map(([name, e]) => [name, held(e)]));
    this.looks = Object.fromEntries(Object.entries(engines).map(([name, e]) => [name, looks(e)]));
    if (changed) this.refresh();
    else if (relabel || listed) this.fill();
    else this.offer();
    if (this.loading) this.showProgress();
  }

  showProgress() {
    const { engine, name, started } = this.loading;
    const label = engineLabel(engine);
    // several instances: the load runs on the instance that takes the model, not necessarily the one shown at
    // the top level (whose loading_since would time another load); the instances give no start time
    const instance = hasInstances(this.status.engines[engine])
      ? this.instanceHolding(engine, name) ?? instancesOf(this.status.engines[engine]).find((i) => i.state === "loading")
      : null;
    if (instance) {
      const seconds = (Date.now() - started) / 1000;
      $("load-state").textContent =
        `loading ${name} on ${label} (${instance.name}): ${formatDuration(seconds)} (engine: ${instance.state})`;
      return;
    }
    const state = stateOf(this.status.engines[engine]);
    const seconds = this.status.loadingSeconds(engine) ?? (Date.now() - started) / 1000;
    $("load-state").textContent = `loading ${name} on ${label}: ${formatDuration(seconds)} (engine: ${state})`;
  }

  async load() {
    if (this.loading) return;
    const engine = this.engine;
    const name = $("model-path").value.trim() || $("model").value;
    if (!name) {
      this.showError("pick a model or type a path under the model roots");
      return;
    }
    this.loading = { engine, name, started: Date.now() };
    $("load").disabled = $("offer-load").disabled = true;
    this.clearError();
    $("model-offer").hidden = true;
    this.showProgress();
    const ticker = setInterval(() => this.showProgress(), 500);
    this.status.fast = true;
    this.status.poll();
    let done = null;
    const onPeer = !$("model-path").value.trim() && this.models.find((m) => m.id === name && m.peer);
    const body = onPeer // loaded by the peer, beside its resident models
      ? { peer: onPeer.peer, engine, model_path: name.slice(onPeer.peer.length + 1), keep_others: true }
      : { engine, model_path: name };
    if (!onPeer && hasInstances(this.status.engines[engine])) body.keep_others = true; // beside the resident models
    try {
      done = await apiJson("/v1/models/load", { method: "POST", body });
    } catch (err) {
      $("load-state").textContent = "";
      this.showError(err.message);
    } finally {
      clearInterval(ticker);
      this.loading = null;
      this.status.fast = false;
      $("load").disabled = $("offer-load").disabled = false;
    }
    if (done) {
      const where = done.peer ? ` (on peer ${done.peer})`
        : hasInstances(this.status.engines[engine]) && done.instance ? ` (on ${done.instance})` : "";
      $("load-state").textContent = `loaded ${done.model} on ${engineLabel(engine)} in ${done.load_seconds} s${where}`;
      $("model-path").value = "";
    }
    await this.status.poll();
    await this.refresh();
    if (done && this.engine === engine && this.models.some((m) => m.id === done.model)) $("model").value = done.model;
    this.offer();
  }

  clearError() {
    $("load-error").hidden = true;
  }

  showError(message) {
    $("load-error-text").textContent = message;
    $("load-error").hidden = false;
  }
}
