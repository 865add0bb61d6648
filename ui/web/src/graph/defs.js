// Node definitions as GET /api/nodes describes them, and what the canvas derives from them:
// socket colours, which widget an input gets, display names, fresh node ids and the values
// a node added on the canvas starts with. Pure functions (no React, no DOM): node's test
// runner imports this module.

/** The colour of a socket type the server named none for (GET /api/sockets gives them). */
export const FALLBACK_COLOR = "#9e9e9e";
export const ANY = "*";

/** Types whose values a workflow file can hold as constants (nodes/types.py CONSTANT_TYPES). */
export const CONSTANT_TYPES = new Set(["STRING", "INT", "FLOAT", "BOOLEAN"]);

/** The node types a new graph is mostly made of: search ranks them first among equals. */
export const COMMON_TYPES = [
  "CheckpointLoader",
  "CLIPTextEncode",
  "Sampler",
  "VAEDecode",
  "EmptyLatent",
  "SaveImage",
  "PreviewImage",
  "LoadImage",
  "VAEEncode",
  "LoraLoader",
  "ControlNetApply",
  "ControlNetLoader",
];

export function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** {node, output}: a link in a workflow file. */
export function isLink(value) {
  return isObject(value) && typeof value.node === "string" && typeof value.output === "string";
}

/** Whether an output of `from` may feed an input of `to` (nodes/types.py compatible). */
export function compatible(from, to) {
  return from === to || from === ANY || to === ANY;
}

export function socketColor(type, colors) {
  return (colors && colors[type]) || FALLBACK_COLOR;
}

/** The definitions as the store keeps them: {types: {TYPE: def}, list, colors}. */
export function indexDefs(answer, socketColors = {}) {
  const list = Array.isArray(answer) ? answer : answer && Array.isArray(answer.nodes) ? answer.nodes : [];
  const types = {};
  for (const def of list) if (isObject(def) && typeof def.type === "string") types[def.type] = def;
  const colors = { ...(isObject(socketColors) ? socketColors : {}) };
  return { types, list: Object.values(types), colors };
}

/** "VAEDecode" -> "VAE Decode", "CLIPTextEncode" -> "CLIP Text Encode", "unCLIPLoader" -> "un CLIP Loader". */
export function splitTypeName(type) {
  return String(type)
    .replace(/_/g, " ")
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1 $2")
    .replace(/\s+/g, " ")
    .trim();
}

export function displayName(def) {
  if (!def) return "";
  return typeof def.display_name === "string" && def.display_name ? def.display_name : splitTypeName(def.type);
}

/** "ImageInvert" -> "image_invert": the stem of fresh node ids. */
export function idStem(type) {
  const stem = String(type)
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1_$2")
    .replace(/[^A-Za-z0-9_]+/g, "_")
    .toLowerCase()
    .replace(/^_+|_+$/g, "");
  return stem || "node";
}

/** A node id not in `taken` (a Set): the type's stem, then stem_2, stem_3 ... */
export function freshId(type, taken) {
  const stem = idStem(type);
  if (!taken.has(stem)) return stem;
  for (let i = 2; ; i++) if (!taken.has(`${stem}_${i}`)) return `${stem}_${i}`;
}

/** Whether the input takes a link (it has a socket). */
export function hasSocket(spec) {
  return spec.accepts !== "constant";
}

/** Whether the input is edited on the node (it takes constants of a type a file can hold). */
export function hasWidget(spec) {
  return spec.accepts !== "link" && CONSTANT_TYPES.has(spec.type);
}

/** "combo" | "int" | "float" | "boolean" | "textarea" | "text": how an input is edited. */
export function widgetKind(spec) {
  if (Array.isArray(spec.choices) && spec.choices.length) return "combo";
  if (spec.type === "INT") return "int";
  if (spec.type === "FLOAT") return "float";
  if (spec.type === "BOOLEAN") return "boolean";
  if (spec.multiline) return "textarea";
  return "text";
}

/** Whether the input gets a "control after run" select (fixed / increment / randomize). */
export function isSeedInput(spec) {
  return spec.type === "INT" && spec.name === "seed";
}

export const SEED_CONTROLS = ["fixed", "increment", "randomize"];

/** The step a number widget moves by. */
export function numberStep(spec) {
  if (typeof spec.step === "number" && spec.step > 0) return spec.step;
  return spec.type === "INT" ? 1 : 0.01;
}

/** Decimals shown for a FLOAT with this step (0.05 -> 2, 0.001 -> 3), at least 1 for floats. */
export function stepDecimals(spec) {
  if (spec.type === "INT") return 0;
  const step = numberStep(spec);
  if (step >= 1) return 1;
  return Math.min(6, Math.max(1, Math.ceil(-Math.log10(step) - 1e-9)));
}

/** A number made acceptable for the input: finite, whole for INT, inside min/max, rounded to the step's decimals. */
export function clampNumber(spec, value, fallback = 0) {
  let number = typeof value === "number" ? value : Number(String(value).trim());
  if (!Number.isFinite(number)) number = fallback;
  if (spec.type === "INT") number = Math.round(number);
  else number = Number(number.toFixed(Math.max(stepDecimals(spec), 6)));
  if (typeof spec.min === "number" && number < spec.min) number = spec.min;
  if (typeof spec.max === "number" && number > spec.max) number = spec.max;
  return number;
}

/** The value an input's widget shows when the file gives none. */
export function typeDefault(spec) {
  if (Array.isArray(spec.choices) && spec.choices.length) {
    return "default" in spec && spec.choices.includes(spec.default) ? spec.default : spec.choices[0];
  }
  if ("default" in spec && spec.default !== null && spec.default !== undefined) return spec.default;
  if (spec.type === "INT" || spec.type === "FLOAT") return typeof spec.min === "number" && spec.min > 0 ? spec.min : 0;
  if (spec.type === "BOOLEAN") return false;
  return "";
}

const SIZE_NODES = new Set(["EmptyLatent", "EmptyImage"]);

/**
 * The inputs a node added on the canvas starts with: every widget's value, taken from what
 * is installed where that helps (the first checkpoint, its native size).
 */
export function newNodeInputs(def, models) {
  const inputs = {};
  const defaults = (models && models.defaults) || {};
  for (const spec of def.inputs || []) {
    if (!hasWidget(spec)) continue;
    let value;
    if (spec.name === "ckpt_name" && typeof defaults.ckpt_name === "string" && defaults.ckpt_name) {
      value = defaults.ckpt_name;
    } else if (SIZE_NODES.has(def.type) && (spec.name === "width" || spec.name === "height") && Number.isFinite(defaults[spec.name])) {
      value = clampNumber(spec, defaults[spec.name]);
    } else if (spec.optional && !("default" in spec) && !(Array.isArray(spec.choices) && spec.choices.length)) {
      continue; // an optional input without a default: not given
    } else if ("default" in spec && spec.default === null && !(Array.isArray(spec.choices) && spec.choices.length)) {
      if (!spec.required) continue; // null means "not given"
      value = typeDefault(spec);
    } else {
      value = typeDefault(spec);
    }
    inputs[spec.name] = value;
  }
  return inputs;
}

/** Whether a constant from a file can sit in the widget made for `spec`. */
export function fitsWidget(spec, value) {
  if (spec.type === "INT") return typeof value === "number" && Number.isInteger(value);
  if (spec.type === "FLOAT") return typeof value === "number";
  if (spec.type === "BOOLEAN") return typeof value === "boolean";
  return typeof value === "string";
}

/** Whether the node draws pictures (its outputs, or LoadImage's input picture). */
export function showsImages(def) {
  if (!def) return false;
  return Boolean(def.output_node) || def.type === "LoadImage" || (def.inputs || []).some((s) => s.file_list);
}
