// Model text → safe HTML. Markdown via marked, where any raw HTML in the text is shown as text (never parsed),
// then DOMPurify with a short allow-list as a second wall. Without either library, plain text.

const ALLOWED_TAGS = ["p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre",
                      "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td"];
const ALLOWED_ATTR = ["href", "title", "class", "start", "align"];

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function makeParser() {
  const { Marked } = globalThis.marked ?? {};
  if (!Marked || !globalThis.DOMPurify?.sanitize) return null;
  const parser = new Marked({
    gfm: true,
    breaks: true,
    renderer: {
      // `<script>` in model text stays visible text; a block of HTML shows as code
      html: (token) => (token.block ? `<pre><code>${escapeHtml(token.raw)}</code></pre>` : escapeHtml(token.raw)),
      image: (token) => escapeHtml(token.raw), // no fetches from model-chosen URLs: show the Markdown itself
      checkbox: (token) => (token.checked ? "\u2611 " : "\u2610 "),
    },
  });
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
  return parser;
}

const parser = makeParser();

export function renderMarkdown(text) {
  if (!parser) return null;
  const html = parser.parse(text);
  return DOMPurify.sanitize(html, { ALLOWED_TAGS, ALLOWED_ATTR, ALLOW_DATA_ATTR: false, ADD_ATTR: ["target", "rel"] });
}

// Shows `text` in `el`: rendered Markdown, or plain text when the libraries are missing.
export function showText(el, text) {
  const html = renderMarkdown(text);
  if (html === null) {
    el.classList.add("plain");
    el.textContent = text;
  } else {
    el.innerHTML = html;
  }
}
