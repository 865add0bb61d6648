// The Train panel's logic without React or the network: which node a kind trains with, the
// settings it shows, the workflow it queues, pictures paired with their captions, and what a
// training job's events mean for the panel (one reducer). node:test checks it
// (ui/web/test/train.test.mjs).
import { startMeter, updateMeter } from "../run/progress.js";

// The node of each kind (nodes/training.py) and the node id the panel's workflow gives it.
export const NODE_TYPES = { lora: "TrainLoRA", embedding: "TrainEmbedding" };
export const TRAIN_NODE = "train";
export const KIND_WORDS = { lora: "LoRA", embedding: "embedding" };

// The settings shown at once; the rest fold under "Advanced" (all read from the node's definition).
export const MAIN_SETTINGS = ["steps"];
export const ADVANCED_SETTINGS = {
  lora: [
    "learning_rate",
    "batch",
    "rank",
    "targets",
    "resolution",
    "seed",
    "max_minutes",
    "train_text_encoder",
    "prior_preservation",
    "class_prompt",
    "num_class_images",
    "prior_weight",
    "prior_target",
    "pivotal",
    "init_word",
    "vectors",
    "token_learning_rate",
    "protect_prompts",
    "protect_share",
    "snr_gamma",
    "shift",
    "timestep_bias",
  ],
  embedding: ["init_word", "vectors", "learning_rate", "batch", "resolution", "seed", "max_minutes"],
};

// A LoRA's settings that only mean something with pivotal tuning on (the new word's rows).
export const PIVOTAL_SETTINGS = ["init_word", "vectors", "token_learning_rate"];

// A LoRA's settings that only mean something with targets "cross" (the prompts it leaves alone).
export const PROTECT_SETTINGS = ["protect_prompts", "protect_share"];

// The Advanced settings to show for the values chosen so far: a LoRA's word settings only with
// pivotal, its protected prompts only with targets "cross".
export function advancedSettings(kind, values) {
  const all = ADVANCED_SETTINGS[kind] || [];
  if (kind !== "lora") return all;
  const hidden = [
    ...(values && values.pivotal ? [] : PIVOTAL_SETTINGS),
    ...(values && values.targets === "cross" ? [] : PROTECT_SETTINGS),
  ];
  return all.filter((name) => !hidden.includes(name));
}

// Labels where the input's name, in words, would not say it (the rest: "prior_weight" -> "Prior weight").
export const SETTING_LABELS = {
  snr_gamma: "Min-SNR gamma",
  pivotal: "Pivotal tuning (the token is a new word)",
  token_learning_rate: "Word learning rate",
};

// Picture types a dataset takes (server/datasets.py) and their captions' suffix.
export const PICTURE_SUFFIXES = [".png", ".jpg", ".jpeg", ".webp"];
const NAME_OK = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

const suffixOf = (name) => {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(dot).toLowerCase() : "";
};
const stemOf = (name) => {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(0, dot) : name;
};

export const isPicture = (name) => PICTURE_SUFFIXES.includes(suffixOf(name));
export const isCaption = (name) => suffixOf(name) === ".txt";

// Why `name` cannot name a new file or dataset, or null when it can.
export function nameProblem(name) {
  const text = String(name || "").trim();
  if (!text) return "give it a name";
  if (!NAME_OK.test(text) || text.includes("..")) return "use letters, digits, '_', '.' or '-' (at most 64)";
  return null;
}

// The token a name suggests: "my-star" -> "<my-star>".
export const tokenFor = (name) => `<${String(name || "concept").trim() || "concept"}>`;

// Chosen files -> [{file, name, caption}] for the pictures, each with the text of the .txt of
// the same stem when one was chosen too (readText(file) -> Promise<string>); other files are
// left out and counted.
export async function pairCaptions(files, readText) {
  const list = Array.from(files || []);
  const captions = new Map();
  for (const file of list) {
    if (isCaption(file.name)) captions.set(stemOf(file.name), file);
  }
  const pictures = [];
  let skipped = 0;
  for (const file of list) {
    if (isPicture(file.name)) {
      const text = captions.has(stemOf(file.name)) ? await readText(captions.get(stemOf(file.name))) : "";
      pictures.push({ file, name: file.name, caption: text.split(/\s+/).filter(Boolean).join(" ") });
    } else if (!isCaption(file.name)) {
      skipped += 1;
    }
  }
  return { pictures, skipped };
}

// The checkpoints training can start from (GET /api/models): text-to-image SD 1.x/2.x (and the
// toy ones, and those not known); every checkpoint when none is.
export function trainableCheckpoints(models, choices) {
  const known = new Map(((models && models.checkpoints) || []).map((c) => [c.name, c]));
  const fits = (name) => {
    const info = known.get(name);
    if (!info) return true;
    const family = ["sd1", "sd2", "toy", "unknown"].includes(info.family);
    return family && (info.in_channels === 4 || info.in_channels === null || info.in_channels === undefined);
  };
  const list = (choices || []).filter(fits);
  return list.length ? list : [...(choices || [])];
}

// The node definition's default for each of its inputs.
export function defaultsOf(def) {
  const out = {};
  for (const spec of (def && def.inputs) || []) if ("default" in spec) out[spec.name] = spec.default;
  return out;
}

// The settings as a kind's node takes them: its defaults, then what was changed (`form`:
// {kind: {input: value}}); the token follows the name ("my-star" -> "<my-star>") until it is
// changed itself.
export function valuesOf(kind, form, def) {
  const changed = (form || {})[kind] || {};
  const values = { ...defaultsOf(def), ...changed };
  if (changed.token === undefined) values.token = tokenFor(values.name);
  return values;
}

// The workflow the panel queues: one training node (an output node), named for the history.
export function trainingWorkflow(kind, form, def) {
  const type = NODE_TYPES[kind];
  const wanted = new Set(((def && def.inputs) || []).map((s) => s.name));
  const inputs = {};
  for (const [key, value] of Object.entries(form)) if (wanted.has(key)) inputs[key] = value;
  return {
    version: 1,
    metadata: { name: `Train ${KIND_WORDS[kind]}: ${form.name}` },
    nodes: { [TRAIN_NODE]: { type, inputs, position: [40, 40] } },
  };
}

// How the trained file is used: LoraLoader's lora_name, or the word a prompt takes.
export function usage(kind, fileName, token = "") {
  const stem = stemOf(fileName || "");
  const word = String(token || "").trim();
  if (kind === "lora") {
    const say = word ? ` and say ${word} in the prompt` : "";
    return { loraName: fileName, text: `Load it with a Load LoRA node (${fileName})${say}.` };
  }
  return { word: `embedding:${stem}`, text: `Write embedding:${stem} in a prompt.` };
}

// ---- a training job, as the panel follows it --------------------------------------------------

// Steps whose mean loss the panel shows (nodes/training.py LAST_STEPS: its plot and output too).
export const LOSS_WINDOW = 20;

export function newTraining(jobId, { kind, name, steps, token }, now = Date.now()) {
  return {
    jobId,
    kind,
    name,
    token: token || "", // a LoRA's trigger word, for how to use it at the end
    status: "queued",
    step: 0,
    total: steps || 0,
    loss: null, // the mean of the last LOSS_WINDOW steps' losses (as the node's plot title and output)
    recent: [],
    rate: null,
    eta: null,
    meter: startMeter(now),
    previewSeq: 0,
    lastSeq: 0,
    error: null,
    result: null, // the node's results when done: {name, loss, steps_done}
    ended: false,
  };
}

// One event of the job (docs/api.md "Event kinds") -> the next training record.
export function applyTrainEvent(training, event, now = Date.now()) {
  const seq = event.seq || 0;
  if (seq && seq <= training.lastSeq) return training; // seen already (a reconnect)
  let t = { ...training, lastSeq: Math.max(training.lastSeq, seq) };
  const ours = event.node_id === undefined || event.node_id === TRAIN_NODE;
  switch (event.event) {
    case "job_started":
    case "run_started":
      return { ...t, status: "running" };
    case "node_started":
      return ours ? { ...t, status: "running", meter: startMeter(now) } : t;
    case "node_progress": {
      if (!ours) return t;
      // timed from the first step on (before it the model loads, which says nothing of the pace)
      const first = t.step === 0 || event.step < t.step;
      const timed = first
        ? { meter: { since: now, lastStep: event.step, lastTime: now, rate: null }, rate: null, eta: null }
        : updateMeter(t.meter, event.step, event.total, now);
      const { meter, rate, eta } = timed;
      let recent = first ? [] : t.recent;
      const stepLoss = event.metrics?.loss;
      if (typeof stepLoss === "number" && Number.isFinite(stepLoss)) recent = [...recent, stepLoss].slice(-LOSS_WINDOW);
      const loss = recent.length ? recent.reduce((a, b) => a + b, 0) / recent.length : t.loss;
      return { ...t, status: "running", step: event.step, total: event.total, meter, rate, eta, recent, loss };
    }
    case "node_preview":
      return ours ? { ...t, previewSeq: seq || t.previewSeq + 1 } : t;
    case "node_failed": {
      const where = event.input ? ` (${event.input})` : "";
      return { ...t, error: `${event.message}${where}` };
    }
    case "job_finished": {
      const results = event.results && event.results[TRAIN_NODE];
      t = { ...t, status: event.status || "done", ended: true, eta: null };
      if (results) t.result = results;
      if (!t.error && event.error && t.status !== "done" && t.status !== "cancelled") t.error = event.error;
      return t;
    }
    default:
      return t;
  }
}

// The line under the progress bar: "step 12/500 · loss 0.0123 · 3.4 it/s · 1:20 left".
export function progressWords(t, formatRate, formatDuration) {
  if (t.status === "queued") return "waiting in the queue";
  const parts = [];
  if (t.step > 0) parts.push(`step ${t.step}/${t.total}`);
  else if (!t.ended) parts.push("loading the model");
  if (t.loss !== null) parts.push(`loss ${t.loss.toFixed(4)}`);
  if (!t.ended) {
    const rate = formatRate(t.rate);
    if (rate) parts.push(rate);
    if (t.eta !== null && t.total > 0) parts.push(`${formatDuration(t.eta)} left`);
  }
  return parts.join(" · ");
}
