// Compare mode: how many leading tokens two answers share. Both engines stream one token per content chunk,
// so an answer's pieces are its tokens; the shared prefix is counted in the pieces of either answer that it
// covers whole. The same weights in both engines agree for a while and then drift (numerics differ); different
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

// {tokens, chars, identical, total}: the leading tokens both answers share.
export function agreement(first, second) {
  const chars = commonPrefixLength(first.text, second.text);
  const tokens = Math.min(piecesWithin(first.pieces, chars), piecesWithin(second.pieces, chars));
  const total = Math.max(first.pieces.length, second.pieces.length);
  return { tokens, chars, total, identical: first.text === second.text };
}

export function describeAgreement({ tokens, total, identical }) {
  if (identical) return `Both engines gave the same answer (${total} tokens).`;
  if (tokens === 0) return "The answers differ from the first token.";
  return `The engines agree on the first ${tokens} of ${total} tokens, then drift apart.`;
}
