// Sampling parameters and page choices, remembered in localStorage across reloads of the page.

const PARAMS_STORE = "ullm.params";
const CHOICES_STORE = "ullm.choices";
export const DEFAULTS = Object.freeze({ max_tokens: 128, temperature: 0.7, top_p: 0.95, system: "" });
const NUMBERS = ["max_tokens", "temperature", "top_p"];

function read(store, fallback) {
  try {
    return { ...fallback, ...JSON.parse(localStorage.getItem(store) || "{}") };
  } catch {
    return { ...fallback };
  }
}

// Binds the parameter fields (ids = parameter names) to storage; returns a function giving the current values.
export function bindParams(resetButton) {
  const fields = Object.fromEntries(Object.keys(DEFAULTS).map((name) => [name, document.getElementById(name)]));
  const show = (values) => { for (const [name, el] of Object.entries(fields)) el.value = values[name]; };
  const save = () => {
    const values = Object.fromEntries(Object.entries(fields).map(([name, el]) => [name, el.value]));
    localStorage.setItem(PARAMS_STORE, JSON.stringify(values));
  };
  show(read(PARAMS_STORE, DEFAULTS));
  for (const el of Object.values(fields)) el.addEventListener("input", save);
  resetButton.addEventListener("click", () => { show(DEFAULTS); save(); });

  return () => {
    const values = { system: fields.system.value.trim() };
    for (const name of NUMBERS) {
      const text = fields[name].value.trim();
      values[name] = text === "" ? DEFAULTS[name] : Number(text); // a bad value goes on: the engine says why
    }
    return values;
  };
}

export function loadChoices() {
  return read(CHOICES_STORE, { engine: null, compare: false }); // no engine yet: the first serving one
}

export function saveChoices(changes) {
  localStorage.setItem(CHOICES_STORE, JSON.stringify({ ...loadChoices(), ...changes }));
}
