// Submitting a tab's workflow as jobs and following their events. The store (store/run.js)
// holds the state; this module holds the steps: what a job is sent with, what a 422 means
// per node, the event stream of one job, and the jobs this page follows across a reload.
import { api, urls } from "../api.js";
import { runSeed } from "./seeds.js";

export const FOLLOWED_KEY = "workflow-studio.jobs.v1";
export const TAB_ORDER_KEY = "workflow-studio.tab-ids.v1";

// The workflow and seed one job is submitted with: the tab's title becomes metadata.name
// (history shows it); the seed is the workflow's own first seed (see seeds.js).
export function prepareJob(workflow, title, random = Math.random) {
  const metadata = { ...(workflow.metadata || {}) };
  if (title) metadata.name = title;
  const prepared = { ...workflow, metadata };
  return { workflow: prepared, seed: runSeed(prepared, random) };
}

// A validation issue in plain words, for a node's issue list (the node names itself).
export function issueOnNode(issue) {
  const message = issue.message || issue.text || "cannot run";
  return issue.input ? `${issue.input}: ${message}` : message;
}

// Validation issues (422 or /api/validate) -> {nodeId: [message, ...]}; issues of the
// workflow as a whole go under "" .
export function issuesByNode(issues) {
  const byNode = {};
  for (const issue of issues || []) {
    const key = issue.node_id || "";
    (byNode[key] = byNode[key] || []).push(issueOnNode(issue));
  }
  return byNode;
}

// The toast for a workflow that cannot run, naming its first issue.
export function cannotRunMessage(issues) {
  const first = (issues || [])[0];
  if (!first) return "This workflow cannot run.";
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more problem${issues.length > 2 ? "s" : ""})` : "";
  return `This workflow cannot run: ${first.text || first.message}${more}`;
}

const EVENT_KINDS = [
  "job_queued",
  "job_started",
  "run_started",
  "node_started",
  "node_cached",
  "node_progress",
  "node_preview",
  "node_finished",
  "node_failed",
  "run_finished",
  "job_finished",
];

// Follow one job's Server-Sent Events from `after` on. onEvent(event) for each; onEnd()
// once when the job has ended or the server no longer knows it. -> close()
export function openJobStream(jobId, after, { onEvent, onEnd }) {
  let closed = false;
  const source = new EventSource(urls.stream(jobId, after), { withCredentials: true });
  const close = () => {
    if (closed) return;
    closed = true;
    source.close();
  };
  const handle = (message) => {
    if (closed) return;
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    onEvent(event);
    if (event.event === "job_finished") {
      close();
      onEnd();
    }
  };
  for (const kind of EVENT_KINDS) source.addEventListener(kind, handle);
  source.onerror = () => {
    // The browser reconnects by itself (with Last-Event-ID) unless the server refused
    // the stream (404: an unknown job); then the job is over for us.
    if (source.readyState === EventSource.CLOSED && !closed) {
      close();
      onEnd();
    }
  };
  return close;
}

// All events a job still has (a finished job may have only job_finished).
export async function jobEvents(jobId) {
  try {
    return await api.events(jobId, 0, 0);
  } catch {
    return [];
  }
}

// {jobId: tabId} of the jobs this page submitted, oldest first, kept in localStorage.
export function loadFollowed() {
  try {
    const value = JSON.parse(localStorage.getItem(FOLLOWED_KEY) || "{}");
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  } catch {
    return {};
  }
}

export function saveFollowed(followed) {
  try {
    localStorage.setItem(FOLLOWED_KEY, JSON.stringify(followed));
  } catch {
    // storage full or refused: following still works until a reload
  }
}

// Keep the map small: every active job, and the newest ended job of each tab (its
// pictures come back on the nodes after a reload).
export function pruneFollowed(followed, activeIds) {
  const active = new Set(activeIds);
  const newestEnded = {};
  for (const [jobId, tabId] of Object.entries(followed)) if (!active.has(jobId)) newestEnded[tabId] = jobId;
  const kept = {};
  for (const [jobId, tabId] of Object.entries(followed)) {
    if (active.has(jobId) || newestEnded[tabId] === jobId) kept[jobId] = tabId;
  }
  return kept;
}

// The open tabs' ids in order, so jobs followed before a reload find their tab again when
// the tabs come back under new ids (the same position, the same number of tabs).
export function loadTabOrder() {
  try {
    const value = JSON.parse(localStorage.getItem(TAB_ORDER_KEY) || "[]");
    return Array.isArray(value) ? value : [];
  } catch {
    return [];
  }
}

export function saveTabOrder(ids) {
  try {
    localStorage.setItem(TAB_ORDER_KEY, JSON.stringify(ids));
  } catch {
    // as saveFollowed
  }
}

// A followed job's tab now: the same id, else the tab at the old id's position.
export function findTab(tabId, tabIds, oldOrder) {
  if (tabIds.includes(tabId)) return tabId;
  const at = oldOrder.indexOf(tabId);
  return at >= 0 && oldOrder.length === tabIds.length ? tabIds[at] : null;
}
