// The run slice: enqueueing the active tab, the server's queue and history, and what each
// node shows (nodeState) while and after its jobs run. The contract is in the shared
// spec ("Run slice"); the steps live in run/runner.js, run/events.js and run/seeds.js.
import { api, ApiError, urls } from "../api.js";
import { applyJobEvent, applyResults, newRun } from "../run/events.js";
import { seedUpdates } from "../run/seeds.js";
import {
  cannotRunMessage,
  findTab,
  issuesByNode,
  jobEvents,
  loadFollowed,
  loadTabOrder,
  openJobStream,
  prepareJob,
  pruneFollowed,
  saveFollowed,
  saveTabOrder,
} from "../run/runner.js";

const QUEUE_EVERY_MS = 1000;
const HISTORY_EVERY_MS = 5000;
const HISTORY_LIMIT = 60;
export const BATCH_MAX = 100;

const clampBatch = (n) => Math.min(BATCH_MAX, Math.max(1, Math.round(Number(n)) || 1));

export const runSlice = (set, get) => {
  const streams = new Map(); // jobId -> close(); this store's open event streams
  let followed = null; // {jobId: tabId}, loaded on first use
  const oldTabOrder = loadTabOrder(); // the tabs' ids before this page loaded
  let tabOrder = "";

  const followedMap = () => (followed === null ? (followed = loadFollowed()) : followed);
  const remember = (jobId, tabId) => {
    followed = { ...followedMap(), [jobId]: tabId };
    saveFollowed(followed);
  };

  const nodeLabel = (tabId, nodeId) => {
    try {
      const node = get().tabWorkflow(tabId).nodes[nodeId];
      if (node) return node.title ? `${node.title} (${node.type})` : `${node.type} '${nodeId}'`;
    } catch {
      // the tab is gone: name the node by its id
    }
    return `Node '${nodeId}'`;
  };

  // The tabs come back from the browser's storage after the node definitions load.
  const tabsReady = () =>
    new Promise((resolve) => {
      const check = () => (get().tabsReady === false ? setTimeout(check, 100) : resolve());
      check();
    });

  const isOutputNode = (type) => {
    const def = type && get().defs && get().defs.types ? get().defs.types[type] : null;
    return def ? Boolean(def.output_node) : type === "PreviewImage";
  };

  // Feed events of a followed job into the store, in one update; quiet = a replay (no toasts).
  const applyEvents = (jobId, events, quiet = false) => {
    const state = get();
    let run = state.runs[jobId];
    if (!run || !events.length) return;
    const tabId = run.tabId;
    const before = state.nodeState[tabId] || {};
    let nodes = before;
    const notices = [];
    // A replay is not timed (its events come at once): no rate, no time left.
    const ctx = { now: quiet ? 0 : Date.now(), urls, isOutputNode, title: (id) => nodeLabel(tabId, id) };
    for (const event of events) {
      const result = applyJobEvent(run, nodes, event, ctx);
      run = result.run;
      nodes = result.nodes;
      notices.push(...result.notices);
    }
    const tabOpen = (state.tabs || []).some((t) => t.id === tabId); // a closed tab draws nothing
    set((s) => ({
      runs: { ...s.runs, [jobId]: run },
      nodeState: nodes === before || !tabOpen ? s.nodeState : { ...s.nodeState, [tabId]: nodes },
    }));
    for (const notice of notices) {
      if (notice.kind === "toast" && !quiet && get().toast) get().toast(notice.message, notice.level);
      if (notice.kind === "history" && !quiet) get().refreshHistory();
      if (notice.kind === "results") showResults(jobId, tabId);
    }
  };

  // Live events are drawn at most every FLUSH_MS: a fast sampler sends a step (and a preview)
  // many times a second, and redrawing each one would take CPU from the run itself.
  const FLUSH_MS = 60;
  const pending = new Map(); // jobId -> [event]
  let flushTimer = null;
  const flush = () => {
    flushTimer = null;
    const batches = [...pending.entries()];
    pending.clear();
    for (const [jobId, events] of batches) applyEvents(jobId, events);
  };
  const queueEvent = (jobId, event) => {
    if (!pending.has(jobId)) pending.set(jobId, []);
    pending.get(jobId).push(event);
    if (flushTimer === null) flushTimer = setTimeout(flush, FLUSH_MS);
  };

  // ShowValue and other text outputs, from the finished job's record.
  const showResults = async (jobId, tabId) => {
    let job;
    try {
      job = await api.job(jobId);
    } catch {
      return;
    }
    if (!job || !job.results || !Object.keys(job.results).length) return;
    if (!(get().tabs || []).some((t) => t.id === tabId)) return;
    set((s) => ({ nodeState: { ...s.nodeState, [tabId]: applyResults(s.nodeState[tabId] || {}, job.results) } }));
  };

  return {
    nodeState: {}, // {tabId: {nodeId: {state, step, total, rate, eta, error, images, text, preview}}}
    issues: {}, // {tabId: {nodeId: [message]}}
    queue: { running: [], queued: [] },
    history: [],
    historyTotal: 0,
    runs: {}, // {jobId: run record (run/events.js newRun)} of the jobs this page follows
    batchCount: 1,

    setBatchCount(n) {
      set({ batchCount: clampBatch(n) });
    },

    // Enqueue the active tab `count` times; Run and Ctrl+Enter call it (also while a job runs).
    runActive(count) {
      const tabId = get().activeTabId;
      if (!tabId) return Promise.resolve([]);
      return get().runTab(tabId, count === undefined ? get().batchCount : count);
    },

    async runTab(tabId, count = 1) {
      const submitted = [];
      for (let i = 0; i < clampBatch(count); i += 1) {
        const state = get();
        const tab = (state.tabs || []).find((t) => t.id === tabId);
        if (!tab) break;
        const { workflow, seed } = prepareJob(state.tabWorkflow(tabId), tab.title);
        let job;
        try {
          job = await api.submit(workflow, seed);
        } catch (error) {
          if (error instanceof ApiError && error.status === 422 && error.issues) {
            set((s) => ({ issues: { ...s.issues, [tabId]: issuesByNode(error.issues) } }));
            get().toast(cannotRunMessage(error.issues), "error");
          } else {
            get().toast(`Could not queue the run: ${error.message}`, "error");
          }
          break;
        }
        submitted.push(job.id);
        if (i === 0) get().clearIssues(tabId);
        get().followJob(job.id, tabId);
        // Seed control after run, so the next job differs.
        const limits = (type, input) => {
          const def = get().defs && get().defs.types ? get().defs.types[type] : null;
          const spec = def && def.inputs ? def.inputs.find((x) => x.name === input) : null;
          return spec ? { min: spec.min, max: spec.max } : {};
        };
        const controls = get().seedControls ? get().seedControls(tabId) : {};
        for (const u of seedUpdates(workflow, controls, { limits })) get().setNodeInput(tabId, u.nodeId, u.input, u.value);
      }
      if (submitted.length) get().pollQueue();
      return submitted;
    },

    clearIssues(tabId) {
      if (!get().issues[tabId]) return;
      set((s) => {
        const issues = { ...s.issues };
        delete issues[tabId];
        return { issues };
      });
    },

    // Check the tab's workflow without running it; its issues replace the earlier ones.
    async validateTab(tabId) {
      const tab = (get().tabs || []).find((t) => t.id === tabId);
      if (!tab) return null;
      try {
        const answer = await api.validate(get().tabWorkflow(tabId));
        if (answer.valid || !answer.issues || !answer.issues.length) get().clearIssues(tabId);
        else set((s) => ({ issues: { ...s.issues, [tabId]: issuesByNode(answer.issues) } }));
        return answer;
      } catch {
        return null;
      }
    },

    // Follow a job's events onto the tab's nodes (from its first event, so a reload replays).
    followJob(jobId, tabId) {
      if (streams.has(jobId)) return;
      remember(jobId, tabId);
      set((s) => ({ runs: { ...s.runs, [jobId]: s.runs[jobId] || newRun(jobId, tabId) } }));
      const close = openJobStream(jobId, 0, {
        onEvent: (event) => queueEvent(jobId, event),
        onEnd: () => {
          streams.delete(jobId);
          flush(); // everything the job sent is drawn before it counts as ended
          const run = get().runs[jobId];
          if (run && !run.ended) set((s) => ({ runs: { ...s.runs, [jobId]: { ...run, ended: true } } }));
          // it no longer runs: drop it from the queue at once rather than at the next poll
          set((s) => ({
            queue: {
              running: s.queue.running.filter((job) => job.id !== jobId),
              queued: s.queue.queued.filter((job) => job.id !== jobId),
            },
          }));
          get().pollQueue();
          get().refreshHistory();
        },
      });
      streams.set(jobId, close);
    },

    async cancelJob(jobId) {
      try {
        await api.cancel(jobId);
      } catch (error) {
        if (error.status !== 409) get().toast(`Could not cancel: ${error.message}`, "error");
      }
      get().pollQueue();
    },

    // The job the run bar shows: the newest running job this page follows (the active tab's first).
    currentRun() {
      const { runs, activeTabId } = get();
      const live = Object.values(runs).filter((r) => !r.ended && r.status === "running");
      return live.find((r) => r.tabId === activeTabId) || live[live.length - 1] || null;
    },

    // The active tab's latest ended run (the run bar shows how it ended until the next one).
    lastEndedRun() {
      const { runs, activeTabId } = get();
      const ended = Object.values(runs).filter((r) => r.ended && r.tabId === activeTabId && r.planned.length);
      return ended.length ? ended[ended.length - 1] : null;
    },

    cancelCurrent() {
      const run = get().currentRun();
      const running = get().queue.running || [];
      const jobId = run ? run.jobId : running.length ? running[0].id : null;
      if (jobId) return get().cancelJob(jobId);
      return Promise.resolve();
    },

    async pollQueue() {
      let queue;
      try {
        queue = await api.queue();
      } catch {
        return;
      }
      const before = get().queue;
      const ids = (q) => [...(q.running || []), ...(q.queued || [])].map((j) => j.id);
      const now = new Set(ids(queue));
      const next = { running: queue.running || [], queued: queue.queued || [] };
      if (JSON.stringify(next) !== JSON.stringify(before)) set({ queue: next });
      if (ids(before).some((id) => !now.has(id))) get().refreshHistory();
    },

    async refreshHistory() {
      try {
        const answer = await api.history(HISTORY_LIMIT, 0);
        const history = answer.jobs || [];
        if (JSON.stringify(history) !== JSON.stringify(get().history)) set({ history });
        if ((answer.total || 0) !== get().historyTotal) set({ historyTotal: answer.total || 0 });
      } catch {
        // keep what is shown; the next poll tries again
      }
    },

    // At start: the queue and history, then every second; jobs this page followed before
    // a reload come back (the newest ended job of each tab replays its pictures).
    startPolling() {
      const timers = [];
      const begin = async () => {
        await Promise.all([get().pollQueue(), get().refreshHistory()]);
        await get().restoreFollowed();
      };
      begin();
      timers.push(setInterval(() => get().pollQueue(), QUEUE_EVERY_MS));
      timers.push(setInterval(() => get().refreshHistory(), HISTORY_EVERY_MS));
      return () => timers.forEach(clearInterval);
    },

    // Keep the tabs' order (App calls this when the tabs change, once they are restored).
    rememberTabOrder() {
      if (get().tabsReady === false) return;
      const ids = JSON.stringify((get().tabs || []).map((t) => t.id));
      if (ids === tabOrder) return;
      tabOrder = ids;
      saveTabOrder(JSON.parse(ids));
    },

    async restoreFollowed() {
      await tabsReady();
      const queue = get().queue;
      const active = [...(queue.running || []), ...(queue.queued || [])].map((j) => j.id);
      const tabIds = (get().tabs || []).map((t) => t.id);
      const kept = {};
      for (const [jobId, tabId] of Object.entries(pruneFollowed(followedMap(), active))) {
        const now = findTab(tabId, tabIds, oldTabOrder);
        if (now) kept[jobId] = now;
      }
      get().rememberTabOrder();
      followed = kept;
      saveFollowed(followed);
      const activeSet = new Set(active);
      for (const [jobId, tabId] of Object.entries(kept)) {
        if (activeSet.has(jobId)) continue;
        set((s) => ({ runs: { ...s.runs, [jobId]: newRun(jobId, tabId) } }));
        applyEvents(jobId, await jobEvents(jobId), true);
      }
      for (const [jobId, tabId] of Object.entries(kept)) if (activeSet.has(jobId)) get().followJob(jobId, tabId);
    },
  };
};
