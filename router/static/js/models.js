// Engine and model picker, and loading a model: the catalog and loaded models from GET /v1/models, a Load
// button that shows the engine's state and the elapsed time, and the engine's own error text when a load fails.

import { apiJson } from "./api.js";
import { ENGINE_LABELS, formatDuration, stateOf } from "./status.js";

const $ = (id) => document.getElementById(id);

export class ModelPicker {
  constructor(status, onEngineChange) {
    this.status = status;
    this.onEngineChange = onEngineChange;
    this.models = [];
    this.loading = null; // {engine, name, started} while this page's load request runs
    this.served = {}; // engine → model it served at the last status poll
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

  set engine(name) {
    $("engine").value = name;
    this.fill();
  }

  // The model a chat request on `engine` names: the one picked when that engine is picked, else what it serves.
  modelFor(engine) {
    if (engine === this.engine && $("model").value) return $("model").value;
    return this.status.engines[engine]?.model ?? undefined;
  }

  async refresh() {
    try {
      this.models = (await apiJson("/v1/models")).data ?? [];
      this.fill();
      return null;
    } catch (err) {
      return err;
    }
  }

  // Fills the model list for the picked engine, keeping the choice, else picking the model it serves.
  fill() {
    const select = $("model");
    const previous = select.value;
    const served = this.status.engines[this.engine]?.model;
    const mine = this.models.filter((m) => m.engine === this.engine);
    select.replaceChildren(...mine.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      const loaded = m.id === served || ["loaded", "loading"].includes(m.state);
      option.textContent = loaded ? `${m.id} (${m.id === served ? stateOf(this.status.engines[this.engine]) : m.state})`
                                  : `${m.id} (not loaded)`;
      return option;
    }));
    const ids = mine.map((m) => m.id);
    const servedChanged = served !== this.lastServed[this.engine]; // a load happened: follow it
    this.lastServed[this.engine] = served;
    const keep = !servedChanged && ids.includes(previous);
    select.value = keep ? previous : served && ids.includes(served) ? served : ids[0] ?? "";
    this.offer();
  }

  // Picking a model the engine does not serve offers to load it.
  offer() {
    const picked = $("model").value;
    const engine = this.status.engines[this.engine];
    const show = Boolean(picked) && !this.loading && engine?.model !== picked;
    $("model-offer").hidden = !show;
    if (show) {
      const onDemand = engine?.on_demand ? " Or just send a message: the router loads it on demand." : "";
      $("model-offer-text").textContent =
        `${picked} is not loaded on ${ENGINE_LABELS[this.engine] ?? this.engine}.${onDemand}`;
    }
  }

  statusChanged(engines) {
    const changed = Object.entries(engines).some(([name, e]) => this.served[name] !== e.model);
    this.served = Object.fromEntries(Object.entries(engines).map(([name, e]) => [name, e.model]));
    if (changed) this.refresh();
    else this.offer();
    if (this.loading) this.showProgress();
  }

  showProgress() {
    const { engine, name, started } = this.loading;
    const state = stateOf(this.status.engines[engine]);
    const seconds = this.status.loadingSeconds(engine) ?? (Date.now() - started) / 1000;
    $("load-state").textContent = `loading ${name} on ${ENGINE_LABELS[engine] ?? engine}: ${formatDuration(seconds)} (engine: ${state})`;
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
    try {
      done = await apiJson("/v1/models/load", { method: "POST", body: { engine, model_path: name } });
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
      $("load-state").textContent = `loaded ${done.model} on ${ENGINE_LABELS[engine] ?? engine} in ${done.load_seconds} s`;
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
