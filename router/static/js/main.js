// Wires the page together: status polling, the model picker, parameters, the chat, and the key dialog.

import { forgetKey, onKeyNeeded, storedKey } from "./api.js";
import { Chat } from "./chat.js";
import { ModelPicker } from "./models.js";
import { bindParams, loadChoices, saveChoices } from "./settings.js";
import { engineLabel, StatusMonitor } from "./status.js";

const $ = (id) => document.getElementById(id);

function showPageError(message) {
  $("page-error").textContent = message;
  $("page-error").hidden = !message;
}

// Asks for the API key in a dialog; resolves with the key, or null when cancelled.
function askForKey(reason) {
  const dialog = $("key-dialog");
  $("key-reason").textContent = `${reason} Enter the key; it is kept in this browser.`;
  $("key-input").value = "";
  dialog.showModal();
  $("key-input").focus();
  return new Promise((resolve) => {
    const finish = (key) => {
      $("key-save").onclick = $("key-cancel").onclick = $("key-input").onkeydown = dialog.oncancel = null;
      if (dialog.open) dialog.close();
      $("forget-key").hidden = !key && !storedKey();
      resolve(key);
    };
    $("key-save").onclick = () => finish($("key-input").value.trim() || null);
    $("key-cancel").onclick = () => finish(null);
    dialog.oncancel = () => finish(null);
    $("key-input").onkeydown = (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finish($("key-input").value.trim() || null);
      }
    };
  });
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
}

async function main() {
  onKeyNeeded(askForKey);
  $("forget-key").hidden = !storedKey();
  $("forget-key").addEventListener("click", () => { forgetKey(); $("forget-key").hidden = true; });
  if (window.matchMedia("(max-width: 760px)").matches) $("settings").open = false; // phone: chat first

  const status = new StatusMonitor($("engine-status"));
  const choices = loadChoices();
  // the engines are the configured ones, from /v1/status: the picker lists them once it answers
  const picker = new ModelPicker(status, (engine) => saveChoices({ engine }), choices.engine);
  const params = bindParams($("reset-params"));
  const chat = new Chat($("messages"), $("empty-hint"));
  $("compare").checked = Boolean(choices.compare);
  // Compare mode sends to the engines that serve a model, and to the picked one: the line under it says which.
  // With one engine configured there is nothing to compare, and the choice is not shown.
  const describeCompare = () => {
    const engines = picker.compareEngines();
    $("compare-row").hidden = picker.engineNames().length < 2;
    $("compare-engines").textContent = engines.length > 1 ? engines.map(engineLabel).join(", ")
      : "needs a model on a second engine";
  };
  $("compare").addEventListener("change", () => saveChoices({ compare: $("compare").checked }));
  status.onChange(describeCompare);
  $("engine").addEventListener("change", describeCompare);
  $("model").addEventListener("change", describeCompare);

  const send = async () => {
    const prompt = $("prompt").value.trim();
    if (!prompt || chat.busy) return;
    showPageError("");
    $("prompt").value = "";
    const compared = $("compare").checked && !$("compare-row").hidden ? picker.compareEngines() : [];
    const engines = compared.length > 1 ? compared : [picker.engine];
    const targets = engines.map((engine) => ({ engine, model: picker.modelFor(engine) }));
    setBusy(true);
    try {
      await chat.send(prompt, targets, params());
    } catch (err) {
      showPageError(err.message);
    } finally {
      setBusy(chat.busy);
      status.poll(); // the engines' in-flight counts change now, not at the next poll
      $("prompt").focus();
    }
  };
  $("send").addEventListener("click", send);
  $("stop").addEventListener("click", () => chat.stop());
  $("clear").addEventListener("click", () => { chat.clear(); setBusy(false); });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });

  await status.poll();
  const failed = await picker.refresh();
  if (failed) showPageError(`could not list the models: ${failed.message}`);
  describeCompare();
}

main().catch((err) => showPageError(`the page failed to start: ${err.message}`));
