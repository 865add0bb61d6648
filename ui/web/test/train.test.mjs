// train/train.js: the Train panel's workflow, pictures paired with captions, and the reducer
// that turns a training job's events into what the panel shows.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ADVANCED_SETTINGS,
  PIVOTAL_SETTINGS,
  advancedSettings,
  PROTECT_SETTINGS,
  applyTrainEvent,
  nameProblem,
  newTraining,
  pairCaptions,
  progressWords,
  trainableCheckpoints,
  trainingWorkflow,
  usage,
  valuesOf,
} from "../src/train/train.js";
import { formatDuration, formatRate } from "../src/run/progress.js";

const DEF = {
  type: "TrainLoRA",
  inputs: [
    { name: "ckpt_name", type: "STRING" },
    { name: "dataset", type: "STRING", default: "" },
    { name: "name", type: "STRING", default: "my-concept" },
    { name: "token", type: "STRING", default: "<concept>" },
    { name: "steps", type: "INT", default: 500 },
    { name: "rank", type: "INT", default: 4 },
  ],
};

test("the settings are the node's defaults, the token following the name until it is set", () => {
  assert.deepEqual(valuesOf("lora", {}, DEF), {
    dataset: "",
    name: "my-concept",
    token: "<my-concept>",
    steps: 500,
    rank: 4,
  });
  assert.equal(valuesOf("lora", { lora: { name: "star" } }, DEF).token, "<star>");
  assert.equal(valuesOf("lora", { lora: { name: "star", token: "sks" } }, DEF).token, "sks");
  assert.equal(valuesOf("embedding", { lora: { name: "star" } }, DEF).name, "my-concept"); // per kind
});

test("the workflow is one training node with the inputs it declares, named for the history", () => {
  const form = { ...valuesOf("lora", {}, DEF), ckpt_name: "toy-sd", dataset: "stars", stray: 1 };
  const workflow = trainingWorkflow("lora", form, DEF);
  assert.equal(workflow.metadata.name, "Train LoRA: my-concept");
  assert.deepEqual(Object.keys(workflow.nodes), ["train"]);
  assert.equal(workflow.nodes.train.type, "TrainLoRA");
  assert.equal(workflow.nodes.train.inputs.dataset, "stars");
  assert.ok(!("stray" in workflow.nodes.train.inputs));
});

test("pictures take the caption of the .txt of the same name; other files are counted out", async () => {
  const file = (name, text = "") => ({ name, text });
  const { pictures, skipped } = await pairCaptions(
    [file("a.png"), file("a.txt", " a red\n<star> "), file("b.JPG"), file("notes.pdf"), file("c.txt", "alone")],
    async (f) => f.text,
  );
  assert.deepEqual(
    pictures.map((p) => [p.name, p.caption]),
    [
      ["a.png", "a red <star>"],
      ["b.JPG", ""],
    ],
  );
  assert.equal(skipped, 1);
});

test("names that cannot name a file are caught before anything is sent", () => {
  assert.equal(nameProblem("my-star_2.v1"), null);
  for (const bad of ["", "  ", "../x", "a/b", ".hidden", "with space", "x".repeat(65)]) assert.ok(nameProblem(bad), bad);
});

test("only checkpoints training can start from are offered, when they are known", () => {
  const models = {
    checkpoints: [
      { name: "toy-sd", family: "toy", in_channels: 4 },
      { name: "toy-ip2p", family: "toy", in_channels: 8 },
      { name: "xl", family: "sdxl", in_channels: 4 },
      { name: "sd15.safetensors", family: "sd1", in_channels: null },
    ],
  };
  assert.deepEqual(trainableCheckpoints(models, ["sd15.safetensors", "toy-ip2p", "toy-sd", "xl", "new"]), [
    "sd15.safetensors",
    "toy-sd",
    "new",
  ]);
  assert.deepEqual(trainableCheckpoints(models, ["xl"]), ["xl"]); // nothing fits: all, the server says why
});

test("a training job's events: steps with the mean loss, timed from the first step, plots, the end", () => {
  let t = newTraining("j1", { kind: "lora", name: "star", steps: 4 }, 0);
  const feed = (event, now) => {
    t = applyTrainEvent(t, event, now);
  };
  feed({ seq: 1, event: "job_started" }, 0);
  feed({ seq: 2, event: "node_started", node_id: "train" }, 0);
  assert.equal(progressWords(t, formatRate, formatDuration), "loading the model");
  feed({ seq: 3, event: "node_progress", node_id: "train", step: 1, total: 4, metrics: { loss: 0.3 } }, 30000);
  assert.equal(t.rate, null); // the model's loading is not a step
  feed({ seq: 4, event: "node_progress", node_id: "train", step: 2, total: 4, metrics: { loss: 0.1 } }, 30500);
  assert.equal(t.rate, 2);
  assert.ok(Math.abs(t.loss - 0.2) < 1e-12);
  assert.equal(progressWords(t, formatRate, formatDuration), "step 2/4 · loss 0.2000 · 2.0 it/s · 0:01 left");
  feed({ seq: 5, event: "node_preview", node_id: "train", image: { shape: [1, 320, 600, 3] } }, 30600);
  assert.equal(t.previewSeq, 5);
  feed({ seq: 4, event: "node_progress", node_id: "train", step: 2, total: 4, metrics: { loss: 9 } }, 30700); // a replay
  assert.ok(Math.abs(t.loss - 0.2) < 1e-12);
  feed({ seq: 9, event: "job_finished", status: "done", results: { train: { name: "star.safetensors", steps_done: 4 } } }, 31000);
  assert.equal(t.ended, true);
  assert.deepEqual(t.result, { name: "star.safetensors", steps_done: 4 });
});

test("a failure keeps the node's words and the input it names", () => {
  let t = newTraining("j2", { kind: "embedding", name: "x", steps: 10 });
  t = applyTrainEvent(t, { seq: 1, event: "node_failed", node_id: "train", message: "models/loras already has 'x'", input: "name" });
  t = applyTrainEvent(t, { seq: 2, event: "job_finished", status: "failed", error: "node 'train' ..." });
  assert.equal(t.error, "models/loras already has 'x' (name)");
  assert.equal(t.status, "failed");
});

test("how the file is used: LoraLoader's name, or the prompt's word", () => {
  assert.equal(usage("lora", "star.safetensors").loraName, "star.safetensors");
  assert.equal(
    usage("lora", "star.safetensors", "<star>").text,
    "Load it with a Load LoRA node (star.safetensors) and say <star> in the prompt.",
  );
  assert.equal(usage("lora", "star.safetensors").text, "Load it with a Load LoRA node (star.safetensors).");
  assert.equal(usage("embedding", "star.safetensors").word, "embedding:star");
});

test("a LoRA's new-word settings show only with pivotal tuning, its protected prompts only with targets cross; an embedding's always", () => {
  const plain = advancedSettings("lora", { pivotal: false });
  assert.ok(plain.includes("pivotal") && plain.includes("snr_gamma"));
  assert.ok(PIVOTAL_SETTINGS.every((name) => !plain.includes(name)));
  assert.deepEqual(
    advancedSettings("lora", { pivotal: true }),
    ADVANCED_SETTINGS.lora.filter((name) => !PROTECT_SETTINGS.includes(name)),
  );
  assert.deepEqual(advancedSettings("lora", { pivotal: true, targets: "cross" }), ADVANCED_SETTINGS.lora);
  assert.ok(PROTECT_SETTINGS.every((name) => ADVANCED_SETTINGS.lora.includes(name) && !plain.includes(name)));
  const cross = advancedSettings("lora", { pivotal: false, targets: "cross" });
  assert.ok(PROTECT_SETTINGS.every((name) => cross.includes(name)));
  assert.ok(PIVOTAL_SETTINGS.every((name) => ADVANCED_SETTINGS.lora.includes(name)));
  assert.deepEqual(advancedSettings("embedding", {}), ADVANCED_SETTINGS.embedding);
  assert.ok(advancedSettings("embedding", {}).includes("init_word"));
});
