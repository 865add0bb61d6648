// The canvas keeps workflow files as they are (graph/convert.js). Run: node --test ui/web/test/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { workflowToFlow, flowToWorkflow, canConnect, REROUTE_PREFIX } from "../src/graph/convert.js";
import { indexDefs, newNodeInputs } from "../src/graph/defs.js";

const defs = indexDefs(JSON.parse(readFileSync(new URL("./fixtures/nodes.json", import.meta.url), "utf8")));
const types = defs.types;
const workflowsDir = new URL("../../../workflows/", import.meta.url);
const roundTrip = (wf) => flowToWorkflow(workflowToFlow(wf, types), types);
const load = (name) => JSON.parse(readFileSync(new URL(name, workflowsDir), "utf8"));

for (const name of readdirSync(workflowsDir).filter((n) => n.endsWith(".json"))) {
  test(`workflows/${name} comes back unchanged`, () => {
    const wf = load(name);
    assert.deepEqual(roundTrip(wf), wf);
  });
}

test("links become edges, constants stay on the node", () => {
  const flow = workflowToFlow(load("txt2img.json"), types);
  const sampler = flow.nodes.find((n) => n.id === "s");
  assert.equal(sampler.data.inputs.seed, 42);
  assert.ok(!("model" in sampler.data.inputs));
  assert.ok(flow.edges.some((e) => e.source === "ck" && e.sourceHandle === "model" && e.target === "s" && e.targetHandle === "model"));
});

test("a removed edge removes the link; the widget's constant comes back", () => {
  const flow = workflowToFlow(load("txt2img.json"), types);
  flow.edges = flow.edges.filter((e) => !(e.target === "pos" && e.targetHandle === "clip"));
  const wf = flowToWorkflow(flow, types);
  assert.deepEqual(wf.nodes.pos.inputs, { text: "a red circle at the top left and a blue square in the center" });
});

const withReroutes = () => {
  const wf = load("txt2img.json");
  wf.metadata.studio = {
    reroutes: [
      { id: "r1", position: [200, 300], from: { node: "ck", output: "vae" } },
      { id: "r2", position: [900, 400], from: { reroute: "r1" } },
    ],
    via: { "d/vae": "r2", "lat/vae": "r1" },
  };
  return wf;
};

test("reroutes are dots on the link; the workflow keeps the direct link", () => {
  const wf = withReroutes();
  const flow = workflowToFlow(wf, types);
  const dots = flow.nodes.filter((n) => n.type === "reroute").map((n) => n.id);
  assert.deepEqual(dots, [`${REROUTE_PREFIX}r1`, `${REROUTE_PREFIX}r2`]);
  const into = (target, handle) => flow.edges.find((e) => e.target === target && e.targetHandle === handle);
  assert.equal(into("d", "vae").source, `${REROUTE_PREFIX}r2`);
  assert.equal(into(`${REROUTE_PREFIX}r2`, "in").source, `${REROUTE_PREFIX}r1`);
  assert.equal(into(`${REROUTE_PREFIX}r1`, "in").source, "ck");
  assert.equal(into("lat", "vae").source, `${REROUTE_PREFIX}r1`);
  const back = flowToWorkflow(flow, types);
  assert.deepEqual(back, wf);
  assert.deepEqual(back.nodes.d.inputs.vae, { node: "ck", output: "vae" });
});

test("a via whose chain leads elsewhere is ignored: the link is drawn directly", () => {
  const wf = withReroutes();
  wf.metadata.studio.via = { "s/model": "r2" }; // r2 carries the VAE, not the model
  const flow = workflowToFlow(wf, types);
  const edge = flow.edges.find((e) => e.target === "s" && e.targetHandle === "model");
  assert.equal(edge.source, "ck");
  const back = flowToWorkflow(flow, types);
  assert.deepEqual(back.metadata.studio.via, {});
  assert.deepEqual(back.nodes, wf.nodes);
});

test("a reroute whose input is cut leaves the inputs it fed unlinked", () => {
  const flow = workflowToFlow(withReroutes(), types);
  flow.edges = flow.edges.filter((e) => e.target !== `${REROUTE_PREFIX}r1`);
  const wf = flowToWorkflow(flow, types);
  assert.ok(!("vae" in wf.nodes.d.inputs));
  assert.ok(!("vae" in wf.nodes.lat.inputs));
  assert.deepEqual(wf.metadata.studio.reroutes[0], { id: "r1", position: [200, 300] });
});

test("bypass and mute are the node's mode; a mode the studio does not know is kept as it came", () => {
  const wf = load("txt2img.json");
  wf.nodes.d.mode = "bypass";
  wf.nodes.neg.mode = "mute";
  wf.nodes.lat.mode = "sideways";
  const flow = workflowToFlow(wf, types);
  const byId = Object.fromEntries(flow.nodes.map((n) => [n.id, n]));
  assert.equal(byId.d.data.mode, "bypass");
  assert.equal(byId.neg.data.mode, "mute");
  assert.equal(byId.lat.data.mode, undefined);
  assert.deepEqual(flowToWorkflow(flow, types), wf);
  delete byId.d.data.mode;
  assert.ok(!("mode" in flowToWorkflow(flow, types).nodes.d));
});

test("unknown node types, odd entries, groups and notes come back as they were", () => {
  const wf = {
    version: 1,
    nodes: {
      mystery: { type: "FancyUpscaler", inputs: { image: { node: "ck", output: "vae" }, factor: 4, mode: [1, 2] }, position: [10, 20], extra_key: { a: 1 } },
      after: { type: "SaveImage", inputs: { images: { node: "mystery", output: "image" }, filename_prefix: "x" }, position: [400, 20] },
      ck: { type: "CheckpointLoader", inputs: { ckpt_name: "toy-sd", bogus: 3 }, position: [0, 0], size: [250, 120], color: "#335" },
      weird: "not a node",
      badinputs: { type: "ImageInvert", inputs: [1, 2], position: [5, 5] },
      dangling: { type: "VAEDecode", inputs: { vae: { node: "nowhere", output: "vae" }, latent: { node: "ck", output: "model" } }, position: [5, 5] },
    },
    groups: [{ title: "Box", bounds: [0, 0, 300, 200], color: "#444" }, { title: "broken", bounds: [1, 2] }],
    notes: [{ text: "hello", position: [50, 400], size: [200, 80] }, { text: "no position" }, 7],
    metadata: { description: "kept", studio: { seed_control: { s: { seed: "increment" } }, other: true } },
  };
  const flow = workflowToFlow(wf, types);
  const mystery = flow.nodes.find((n) => n.id === "mystery");
  assert.ok(mystery.data.unknown);
  assert.deepEqual(mystery.data.sockets, { inputs: ["image"], outputs: ["image"] });
  assert.ok(flow.edges.some((e) => e.source === "mystery" && e.target === "after"));
  // a link to a missing node or of the wrong type is kept in the inputs, not drawn
  assert.ok(!flow.edges.some((e) => e.target === "dangling"));
  assert.deepEqual(roundTrip(wf), wf);
});

test("connections must match types, one link per input, no loops", () => {
  const flow = workflowToFlow(load("txt2img.json"), types);
  const ok = (source, sourceHandle, target, targetHandle) =>
    canConnect(flow.nodes, flow.edges, { source, sourceHandle, target, targetHandle }, types);
  assert.ok(ok("ck", "vae", "d", "vae"));
  assert.ok(!ok("ck", "model", "d", "vae"));
  assert.ok(!ok("d", "image", "s", "latent"));
  assert.ok(!ok("s", "latent", "lat", "vae"));
});

test("nodes added on the canvas start from what is installed", () => {
  const models = { defaults: { ckpt_name: "toy-sd", width: 32, height: 48 } };
  assert.equal(newNodeInputs(types.CheckpointLoader, models).ckpt_name, "toy-sd");
  const latent = newNodeInputs(types.EmptyLatent, models);
  assert.equal(latent.width, 32);
  assert.equal(latent.height, 48);
  const sampler = newNodeInputs(types.Sampler, models);
  assert.equal(sampler.sampler, "dpmpp_2m_karras");
  assert.ok(!("model" in sampler));
  assert.equal(newNodeInputs(types.CheckpointLoader, {}).ckpt_name, types.CheckpointLoader.inputs[0].choices[0]);
});
