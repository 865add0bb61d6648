// Node search finds what people type (issue 14, point 5). Run: node --test ui/web/test/
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { searchNodes, byCategory, words } from "../src/search/search.js";

const { nodes } = JSON.parse(readFileSync(new URL("./fixtures/nodes.json", import.meta.url), "utf8"));
const first = (query, options) => searchNodes(nodes, query, options)[0]?.type;

const cases = {
  KSampler: "Sampler",
  ksampler: "Sampler",
  "Load Checkpoint": "CheckpointLoader",
  "load checkpoint": "CheckpointLoader",
  ckpt: "CheckpointLoader",
  "vae decode": "VAEDecode",
  "vae dec": "VAEDecode",
  VAEDecode: "VAEDecode",
  "empty latent": "EmptyLatent",
  prompt: "CLIPTextEncode",
  "save image": "SaveImage",
  "load image": "LoadImage",
  "KSampler Advanced": "SamplerAdvanced",
  EmptyLatentImage: "EmptyLatent",
  "upscale image by": "ImageScaleBy",
};
for (const [query, type] of Object.entries(cases)) {
  test(`"${query}" finds ${type} first`, () => assert.equal(first(query), type));
}

test("every word must match somewhere", () => {
  assert.deepEqual(searchNodes(nodes, "vae zebra"), []);
});

test("the empty query lists everything, everyday nodes first", () => {
  const all = searchNodes(nodes, "", { limit: 1000 });
  assert.equal(all.length, nodes.length);
  assert.equal(all[0].type, "CheckpointLoader");
});

test("a dragged link keeps only nodes that can take it", () => {
  const fromVae = searchNodes(nodes, "", { link: { from: "output", type: "VAE" }, limit: 1000 }).map((d) => d.type);
  assert.ok(fromVae.includes("VAEDecode"));
  assert.ok(!fromVae.includes("SaveImage"));
  const intoImage = searchNodes(nodes, "", { link: { from: "input", type: "IMAGE" }, limit: 1000 }).map((d) => d.type);
  assert.ok(intoImage.includes("LoadImage"));
  assert.ok(!intoImage.includes("CheckpointLoader"));
  assert.equal(first("decode", { link: { from: "output", type: "LATENT" } }), "VAEDecode");
});

test("words split camelCase and keep acronyms", () => {
  assert.deepEqual(words("VAEDecode"), ["vae", "decode", "vaedecode"]);
  assert.deepEqual(words("CLIP Text Encode (Prompt)"), ["clip", "text", "encode", "prompt"]);
});

test("the library groups nodes by category", () => {
  const categories = byCategory(nodes);
  const loaders = categories.find(([name]) => name === "loaders");
  assert.ok(loaders[1].some((d) => d.type === "CheckpointLoader"));
});
