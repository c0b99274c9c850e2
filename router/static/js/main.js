// Wires the page together: status polling, the model picker, parameters, the chat, and the key dialog.

import { forgetKey, onKeyNeeded, storedKey } from "./api.js";
import { Chat } from "./chat.js";
import { ModelPicker } from "./models.js";
import { bindParams, loadChoices, saveChoices } from "./settings.js";
import { StatusMonitor } from "./status.js";

const $ = (id) => document.getElementById(id);
const ENGINES = ["vllm", "llamacpp"];

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
  const picker = new ModelPicker(status, (engine) => saveChoices({ engine }));
  picker.engine = ENGINES.includes(choices.engine) ? choices.engine : "vllm";
  const params = bindParams($("reset-params"));
  const chat = new Chat($("messages"), $("empty-hint"));
  $("compare").checked = Boolean(choices.compare);
  $("compare").addEventListener("change", () => saveChoices({ compare: $("compare").checked }));

  const send = async () => {
    const prompt = $("prompt").value.trim();
    if (!prompt || chat.busy) return;
    showPageError("");
    $("prompt").value = "";
    const engines = $("compare").checked ? ENGINES : [picker.engine];
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
}

main().catch((err) => showPageError(`the page failed to start: ${err.message}`));
