// The graph slice (store/graph.js): tabs, edits, reroutes, modes, undo, copy/paste, autosave.
// Run: node --test ui/web/test/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createStore } from "zustand/vanilla";
import { graphSlice } from "../src/store/graph.js";
import { indexDefs } from "../src/graph/defs.js";
import { readSaved, savedForm, STORAGE_KEY } from "../src/tabs/autosave.js";

const defs = indexDefs(JSON.parse(readFileSync(new URL("./fixtures/nodes.json", import.meta.url), "utf8")));
const txt2img = JSON.parse(readFileSync(new URL("../../../workflows/txt2img.json", import.meta.url), "utf8"));
const models = { checkpoints: [{ name: "toy-sd" }], defaults: { ckpt_name: "toy-sd", width: 32, height: 32 } };

function studio() {
  const store = createStore((set, get, api) => ({ ...graphSlice(set, get, api), toast() {} }));
  store.setState({ defs, models, defsLoaded: true });
  return store.getState;
}

test("an opened workflow comes back as it was", () => {
  const s = studio();
  const tab = s().openWorkflow(txt2img, { title: "txt2img" });
  assert.equal(s().activeTabId, tab);
  assert.deepEqual(s().tabWorkflow(tab), txt2img);
  assert.equal(s().activeTab().dirty, false);
});

test("a node added on the canvas gets defaults from what is installed and a random seed control", () => {
  const s = studio();
  const tab = s().newTab();
  const ck = s().addNode(tab, "CheckpointLoader", { x: 0, y: 0 });
  const sampler = s().addNode(tab, "Sampler", { x: 300, y: 0 });
  const again = s().addNode(tab, "Sampler", { x: 300, y: 300 });
  assert.deepEqual([ck, sampler, again], ["checkpoint_loader", "sampler", "sampler_2"]);
  const wf = s().tabWorkflow(tab);
  assert.equal(wf.nodes.checkpoint_loader.inputs.ckpt_name, "toy-sd");
  assert.deepEqual(s().seedControls(tab), { sampler: { seed: "randomize" }, sampler_2: { seed: "randomize" } });
  assert.deepEqual(wf.metadata.studio.seed_control, s().seedControls(tab));
  assert.equal(s().activeTab().dirty, true);
});

test("links: types must match, a new link replaces the old one", () => {
  const s = studio();
  const tab = s().openWorkflow(txt2img);
  assert.equal(s().connect(tab, { source: "ck", sourceHandle: "model", target: "d", targetHandle: "vae" }), false);
  const other = s().addNode(tab, "VAELoader", { x: 0, y: 500 });
  assert.ok(s().connect(tab, { source: other, sourceHandle: "vae", target: "d", targetHandle: "vae" }));
  assert.deepEqual(s().tabWorkflow(tab).nodes.d.inputs.vae, { node: other, output: "vae" });
  assert.equal(s().activeTab().edges.filter((e) => e.target === "d" && e.targetHandle === "vae").length, 1);
});

test("a reroute keeps the direct link in the file; deleting it reconnects through", () => {
  const s = studio();
  const tab = s().openWorkflow(txt2img);
  const rid = s().insertReroute(tab, "e:d/latent", { x: 1100, y: 300 });
  let wf = s().tabWorkflow(tab);
  assert.deepEqual(wf.nodes.d.inputs.latent, { node: "s", output: "latent" });
  assert.deepEqual(wf.metadata.studio.via, { "d/latent": "r1" });
  assert.deepEqual(wf.metadata.studio.reroutes, [{ id: "r1", position: [1093, 293], from: { node: "s", output: "latent" } }]);
  s().deleteElements(tab, [rid], []);
  assert.deepEqual(s().tabWorkflow(tab), txt2img);
});

test("Ctrl+B / Ctrl+M toggle bypass and mute on the chosen nodes", () => {
  const s = studio();
  const tab = s().openWorkflow(txt2img);
  s().toggleMode(tab, ["d", "neg"], "bypass");
  assert.equal(s().tabWorkflow(tab).nodes.d.mode, "bypass");
  s().toggleMode(tab, ["d"], "mute");
  assert.equal(s().tabWorkflow(tab).nodes.d.mode, "mute");
  s().toggleMode(tab, ["d"], "mute");
  assert.ok(!("mode" in s().tabWorkflow(tab).nodes.d));
  assert.equal(s().tabWorkflow(tab).nodes.neg.mode, "bypass");
});

test("undo and redo step through edits; typing into one field is one step", () => {
  const s = studio();
  const tab = s().openWorkflow(txt2img);
  s().setNodeInput(tab, "pos", "text", "a");
  s().setNodeInput(tab, "pos", "text", "ab");
  s().setNodeInput(tab, "s", "steps", 7);
  assert.equal(s().getNodeInput(tab, "s", "steps"), 7);
  assert.ok(s().undo(tab));
  assert.equal(s().getNodeInput(tab, "s", "steps"), 20);
  assert.equal(s().getNodeInput(tab, "pos", "text"), "ab");
  assert.ok(s().undo(tab));
  assert.equal(s().getNodeInput(tab, "pos", "text"), txt2img.nodes.pos.inputs.text);
  assert.equal(s().undo(tab), false);
  assert.ok(s().redo(tab));
  assert.equal(s().getNodeInput(tab, "pos", "text"), "ab");
});

test("copy and paste: fresh ids, links among the copies kept, others dropped unless asked", () => {
  const s = studio();
  const tab = s().openWorkflow(txt2img);
  assert.equal(s().copySelection(tab, ["s", "d"]), 2);
  const pasted = s().paste(tab, { x: 0, y: 800 });
  assert.deepEqual(pasted.sort(), ["sampler", "vae_decode"]);
  let wf = s().tabWorkflow(tab);
  assert.deepEqual(wf.nodes.vae_decode.inputs, { latent: { node: "sampler", output: "latent" } });
  assert.equal(wf.nodes.sampler.inputs.seed, 42);
  // the copies keep their places relative to each other, their top-left corner at the point
  const [sx, sy] = txt2img.nodes.s.position;
  const [dx, dy] = txt2img.nodes.d.position;
  const left = Math.min(sx, dx);
  const top = Math.min(sy, dy);
  assert.deepEqual(wf.nodes.sampler.position, [sx - left, 800 + sy - top]);
  assert.deepEqual(wf.nodes.vae_decode.position, [dx - left, 800 + dy - top]);
  const linked = s().paste(tab, null, { keepLinks: true });
  wf = s().tabWorkflow(tab);
  const decode = linked.find((id) => id.startsWith("vae_decode"));
  assert.deepEqual(wf.nodes[decode].inputs.vae, { node: "ck", output: "vae" });
});

test("closing the last tab leaves a new empty one", () => {
  const s = studio();
  const tab = s().openWorkflow(txt2img);
  assert.ok(s().closeTab(tab));
  assert.equal(s().tabs.length, 1);
  assert.deepEqual(s().tabWorkflow(s().activeTabId), { version: 1, nodes: {} });
});

test("autosave writes each tab's workflow and reads it back", () => {
  const s = studio();
  const tab = s().openWorkflow(txt2img, { title: "mine" });
  s().setNodeInput(tab, "s", "steps", 9);
  const memory = new Map();
  const storage = { getItem: (k) => memory.get(k) ?? null, setItem: (k, v) => memory.set(k, v) };
  storage.setItem(STORAGE_KEY, JSON.stringify(savedForm(s())));
  const saved = readSaved(storage);
  assert.equal(saved.tabs.length, 1);
  assert.equal(saved.tabs[0].title, "mine");
  assert.equal(saved.tabs[0].id, tab);
  assert.equal(saved.tabs[0].dirty, true);
  assert.equal(saved.tabs[0].workflow.nodes.s.inputs.steps, 9);
  assert.equal(readSaved({ getItem: () => "not json" }), null);
});
