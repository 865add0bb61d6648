// What a job's events (docs/api.md "Event kinds") mean for the nodes on the canvas: one
// pure reducer, applyJobEvent, from (the job's run record, the tab's node states, event)
// to the next ones, plus notices for the page (toasts, a history refresh). No React, no
// DOM, no fetch: node:test can feed it event lists.
import { startMeter, updateMeter } from "./progress.js";

// A run record: what the run bar and the queue panel show for one followed job.
export function newRun(jobId, tabId) {
  return {
    jobId,
    tabId,
    status: "queued",
    planned: [],
    doneIds: {},
    done: 0,
    current: null, // the running node's id
    currentType: null,
    step: 0,
    total: 0,
    rate: null,
    eta: null,
    meters: {},
    types: {},
    previewCounts: {},
    lastSeq: 0,
    ended: false,
    error: null,
  };
}

const IDLE = { step: 0, total: 0, rate: null, eta: null };

function patch(nodes, id, change) {
  const before = nodes[id] || { state: null, images: [], text: null, preview: null, error: null };
  return { ...nodes, [id]: { ...before, ...change } };
}

function markDone(run, id) {
  if (run.doneIds[id]) return run;
  const doneIds = { ...run.doneIds, [id]: true };
  return { ...run, doneIds, done: Object.keys(doneIds).length };
}

// ctx: {now (ms), urls (api.js urls), isOutputNode(type) -> bool, title(nodeId) -> words}
// -> {run, nodes, notices: [{kind: "toast", message, level} | {kind: "history"} | {kind: "results"} | {kind: "ended"}]}
export function applyJobEvent(run, nodes, event, ctx) {
  const notices = [];
  const seq = event.seq || 0;
  if (seq && seq <= run.lastSeq) return { run, nodes, notices }; // already seen (a reconnect)
  run = { ...run, lastSeq: Math.max(run.lastSeq, seq) };
  const id = event.node_id;
  const now = ctx.now;
  switch (event.event) {
    case "job_queued":
      run = { ...run, status: "queued" };
      break;
    case "job_started":
      run = { ...run, status: "running" };
      break;
    case "run_started": {
      const planned = event.planned || [];
      const setAside = [...(event.bypassed || []), ...(event.muted || []), ...(event.skipped || [])];
      run = { ...run, status: "running", planned, doneIds: {}, done: 0, current: null, ...IDLE };
      // Earlier states go; earlier pictures stay until the new ones arrive.
      let next = {};
      for (const [nodeId, state] of Object.entries(nodes)) next[nodeId] = { ...state, state: null, error: null, ...IDLE };
      for (const nodeId of planned) next = patch(next, nodeId, { state: "queued" });
      for (const nodeId of setAside) next = patch(next, nodeId, { state: "skipped" });
      nodes = next;
      break;
    }
    case "node_started":
      run = {
        ...run,
        current: id,
        currentType: event.node_type,
        types: { ...run.types, [id]: event.node_type },
        meters: { ...run.meters, [id]: startMeter(now) },
        ...IDLE,
      };
      nodes = patch(nodes, id, { state: "running", error: null, ...IDLE });
      break;
    case "node_progress": {
      const { meter, rate, eta } = updateMeter(run.meters[id], event.step, event.total, now);
      run = { ...run, meters: { ...run.meters, [id]: meter } };
      if (run.current === id || run.current === null) {
        run = { ...run, current: id, step: event.step, total: event.total, rate, eta };
      }
      nodes = patch(nodes, id, { state: "running", step: event.step, total: event.total, rate, eta });
      break;
    }
    case "node_preview": {
      const shape = (event.image && event.image.shape) || [];
      const count = shape.length === 4 ? Math.max(1, shape[0]) : 1;
      run = { ...run, previewCounts: { ...run.previewCounts, [id]: count } };
      nodes = patch(nodes, id, { preview: ctx.urls.preview(run.jobId, id, 0, seq) });
      break;
    }
    case "node_cached":
    case "node_finished": {
      const files = event.files || [];
      const change = { state: event.event === "node_cached" ? "cached" : "done", eta: null };
      const before = nodes[id] || {};
      if (before.total) change.step = before.total;
      const type = event.node_type || run.types[id];
      if (files.length) {
        change.images = files.map((file) => ctx.urls.file(file));
        change.preview = null;
      } else if (run.previewCounts[id] && ctx.isOutputNode(type)) {
        // PreviewImage: its pictures are the job's previews of that node.
        const count = run.previewCounts[id];
        change.images = Array.from({ length: count }, (_, index) => ctx.urls.preview(run.jobId, id, index, seq));
        change.preview = null;
      }
      nodes = patch(nodes, id, change);
      run = markDone(run, id);
      if (run.current === id) run = { ...run, current: null, ...IDLE };
      break;
    }
    case "node_failed": {
      const where = event.input ? ` (input '${event.input}')` : "";
      const error = `${event.message}${where}`;
      nodes = patch(nodes, id, { state: "failed", error, eta: null });
      run = { ...run, current: null, ...IDLE, error };
      notices.push({ kind: "toast", level: "error", message: `${ctx.title(id)} failed: ${error}` });
      break;
    }
    case "run_finished": {
      // Nodes that never ran (a failure or a cancel stopped the run) are idle again.
      const next = { ...nodes };
      for (const [nodeId, state] of Object.entries(nodes)) {
        if (state.state === "queued" || state.state === "running") next[nodeId] = { ...state, state: null, ...IDLE };
      }
      nodes = next;
      run = { ...run, status: event.status || run.status, current: null, ...IDLE };
      break;
    }
    case "job_finished": {
      const status = event.status || "done";
      nodes = applyResults(nodes, event.results);
      if (status !== "done" && status !== "cancelled" && !run.error && event.error) {
        notices.push({ kind: "toast", level: "error", message: `The run ${status}: ${event.error}` });
      }
      run = { ...run, status, ended: true, current: null, ...IDLE, error: run.error || event.error || null };
      // The text results (ShowValue) are in GET /api/jobs/{id} when the event does not carry them.
      if (!event.results) notices.push({ kind: "results" });
      notices.push({ kind: "history" }, { kind: "ended" });
      break;
    }
    default:
      break;
  }
  return { run, nodes, notices };
}

// The text results of a finished job ({nodeId: {text}} of GET /api/jobs/{id}) on its nodes.
export function applyResults(nodes, results) {
  let next = nodes;
  for (const [nodeId, result] of Object.entries(results || {})) {
    if (result && typeof result === "object" && "text" in result) {
      next = patch(next, nodeId, { text: result.text === null ? null : String(result.text) });
    }
  }
  return next;
}
