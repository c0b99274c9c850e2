// Compare mode: how many leading tokens two answers share. The engines stream one token per content chunk,
// so an answer's pieces are its tokens; the shared prefix is counted in the pieces of either answer that it
// covers whole. A diffusion model's stream (Transformers engine, X-Diffusion-Streaming) comes in blocks of many
// tokens, so a pair with one is compared in characters instead. The same weights in both engines agree for a while and then drift (numerics differ); different
// weights or quantizations usually differ at once.

function commonPrefixLength(a, b) {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n += 1;
  return n;
}

function piecesWithin(pieces, chars) {
  let used = 0;
  let count = 0;
  for (const piece of pieces) {
    if (used + piece.length > chars) break;
    used += piece.length;
    count += 1;
  }
  return count;
}

// {tokens, chars, identical, total}: the leading tokens both answers share (tokens and total null, counted in
// characters, when either answer's chunks are not tokens).
export function agreement(first, second) {
  const chars = commonPrefixLength(first.text, second.text);
  const identical = first.text === second.text;
  if (first.streaming || second.streaming) {
    return { tokens: null, chars, total: null, totalChars: Math.max(first.text.length, second.text.length), identical };
  }
  const tokens = Math.min(piecesWithin(first.pieces, chars), piecesWithin(second.pieces, chars));
  const total = Math.max(first.pieces.length, second.pieces.length);
  return { tokens, chars, total, identical };
}

export function describeAgreement({ tokens, total, chars, totalChars, identical }) {
  if (tokens === null) {
    if (identical) return `Both engines gave the same answer (${totalChars} characters).`;
    if (chars === 0) return "The answers differ from the first character.";
    return `The engines agree on the first ${chars} of ${totalChars} characters, then drift apart.`;
  }
  if (identical) return `Both engines gave the same answer (${total} tokens).`;
  if (tokens === 0) return "The answers differ from the first token.";
  return `The engines agree on the first ${tokens} of ${total} tokens, then drift apart.`;
}

// One line for every pair of compared answers ({names: [a, b], ...agreement}): two engines read as before,
// three name each pair.
export function describeAgreements(pairs) {
  if (pairs.length === 1) return describeAgreement(pairs[0]);
  return pairs.map((pair) => {
    const [a, b] = pair.names;
    const unit = pair.tokens === null ? "characters" : "tokens";
    const shared = pair.tokens ?? pair.chars;
    const total = pair.total ?? pair.totalChars;
    if (pair.identical) return `${a} and ${b}: the same answer (${total} ${unit}).`;
    if (shared === 0) return `${a} and ${b}: different from the first ${unit.slice(0, -1)}.`;
    return `${a} and ${b}: the first ${shared} of ${total} ${unit} agree.`;
  }).join(" ");
}
