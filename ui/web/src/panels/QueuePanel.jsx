// The queue and gallery (right side): what runs and waits on the server, each with its own
// cancel, and below it the history as thumbnails; a click opens the large view.
import { useState } from "react";
import MediaItem from "../media/Media.jsx";
import { useStudio } from "../store/index.js";
import { runFraction } from "../run/progress.js";
import { clockTime, entryImages, entryName, entryPreview, entrySeedText, runLength, STATUS_WORDS } from "./entries.js";
import "./panels.css";

function QueueItem({ job, running }) {
  const cancelJob = useStudio((s) => s.cancelJob);
  const run = useStudio((s) => s.runs[job.id]);
  const fraction = run ? runFraction(run.planned.length, run.done, run.step, run.total) : null;
  const mine = Boolean(run);
  return (
    <li className={`queue-item ${running ? "running" : "queued"}`} data-testid="queue-item" data-job-id={job.id}>
      <div className="queue-item-main">
        <div className="queue-item-title">
          <span className={`badge status-${job.status}`}>{running ? "running" : `#${(job.position ?? 0) + 1}`}</span>
          <span className="queue-item-name" title={entryName(job)}>
            {entryName(job)}
          </span>
        </div>
        {job.prompt ? (
          <div className="queue-item-prompt" title={job.prompt}>
            {job.prompt}
          </div>
        ) : null}
        <div className="queue-item-meta">
          {[entrySeedText(job), mine ? null : job.source === "ui" ? "other page" : job.source, clockTime(job.submitted)]
            .filter(Boolean)
            .join(" · ")}
        </div>
        {running ? (
          <div className={`queue-item-progress${fraction === null ? " indeterminate" : ""}`}>
            <div style={{ width: `${((fraction ?? 0.3) * 100).toFixed(1)}%` }} />
          </div>
        ) : null}
      </div>
      <button
        type="button"
        className="queue-cancel"
        data-testid="queue-cancel"
        title={running ? "Stop this job" : "Take this job out of the queue"}
        aria-label={`Cancel ${entryName(job)}`}
        onClick={() => cancelJob(job.id)}
      >
        ×
      </button>
    </li>
  );
}

function HistoryItem({ entry }) {
  const openViewer = useStudio((s) => s.openViewer);
  const images = entryImages(entry);
  const [previewGone, setPreviewGone] = useState(false);
  const thumb = images[0] || (previewGone ? null : entryPreview(entry));
  const words = STATUS_WORDS[entry.status] || entry.status;
  return (
    <button
      type="button"
      className={`history-item status-${entry.status}`}
      data-testid="history-item"
      data-job-id={entry.id}
      title={[entryName(entry), entry.prompt, entry.error].filter(Boolean).join("\n")}
      onClick={() => openViewer(entry, 0)}
    >
      <div className="history-thumb">
        {thumb ? (
          <MediaItem
            src={thumb}
            alt={entry.prompt || entryName(entry)}
            controls={false}
            loading="lazy"
            draggable={false}
            onError={images.length ? undefined : () => setPreviewGone(true)}
          />
        ) : (
          <div className="history-noimage">no picture</div>
        )}
        {entry.status !== "done" ? <span className={`badge status-${entry.status}`}>{words}</span> : null}
        {images.length > 1 ? <span className="history-count">{images.length}</span> : null}
      </div>
      <div className="history-text">
        <div className="history-prompt">{entry.prompt || entryName(entry)}</div>
        <div className="history-meta">{entrySeedText(entry) || "\u00a0"}</div>
        <div className="history-meta">
          {[clockTime(entry.finished || entry.submitted), runLength(entry)].filter(Boolean).join(" · ")}
        </div>
      </div>
    </button>
  );
}

export default function QueuePanel() {
  const queue = useStudio((s) => s.queue);
  const history = useStudio((s) => s.history);
  const total = useStudio((s) => s.historyTotal);
  const active = new Set([...(queue.running || []), ...(queue.queued || [])].map((j) => j.id));
  const ended = history.filter((e) => !active.has(e.id));
  const waiting = (queue.running || []).length + (queue.queued || []).length;
  const endedTotal = Math.max(0, total - (history.length - ended.length));

  return (
    <aside className="queue-panel" data-testid="queue-panel" aria-label="Queue and history">
      <section className="queue-section">
        <h2>
          Queue <span className="count">{waiting || ""}</span>
        </h2>
        {waiting ? (
          <ul className="queue-list">
            {(queue.running || []).map((job) => (
              <QueueItem key={job.id} job={job} running />
            ))}
            {(queue.queued || []).map((job) => (
              <QueueItem key={job.id} job={job} running={false} />
            ))}
          </ul>
        ) : (
          <p className="empty">Nothing waiting. Run (Ctrl+Enter) queues the active workflow.</p>
        )}
      </section>
      <section className="history-section">
        <h2>
          History <span className="count">{endedTotal || ""}</span>
        </h2>
        {ended.length ? (
          <div className="history-grid">
            {ended.map((entry) => (
              <HistoryItem key={entry.id} entry={entry} />
            ))}
          </div>
        ) : (
          <p className="empty">Finished runs appear here with their pictures.</p>
        )}
      </section>
    </aside>
  );
}
