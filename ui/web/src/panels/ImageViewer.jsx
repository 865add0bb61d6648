// The large view of one history entry: its pictures (arrows step through them), name,
// prompt, seeds, times, status or error, a download link and "Restore workflow", which
// opens the workflow as it ran in a new tab. Esc closes.
import { useEffect, useState } from "react";
import { api } from "../api.js";
import { useStudio } from "../store/index.js";
import MediaItem from "../media/Media.jsx";
import { clockTime, entryFiles, entryImages, entryName, entryPreview, entrySeeds, runLength, STATUS_WORDS } from "./entries.js";
import "./panels.css";

export default function ImageViewer() {
  const viewer = useStudio((s) => s.viewer);
  const openViewer = useStudio((s) => s.openViewer);
  const closeViewer = useStudio((s) => s.closeViewer);
  const entry = viewer ? viewer.entry : null;
  const [previewGone, setPreviewGone] = useState(null); // the job id whose preview is gone
  const saved = entry ? entryImages(entry) : [];
  const preview = entry && !saved.length && previewGone !== entry.id ? entryPreview(entry) : null;
  const images = preview ? [preview] : saved;
  const index = viewer ? Math.min(viewer.index, Math.max(0, images.length - 1)) : 0;

  useEffect(() => {
    if (!entry) return undefined;
    const onKey = (e) => {
      if (e.key === "Escape") closeViewer();
      else if (e.key === "ArrowLeft" && images.length > 1) openViewer(entry, (index - 1 + images.length) % images.length);
      else if (e.key === "ArrowRight" && images.length > 1) openViewer(entry, (index + 1) % images.length);
      else return;
      e.preventDefault();
      e.stopPropagation();
    };
    window.addEventListener("keydown", onKey, true);
    return () => window.removeEventListener("keydown", onKey, true);
  }, [entry, index, images.length, openViewer, closeViewer]);

  if (!entry) return null;

  const restore = async () => {
    const { toast, openWorkflow } = useStudio.getState();
    try {
      const job = await api.job(entry.id);
      if (!job.workflow) throw new Error("the server kept no workflow for this job");
      openWorkflow(job.workflow, { title: entryName(entry), newTab: true });
      closeViewer();
      toast(`Opened the workflow of ${entryName(entry)} in a new tab`, "ok");
    } catch (error) {
      toast(`Could not restore the workflow: ${error.message}`, "error");
    }
  };

  const src = images[index];
  const file = entryFiles(entry)[index] || "";
  const seeds = entrySeeds(entry);
  return (
    <div className="modal-backdrop" onMouseDown={(e) => e.target === e.currentTarget && closeViewer()}>
      <div className="viewer" data-testid="viewer" role="dialog" aria-label={`Output of ${entryName(entry)}`}>
        <div className="viewer-stage">
          {src ? (
            <MediaItem
              data-testid="viewer-media"
              src={src}
              alt={entry.prompt || entryName(entry)}
              draggable={false}
              onError={preview ? () => setPreviewGone(entry.id) : undefined}
            />
          ) : (
            <div className="viewer-empty">{entry.status === "done" ? "This run saved no picture." : "No picture."}</div>
          )}
          {images.length > 1 ? (
            <>
              <button
                type="button"
                className="viewer-nav prev"
                aria-label="Previous picture"
                onClick={() => openViewer(entry, (index - 1 + images.length) % images.length)}
              >
                ‹
              </button>
              <button
                type="button"
                className="viewer-nav next"
                aria-label="Next picture"
                onClick={() => openViewer(entry, (index + 1) % images.length)}
              >
                ›
              </button>
              <span className="viewer-counter">
                {index + 1} / {images.length}
              </span>
            </>
          ) : null}
        </div>
        <div className="viewer-info">
          <div className="viewer-head">
            <h2 title={entryName(entry)}>{entryName(entry)}</h2>
            <button type="button" className="viewer-close" aria-label="Close" onClick={closeViewer}>
              ×
            </button>
          </div>
          <span className={`badge status-${entry.status}`}>{STATUS_WORDS[entry.status] || entry.status}</span>
          {entry.error ? <p className="viewer-error">{entry.error}</p> : null}
          {entry.prompt ? (
            <>
              <h3>Prompt</h3>
              <p className="viewer-prompt">{entry.prompt}</p>
            </>
          ) : null}
          <dl>
            {seeds.map(([node, seed]) => (
              <div key={node}>
                <dt title={node === "run" ? "the run's seed" : `the seed input of node '${node}'`}>
                  {seeds.length === 1 ? "seed" : `seed · ${node}`}
                </dt>
                <dd>{seed}</dd>
              </div>
            ))}
            <div>
              <dt>finished</dt>
              <dd>{clockTime(entry.finished || entry.submitted) || "—"}</dd>
            </div>
            {runLength(entry) ? (
              <div>
                <dt>took</dt>
                <dd>{runLength(entry)}</dd>
              </div>
            ) : null}
            {file ? (
              <div>
                <dt>file</dt>
                <dd className="viewer-file">{file}</dd>
              </div>
            ) : null}
          </dl>
          <div className="viewer-actions">
            <button type="button" className="primary" data-testid="viewer-restore" onClick={restore}>
              Restore workflow
            </button>
            {src ? (
              <a className="button-link" href={src} download={file.split("/").pop() || `${entryName(entry)}.png`}>
                Download
              </a>
            ) : null}
          </div>
        </div>
      </div>
    </div>
  );
}
