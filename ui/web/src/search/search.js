// Node search as people type: fuzzy matching over display names, type names, aliases (ComfyUI's
// names), categories, input names and the words of the description. Case-insensitive; each word
// of the query must match a word of the node somewhere: whole word, word prefix ("vae dec"),
// inside a word, or as a subsequence ("ckpt" -> Checkpoint). Pure module (no React, no DOM).
import { ANY, COMMON_TYPES, compatible, displayName, hasSocket, splitTypeName } from "../graph/defs.js";

// how much a match in each field counts (names count most)
const FIELD_WEIGHT = { name: 1, alias: 0.95, category: 0.5, input: 0.45, description: 0.3 };
// how good a match of a query word to a word is
const EXACT = 10;
const PREFIX = 7;
const INSIDE = 4;
const SUBSEQUENCE = 2.5;

/** Lower-case words of a text: split at spaces, punctuation and camelCase; joined camelCase too. */
export function words(text) {
  const out = [];
  for (const chunk of String(text || "").split(/[^A-Za-z0-9]+/)) {
    if (!chunk) continue;
    const lower = chunk.toLowerCase();
    const parts = splitTypeName(chunk).toLowerCase().split(" ").filter(Boolean);
    out.push(...parts);
    if (parts.length > 1) out.push(lower);
  }
  return out;
}

/** "VAE Decode" -> "vaedecode": names compared ignoring spaces and punctuation. */
function squash(text) {
  return String(text || "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "");
}

/** Subsequence match of `query` in `word`: a score in (0, 1], higher for tighter, earlier matches; 0 when none. */
function subsequence(query, word) {
  if (query.length < 2 || query[0] !== word[0]) return 0;
  let at = 0;
  let gaps = 0;
  for (const ch of query) {
    const found = word.indexOf(ch, at);
    if (found < 0) return 0;
    gaps += found - at;
    at = found + 1;
  }
  return 1 / (1 + gaps / query.length);
}

function wordScore(query, word) {
  if (word === query) return EXACT;
  if (word.startsWith(query)) return PREFIX + query.length / word.length;
  if (query.length >= 3 && word.includes(query)) return INSIDE;
  const sub = subsequence(query, word);
  return sub ? SUBSEQUENCE * sub : 0;
}

/** What a node is searched by: its fields as word lists, with their weights. */
export function searchFields(def) {
  const name = displayName(def);
  const aliases = Array.isArray(def.aliases) ? def.aliases : [];
  return {
    names: [name, def.type, ...aliases].map(squash),
    fields: [
      { weight: FIELD_WEIGHT.name, words: [...words(name), ...words(def.type)] },
      { weight: FIELD_WEIGHT.alias, words: aliases.flatMap(words) },
      { weight: FIELD_WEIGHT.category, words: words(def.category) },
      { weight: FIELD_WEIGHT.input, words: (def.inputs || []).flatMap((s) => words(s.name)) },
      { weight: FIELD_WEIGHT.description, words: words(def.description) },
    ],
  };
}

/** How well `def` matches `query` (0 = not at all). */
export function scoreNode(def, query, fields = searchFields(def)) {
  const q = String(query || "").trim();
  if (!q) return 1;
  const terms = words(q).filter((w, i, all) => all.indexOf(w) === i);
  // camelCase joins ("ksampler" from "KSampler") are alternatives, not extra words to match
  const parts = q.split(/[^A-Za-z0-9]+/).filter(Boolean).map((p) => p.toLowerCase());
  let total = 0;
  for (const part of parts) {
    const alternatives = [part, ...words(part)].filter((w, i, all) => all.indexOf(w) === i);
    let best = 0;
    for (const field of fields.fields) {
      for (const word of field.words) {
        for (const term of alternatives) {
          const score = wordScore(term, word) * field.weight;
          if (score > best) best = score;
        }
      }
    }
    if (!best) return 0;
    total += best;
  }
  if (!terms.length) return 0;
  const whole = squash(q);
  if (fields.names.some((n) => n === whole)) total += 25;
  else {
    // the start of a name, when it covers most of it ("empty latent" -> "Empty Latent Image")
    const cover = Math.max(0, ...fields.names.filter((n) => n.startsWith(whole)).map((n) => whole.length / n.length));
    if (cover >= 0.5) total += 8 * cover;
  }
  return total;
}

function commonRank(type) {
  const i = COMMON_TYPES.indexOf(type);
  return i < 0 ? COMMON_TYPES.length : i;
}

/**
 * Whether a node can take a link of `type` into one of its inputs (`from: "output"`: a link
 * dragged out of an output) or give one out of its outputs (`from: "input"`).
 */
export function fitsLink(def, link) {
  return linkFit(def, link) > 0;
}

/** 2: a socket of the link's own type; 1: only through "*"; 0: none. */
function linkFit(def, link) {
  if (!link) return 1;
  const types =
    link.from === "output"
      ? (def.inputs || []).filter((s) => hasSocket(s) && compatible(link.type, s.type)).map((s) => s.type)
      : (def.outputs || []).filter((o) => compatible(o.type, link.type)).map((o) => o.type);
  if (!types.length) return 0;
  return types.includes(link.type) && link.type !== ANY ? 2 : 1;
}

/**
 * The node descriptions matching `query`, best first. `link` ({from: "output"|"input", type})
 * keeps only nodes that can connect to a dragged link. Ties go to everyday nodes, then shorter names.
 */
export function searchNodes(list, query, { link = null, limit = 50 } = {}) {
  const scored = [];
  for (const def of list) {
    if (!def || !def.type) continue;
    const fit = linkFit(def, link);
    if (!fit) continue;
    const score = scoreNode(def, query);
    // a node taking the link's own type goes before one that takes anything
    if (score > 0) scored.push({ def, score: score + (fit === 2 ? 0.5 : 0) });
  }
  scored.sort(
    (a, b) =>
      b.score - a.score ||
      commonRank(a.def.type) - commonRank(b.def.type) ||
      displayName(a.def).length - displayName(b.def).length ||
      displayName(a.def).localeCompare(displayName(b.def)),
  );
  return scored.slice(0, limit).map((s) => s.def);
}

/** Node descriptions by category for the library panel: [[category, [def...]]], sorted. */
export function byCategory(list) {
  const groups = new Map();
  for (const def of list) {
    const category = def.category || "other";
    if (!groups.has(category)) groups.set(category, []);
    groups.get(category).push(def);
  }
  for (const defs of groups.values()) defs.sort((a, b) => displayName(a).localeCompare(displayName(b)));
  return [...groups.entries()].sort((a, b) => a[0].localeCompare(b[0]));
}
