// Calls to the router's API: the stored key goes with every call, a 401 asks for a key (one dialog for all
// the calls that were refused at once) and retries, and any failure becomes an ApiError with a readable message.

const KEY_STORE = "ullm.apiKey";

export class ApiError extends Error {
  constructor(message, status = 0, type = null) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export function storedKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

export function forgetKey() {
  localStorage.removeItem(KEY_STORE);
}

let askForKey = null; // set by the page: (reason) => Promise<string | null>
let pendingAsk = null;

export function onKeyNeeded(ask) {
  askForKey = ask;
}

function keyFromUser(reason) {
  pendingAsk ??= askForKey(reason).finally(() => { pendingAsk = null; });
  return pendingAsk;
}

// The OpenAI-style {"error": {"message", ...}} of a failed answer, else its text, else the HTTP status.
export async function errorFrom(resp) {
  const text = await resp.text().catch(() => "");
  try {
    const error = JSON.parse(text).error;
    if (error) return new ApiError(typeof error === "string" ? error : error.message || JSON.stringify(error),
                                   resp.status, error.type ?? null);
  } catch { /* not JSON: fall through */ }
  const detail = text.trim().slice(0, 300);
  return new ApiError(`HTTP ${resp.status} ${resp.statusText}${detail ? `: ${detail}` : ""}`, resp.status);
}

export async function apiFetch(path, { method = "GET", body, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = storedKey();
    if (key) headers["Authorization"] = `Bearer ${key}`;
    let resp;
    try {
      resp = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(`cannot reach the router (${err.message})`);
    }
    if (resp.ok) return resp;
    const error = await errorFrom(resp);
    if (resp.status === 401 && askForKey && attempt < 3) {
      const entered = await keyFromUser(error.message);
      if (entered) {
        localStorage.setItem(KEY_STORE, entered);
        continue;
      }
      if (storedKey() && storedKey() !== key) continue; // another call's dialog stored a key meanwhile
    }
    throw error;
  }
}

export async function apiJson(path, options) {
  const resp = await apiFetch(path, options);
  return resp.json();
}
