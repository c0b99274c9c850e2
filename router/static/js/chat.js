// The conversation: multi-turn history, one answer per turn (or one per compared engine), each streamed
// into its own message with its own speed line; Stop aborts the requests, so the router closes the engines' ones.

import { agreement, describeAgreements } from "./agreement.js";
import { showText } from "./render.js";
import { engineLabel } from "./status.js";
import { Answer, streamChat } from "./stream.js";

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  const area = element("textarea"); // plain http on another host: the older way
  area.value = text;
  document.body.append(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

// One message bubble: header (who, state, copy), content, optional speed line and error.
class MessageView {
  constructor(who, role) {
    this.root = element("article", `message ${role}`);
    const header = element("header");
    header.append(element("span", "who", who));
    this.state = element("span", "state");
    const copy = element("button", "quiet small copy", "Copy");
    copy.type = "button";
    copy.addEventListener("click", async () => {
      try {
        await copyText(this.text);
        copy.textContent = "Copied";
      } catch {
        copy.textContent = "Copy failed";
      }
      setTimeout(() => { copy.textContent = "Copy"; }, 1500);
    });
    header.append(this.state, copy);
    this.reasoning = element("div", "reasoning");
    this.reasoning.hidden = true;
    this.content = element("div", "content");
    this.stats = element("div", "stats");
    this.stats.hidden = true;
    this.root.append(header, this.reasoning, this.content, this.stats);
    this.text = "";
    this.pending = false;
  }

  setText(text, reasoning = "") {
    this.text = text;
    this.reasoningText = reasoning;
    if (this.pending) return; // render at most once a frame, however fast the tokens come
    this.pending = true;
    requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.pending = false;
    showText(this.content, this.text);
    this.reasoning.hidden = !this.reasoningText;
    this.reasoning.textContent = this.reasoningText ?? "";
  }

  showStats(answer) {
    const parts = [`${answer.exactTokens ? "" : "≈"}${answer.tokens} tokens`]; // ≈: counted chunks, no usage
    const tps = answer.tokensPerSecond;
    if (tps != null) parts.push(`${tps.toFixed(1)} tok/s`);
    if (answer.ttftMs != null) parts.push(`TTFT ${Math.round(answer.ttftMs)} ms`);
    if (answer.diffusion?.steps != null) parts.push(`${answer.diffusion.steps} diffusion steps`);
    if (answer.finishReason) parts.push(answer.finishReason);
    this.stats.textContent = parts.join(" · ");
    this.stats.dataset.tokens = answer.tokens;
    this.stats.dataset.tps = tps ?? "";
    this.stats.dataset.ttftMs = answer.ttftMs ?? "";
    this.stats.dataset.steps = answer.diffusion?.steps ?? "";
    this.stats.hidden = false;
  }

  showError(message) {
    const box = element("div", "error-box", message);
    box.setAttribute("role", "alert");
    this.root.append(box);
  }
}

export class Chat {
  constructor(container, hint) {
    this.container = container;
    this.hint = hint;
    this.turns = []; // {role: "user", content} | {role: "assistant", answers: {engine: text}}
    this.controller = null;
  }

  get busy() {
    return this.controller !== null;
  }

  // The history as `engine` sees it: its own earlier answers, or the answer another engine gave.
  messagesFor(engine, system) {
    const messages = system ? [{ role: "system", content: system }] : [];
    for (const turn of this.turns) {
      if (turn.role === "user") {
        messages.push({ role: "user", content: turn.content });
        continue;
      }
      const text = turn.answers[engine] || Object.values(turn.answers).find(Boolean);
      if (text) messages.push({ role: "assistant", content: text });
      else messages.pop(); // nothing came back: drop the question too, so roles keep alternating
    }
    return messages;
  }

  // Follows the newest text unless the reader scrolled up: the message list scrolls itself on a desktop,
  // the whole page scrolls on a phone.
  scrollToEnd(force = false) {
    const list = this.container;
    const scroller = list.scrollHeight > list.clientHeight + 1 ? list : document.scrollingElement;
    if (force || scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 160) {
      scroller.scrollTop = scroller.scrollHeight;
    }
  }

  // Sends `prompt` to each target ({engine, model}); resolves when every answer has ended.
  async send(prompt, targets, params) {
    this.hint.hidden = true;
    const user = new MessageView("You", "user");
    const userTurn = element("div", "turn user");
    userTurn.append(user.root);
    user.setText(prompt);
    const answersRow = element("div", `turn answers${targets.length > 1 ? " compare" : ""}`);
    this.container.append(userTurn, answersRow);
    this.scrollToEnd(true);

    const history = Object.fromEntries(targets.map((t) => [t.engine, this.messagesFor(t.engine, params.system)]));
    this.turns.push({ role: "user", content: prompt });
    const turn = { role: "assistant", answers: {} };
    this.turns.push(turn);

    const controller = new AbortController();
    this.controller = controller;
    const signal = controller.signal;
    try {
      const answers = await Promise.all(targets.map(({ engine, model }) => {
        const view = new MessageView(`${engineLabel(engine)}${model ? ` · ${model}` : ""}`, "assistant");
        view.root.dataset.engine = engine;
        answersRow.append(view.root);
        const request = { engine, messages: [...history[engine], { role: "user", content: prompt }],
                          max_tokens: params.max_tokens, temperature: params.temperature, top_p: params.top_p };
        if (model) request.model = model;
        return this.answer(view, request, signal, turn);
      }));
      if (answers.length >= 2 && answers.every((a) => a.finishReason)) {
        // every pair of answers (one pair for two engines, three for three): how many leading tokens they share
        const pairs = [];
        for (let i = 0; i < answers.length; i++) {
          for (let j = i + 1; j < answers.length; j++) {
            pairs.push({ names: [engineLabel(targets[i].engine), engineLabel(targets[j].engine)],
                         ...agreement(answers[i], answers[j]) });
          }
        }
        const note = element("p", "agreement", describeAgreements(pairs));
        note.dataset.tokens = Math.min(...pairs.map((p) => p.tokens ?? p.chars));
        note.dataset.identical = pairs.every((p) => p.identical);
        answersRow.after(note);
      }
    } finally {
      if (this.controller === controller) this.controller = null;
    }
  }

  async answer(view, request, signal, turn) {
    const answer = new Answer();
    view.state.textContent = "waiting for the first token…";
    view.root.dataset.state = "waiting";
    try {
      await streamChat(request, answer, signal, (a) => {
        view.state.textContent = "streaming";
        view.root.dataset.state = "streaming";
        view.setText(a.text, a.reasoning);
        this.scrollToEnd();
      });
      view.state.textContent = "";
      view.root.dataset.state = "done";
    } catch (err) {
      const stopped = err.name === "AbortError";
      view.state.textContent = stopped ? "stopped" : "failed";
      view.root.dataset.state = stopped ? "stopped" : "error";
      if (!stopped) view.showError(err.message);
    }
    view.setText(answer.text, answer.reasoning);
    if (answer.chunks || answer.usage) view.showStats(answer);
    turn.answers[request.engine] = answer.text;
    this.scrollToEnd();
    return answer;
  }

  stop() {
    this.controller?.abort();
  }

  clear() {
    this.stop();
    this.turns = [];
    this.container.replaceChildren(this.hint);
    this.hint.hidden = false;
  }
}
