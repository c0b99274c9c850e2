// One streamed chat completion: server-sent events read with fetch + ReadableStream, the text as it grows,
// and the answer's speed (time to first token, tokens, tokens/s from the stream's `usage`).

import { apiFetch, ApiError } from "./api.js";

// Yields the `data:` payload of each server-sent event as it arrives.
async function* sseData(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
        if (data.length) yield data.join("\n");
      }
    }
  } finally {
    reader.releaseLock();
  }
}

// What one answer has produced so far; `live` is updated while the stream runs.
export class Answer {
  constructor() {
    this.text = "";
    this.reasoning = "";
    this.usage = null;
    this.chunks = 0;
    this.pieces = []; // the answer's text, chunk by chunk (a token each, as the engines stream, but diffusion)
    this.diffusion = null; // a diffusion model's answer (Transformers engine): {steps, streaming}
    this.streaming = null; // its X-Diffusion-Streaming header: final-prefix or final-block chunks, not tokens
    this.finishReason = null;
    this.started = performance.now();
    this.firstToken = null;
    this.ended = null;
  }

  get ttftMs() {
    return this.firstToken === null ? null : this.firstToken - this.started;
  }

  // Completion tokens: the engine's count from `usage`, else the number of content chunks (an estimate).
  get tokens() {
    return this.usage?.completion_tokens ?? this.chunks;
  }

  get exactTokens() {
    return this.usage?.completion_tokens != null;
  }

  // Generated tokens per second of generation time (first token to last), as the router's metrics count it.
  get tokensPerSecond() {
    if (this.firstToken === null || !this.tokens) return null;
    const seconds = ((this.ended ?? performance.now()) - this.firstToken) / 1000;
    return seconds > 0.001 ? this.tokens / seconds : null;
  }
}

// Streams `request` (a chat completion body) and calls onUpdate(answer) as text arrives. Resolves when the
// stream ends; rejects with ApiError on an error answer or error event, with AbortError when stopped.
export async function streamChat(request, answer, signal, onUpdate) {
  const body = { ...request, stream: true, stream_options: { include_usage: true } };
  try {
    const resp = await apiFetch("/v1/chat/completions", { method: "POST", body, signal });
    answer.streaming = resp.headers.get("X-Diffusion-Streaming");
    for await (const data of sseData(resp)) {
      if (data === "[DONE]") break;
      let event;
      try {
        event = JSON.parse(data);
      } catch {
        throw new ApiError(`unreadable event from the engine: ${data.slice(0, 200)}`);
      }
      if (event.error) {
        const error = event.error;
        throw new ApiError(typeof error === "string" ? error : error.message || JSON.stringify(error), 0, error.type);
      }
      if (event.usage) answer.usage = event.usage;
      if (event.diffusion) answer.diffusion = event.diffusion;
      const choice = event.choices?.[0];
      if (!choice) continue;
      const delta = choice.delta ?? {};
      const piece = delta.content ?? "";
      const thought = delta.reasoning_content ?? delta.reasoning ?? "";
      if (piece || thought) {
        answer.firstToken ??= performance.now();
        answer.text += piece;
        if (piece) answer.pieces.push(piece);
        answer.reasoning += thought;
        answer.chunks += 1;
        onUpdate(answer);
      }
      if (choice.finish_reason) answer.finishReason = choice.finish_reason;
    }
  } finally {
    answer.ended = performance.now();
  }
}
