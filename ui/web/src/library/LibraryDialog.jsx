// The library: workflows saved on the server (open, rename, delete) and the examples (open).
import { useCallback, useEffect, useState } from "react";
import { api } from "../api.js";
import { useStudio } from "../store/index.js";
import { clockTime } from "../panels/entries.js";
import { openExample, openLibraryWorkflow } from "./files.js";
import "../panels/panels.css";
import "./library.css";

const size = (bytes) => (bytes >= 1024 ? `${(bytes / 1024).toFixed(1)} KB` : `${bytes || 0} B`);

export default function LibraryDialog() {
  const open = useStudio((s) => s.libraryOpen);
  const setOpen = useStudio((s) => s.setLibraryOpen);
  const [listing, setListing] = useState(null);
  const [error, setError] = useState(null);

  const reload = useCallback(async () => {
    try {
      setListing(await api.library());
      setError(null);
    } catch (e) {
      setError(e.message);
    }
  }, []);

  useEffect(() => {
    if (!open) return undefined;
    reload();
    const onKey = (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        setOpen(false);
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [open, reload, setOpen]);

  if (!open) return null;
  const { toast } = useStudio.getState();

  const openSaved = async (name) => {
    if (await openLibraryWorkflow(name)) setOpen(false);
  };
  const openEx = async (name) => {
    if (await openExample(name)) setOpen(false);
  };
  const rename = async (name) => {
    const to = window.prompt(`Rename "${name}" to:`, name);
    if (to === null || to.trim() === "" || to.trim() === name) return;
    try {
      const answer = await api.libraryRename(name, to.trim());
      // Tabs opened from the old name now save under the new one.
      useStudio.setState((s) => ({
        tabs: (s.tabs || []).map((t) =>
          t.libraryName === name
            ? { ...t, libraryName: answer.name, title: t.title === name ? answer.name : t.title }
            : t,
        ),
      }));
      toast(`Renamed "${name}" to "${answer.name}"`, "ok");
    } catch (e) {
      toast(`Could not rename "${name}": ${e.message}`, "error");
    }
    reload();
  };
  const remove = async (name) => {
    if (!window.confirm(`Delete "${name}" from the library? This cannot be undone.`)) return;
    try {
      await api.libraryDelete(name);
      useStudio.setState((s) => ({
        tabs: (s.tabs || []).map((t) => (t.libraryName === name ? { ...t, libraryName: null } : t)),
      }));
      toast(`Deleted "${name}"`, "ok");
    } catch (e) {
      toast(`Could not delete "${name}": ${e.message}`, "error");
    }
    reload();
  };

  const workflows = listing ? listing.workflows || [] : [];
  const examples = listing ? listing.examples || [] : [];
  return (
    <div className="modal-backdrop" onMouseDown={(e) => e.target === e.currentTarget && setOpen(false)}>
      <div className="dialog library-dialog" data-testid="library-dialog" role="dialog" aria-label="Workflow library">
        <div className="dialog-head">
          <h2>Library</h2>
          <button type="button" aria-label="Close" onClick={() => setOpen(false)}>
            ×
          </button>
        </div>
        <div className="library-body">
          {error ? <p className="library-error">{error}</p> : null}
          <h3>Saved workflows</h3>
          {listing && !workflows.length ? (
            <p className="library-empty">Nothing saved yet: Save (Ctrl+S) puts the active tab here.</p>
          ) : null}
          <ul className="library-list">
            {workflows.map((w) => (
              <li key={w.name} className="library-item" data-testid="library-item" data-name={w.name}>
                <button type="button" className="library-open" title={`Open ${w.name}`} onClick={() => openSaved(w.name)}>
                  <span className="library-name">{w.name}</span>
                  <span className="library-meta">
                    {[clockTime(w.modified), size(w.size)].filter(Boolean).join(" · ")}
                  </span>
                </button>
                <button type="button" data-testid="library-rename" onClick={() => rename(w.name)}>
                  Rename
                </button>
                <button type="button" className="danger" data-testid="library-delete" onClick={() => remove(w.name)}>
                  Delete
                </button>
              </li>
            ))}
          </ul>
          <h3>Examples</h3>
          <ul className="library-list">
            {examples.map((x) => (
              <li key={x.name} className="library-item example" data-testid="library-example" data-name={x.name}>
                <button type="button" className="library-open" title={`Open the example ${x.name}`} onClick={() => openEx(x.name)}>
                  <span className="library-name">{x.name}</span>
                  {x.description ? <span className="library-meta">{x.description}</span> : null}
                </button>
              </li>
            ))}
          </ul>
        </div>
      </div>
    </div>
  );
}
