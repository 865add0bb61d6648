// The run bar (right of the top bar): Run + batch count, the whole run's progress with
// node, step, speed, time left and queue length, and cancel of the current job.
import { useEffect, useState } from "react";
import { useStudio } from "../store/index.js";
import { BATCH_MAX } from "../store/run.js";
import { formatDuration, formatRate, runFraction } from "./progress.js";
import "./run.css";

function nodeName(state, run) {
  if (!run || !run.current) return null;
  const tab = (state.tabs || []).find((t) => t.id === run.tabId);
  const node = tab && Array.isArray(tab.nodes) ? tab.nodes.find((n) => n.id === run.current) : null;
  const title = node && node.data ? node.data.title : null;
  if (title) return title;
  const def = state.defs && state.defs.types ? state.defs.types[run.currentType] : null;
  // "KSampler (Sampler)" -> "KSampler": the bar is narrow
  const name = def && def.display_name ? def.display_name.replace(/\s*\([^)]*\)\s*$/, "") : null;
  return name || run.currentType || run.current;
}

// What the bar says: "Sampler · step 12/20 · 3.4 it/s · 0:04 left · 2 queued".
function describe(state, run) {
  const queued = (state.queue.queued || []).length;
  const parts = [];
  if (run) {
    const name = nodeName(state, run);
    if (name) parts.push(name);
    if (run.total > 0) parts.push(`step ${run.step}/${run.total}`);
    else if (run.planned.length) parts.push(`node ${Math.min(run.done + 1, run.planned.length)}/${run.planned.length}`);
    else parts.push("starting");
    const rate = formatRate(run.rate);
    if (rate) parts.push(rate);
    if (run.eta !== null && run.total > 0) parts.push(`${formatDuration(run.eta)} left`);
  } else if ((state.queue.running || []).length) {
    parts.push("running a job from elsewhere");
  } else {
    const last = state.lastEndedRun();
    if (last) parts.push(last.status === "done" ? "done" : last.status);
    parts.push(queued ? "waiting" : "idle");
  }
  if (queued) parts.push(`${queued} queued`);
  return parts.join(" · ");
}

// The batch count as typed ("" while retyping), committed whenever it is a whole number.
function BatchCount() {
  const batchCount = useStudio((s) => s.batchCount);
  const setBatchCount = useStudio((s) => s.setBatchCount);
  const [draft, setDraft] = useState(String(batchCount));
  useEffect(() => setDraft(String(batchCount)), [batchCount]);
  return (
    <label className="batch-count" title="How many jobs one Run queues (1-100)">
      <span>×</span>
      <input
        type="number"
        min={1}
        max={BATCH_MAX}
        step={1}
        value={draft}
        data-testid="batch-count"
        aria-label="Batch count"
        onChange={(e) => {
          setDraft(e.target.value);
          if (/^\d+$/.test(e.target.value.trim())) setBatchCount(e.target.value);
        }}
        onBlur={() => setDraft(String(batchCount))}
      />
    </label>
  );
}

export default function RunBar() {
  const runActive = useStudio((s) => s.runActive);
  const cancelCurrent = useStudio((s) => s.cancelCurrent);
  const run = useStudio((s) => s.currentRun());
  const text = useStudio((s) => describe(s, s.currentRun()));
  const anyRunning = useStudio((s) => (s.queue.running || []).length > 0);
  const last = useStudio((s) => (s.currentRun() || (s.queue.running || []).length ? null : s.lastEndedRun()));
  let fraction = run ? runFraction(run.planned.length, run.done, run.step, run.total) : 0;
  if (!run && last) fraction = last.status === "done" ? 1 : runFraction(last.planned.length, last.done, 0, 0);
  const busy = Boolean(run) || anyRunning;

  return (
    <div className="run-bar">
      <button
        type="button"
        className="primary run-button"
        data-testid="run-button"
        title="Queue the active workflow (Ctrl+Enter)"
        onClick={() => runActive()}
      >
        ▶ Run
      </button>
      <BatchCount />
      <div
        className={`run-progress${busy ? " busy" : ""}${run ? "" : " idle"}${last ? ` ended ${last.status}` : ""}`}
        data-testid="run-progress"
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(fraction * 100)}
        title={text}
      >
        <div className="run-progress-fill" style={{ width: `${(fraction * 100).toFixed(1)}%` }} />
        <span className="run-progress-text" data-testid="run-progress-text">
          {text}
        </span>
      </div>
      <button
        type="button"
        className="cancel-current"
        data-testid="cancel-current"
        title="Cancel the running job"
        aria-label="Cancel the running job"
        disabled={!busy}
        onClick={() => cancelCurrent()}
      >
        ■
      </button>
    </div>
  );
}
