// run/events.js and run/runner.js: what a job's events draw on the nodes, and what a job
// is submitted with.
import { test } from "node:test";
import assert from "node:assert/strict";
import { applyJobEvent, newRun } from "../src/run/events.js";
import { cannotRunMessage, findTab, issuesByNode, prepareJob, pruneFollowed } from "../src/run/runner.js";

const urls = {
  file: (p) => `/api/files/${p}`,
  preview: (job, node, index, bust) => `/api/jobs/${job}/preview?node=${node}&index=${index}&n=${bust}`,
};
const OUTPUT_TYPES = new Set(["PreviewImage", "SaveImage", "ShowValue"]);

function play(events, nodes = {}) {
  let run = newRun("j1", "t1");
  const notices = [];
  let now = 0;
  for (const [seq, event] of events.entries()) {
    now += 100;
    const ctx = { now, urls, isOutputNode: (t) => OUTPUT_TYPES.has(t), title: (id) => `node ${id}` };
    const out = applyJobEvent(run, nodes, { seq: seq + 1, ...event }, ctx);
    run = out.run;
    nodes = out.nodes;
    notices.push(...out.notices);
  }
  return { run, nodes, notices };
}

const START = [
  { event: "job_queued", position: 0 },
  { event: "job_started" },
  { event: "run_started", planned: ["ck", "s", "dec", "save", "prev"], bypassed: ["b"], muted: [], skipped: [] },
];

test("a run: states, progress, live preview to the last step, then the final images", () => {
  const { run, nodes, notices } = play([
    ...START,
    { event: "node_cached", node_id: "ck", node_type: "CheckpointLoader", files: [] },
    { event: "node_started", node_id: "s", node_type: "Sampler" },
    { event: "node_progress", node_id: "s", step: 1, total: 2 },
    { event: "node_preview", node_id: "s", image: { shape: [1, 32, 32, 3] } },
    { event: "node_progress", node_id: "s", step: 2, total: 2 },
    { event: "node_preview", node_id: "s", image: { shape: [1, 32, 32, 3] } },
    { event: "node_finished", node_id: "s", node_type: "Sampler", files: [], seconds: 1 },
    { event: "node_started", node_id: "dec", node_type: "VAEDecode" },
    { event: "node_finished", node_id: "dec", node_type: "VAEDecode", files: [], seconds: 1 },
    { event: "node_started", node_id: "save", node_type: "SaveImage" },
    { event: "node_finished", node_id: "save", node_type: "SaveImage", files: ["image_00001.png"], seconds: 0.1 },
    { event: "node_started", node_id: "prev", node_type: "PreviewImage" },
    { event: "node_preview", node_id: "prev", image: { shape: [2, 32, 32, 3] } },
    { event: "node_finished", node_id: "prev", node_type: "PreviewImage", files: [], seconds: 0.1 },
    { event: "run_finished", status: "done" },
    { event: "job_finished", status: "done" },
  ]);
  assert.equal(nodes.ck.state, "cached");
  assert.equal(nodes.b.state, "skipped");
  assert.equal(nodes.s.state, "done");
  assert.equal(nodes.s.step, 2);
  assert.equal(nodes.s.preview, "/api/jobs/j1/preview?node=s&index=0&n=9", "the sampler keeps its last frame");
  assert.deepEqual(nodes.save.images, ["/api/files/image_00001.png"]);
  assert.deepEqual(nodes.prev.images, [
    "/api/jobs/j1/preview?node=prev&index=0&n=17",
    "/api/jobs/j1/preview?node=prev&index=1&n=17",
  ]);
  assert.equal(nodes.prev.preview, null);
  assert.equal(run.done, 5);
  assert.equal(run.ended, true);
  assert.deepEqual(
    notices.map((n) => n.kind),
    ["results", "history", "ended"],
    "the text results are fetched when the event has none",
  );
});

test("while a node runs the run record has its step, rate and time left", () => {
  const { run, nodes } = play([
    ...START,
    { event: "node_started", node_id: "s", node_type: "Sampler" },
    { event: "node_progress", node_id: "s", step: 1, total: 5 },
  ]);
  assert.equal(run.current, "s");
  assert.equal(run.step, 1);
  assert.equal(run.total, 5);
  assert.equal(run.rate, 10); // one step in 100 ms
  assert.equal(run.eta, 0.4);
  assert.equal(nodes.s.state, "running");
  assert.equal(nodes.save.state, "queued");
});

test("earlier images stay until new ones arrive; a failure is written on the node", () => {
  const before = { save: { state: "done", images: ["/api/files/old.png"], preview: null, text: null, error: null } };
  const { nodes, notices, run } = play(
    [
      ...START,
      { event: "node_started", node_id: "dec", node_type: "VAEDecode" },
      { event: "node_failed", node_id: "dec", node_type: "VAEDecode", message: "width 30 is not a multiple of 8", input: "width" },
      { event: "run_finished", status: "failed", error: "x" },
      { event: "job_finished", status: "failed", error: "node dec failed" },
    ],
    before,
  );
  assert.deepEqual(nodes.save.images, ["/api/files/old.png"]);
  assert.equal(nodes.save.state, null, "it never ran this time");
  assert.equal(nodes.dec.state, "failed");
  assert.equal(nodes.dec.error, "width 30 is not a multiple of 8 (input 'width')");
  const toasts = notices.filter((n) => n.kind === "toast");
  assert.equal(toasts.length, 1, "one toast for one failure");
  assert.match(toasts[0].message, /node dec failed: width 30/);
  assert.equal(run.status, "failed");
});

test("ShowValue text comes from the job's results; repeated events are ignored", () => {
  let run = newRun("j1", "t1");
  const ctx = { now: 0, urls, isOutputNode: () => true, title: (id) => id };
  let out = applyJobEvent(run, {}, { seq: 1, event: "job_finished", status: "done", results: { show: { text: "4" } } }, ctx);
  assert.equal(out.nodes.show.text, "4");
  const again = applyJobEvent(out.run, out.nodes, { seq: 1, event: "job_finished", status: "done", results: {} }, ctx);
  assert.equal(again.nodes, out.nodes);
  assert.equal(again.notices.length, 0);
});

test("a job is submitted under the tab's title with the workflow's own seed", () => {
  const wf = { version: 1, nodes: { s: { type: "Sampler", inputs: { seed: 9 } } }, metadata: { keep: 1 } };
  const { workflow, seed } = prepareJob(wf, "My poster");
  assert.deepEqual(workflow.metadata, { keep: 1, name: "My poster" });
  assert.equal(seed, 9);
  assert.equal(wf.metadata.name, undefined, "the tab's workflow is not changed");
});

test("validation issues by node, and the toast names the first in plain words", () => {
  const issues = [
    { node_id: "d", input: "a", message: "expects a whole number", text: "node 'd' (IntMath), input 'a': expects a whole number" },
    { node_id: "d", input: null, message: "unknown node type" },
    { node_id: null, message: "the workflow has no output node" },
  ];
  assert.deepEqual(issuesByNode(issues), {
    d: ["a: expects a whole number", "unknown node type"],
    "": ["the workflow has no output node"],
  });
  assert.equal(
    cannotRunMessage(issues),
    "This workflow cannot run: node 'd' (IntMath), input 'a': expects a whole number (and 2 more problems)",
  );
});

test("followed jobs: the active ones and the newest ended one of each tab are kept", () => {
  const followed = { a: "t1", b: "t1", c: "t2", d: "t1", e: "t2" };
  assert.deepEqual(pruneFollowed(followed, ["d"]), { b: "t1", d: "t1", e: "t2" });
});

test("after a reload a followed job finds its tab by id, else by its old position", () => {
  assert.equal(findTab("b", ["a", "b"], []), "b");
  assert.equal(findTab("old2", ["n1", "n2"], ["old1", "old2"]), "n2");
  assert.equal(findTab("old2", ["n1"], ["old1", "old2"]), null, "the tabs changed: no guess");
  assert.equal(findTab("zz", ["n1"], ["old1"]), null);
});
