// The studio's layout: the top bar (tabs, toolbar, run bar), the node library on the left,
// the canvas in the middle, the Train panel (when open) and the queue and gallery on the right,
// toasts and dialogs on top.
// Page-wide keys (Ctrl+Enter runs, Ctrl+S saves), file drops and the unsaved-changes
// question on leaving live here too.
import { Component, useEffect, useRef } from "react";
import Canvas from "./canvas/Canvas.jsx";
import { TabBar } from "./tabs/TabBar.jsx";
import { NodeLibrary } from "./search/NodeLibrary.jsx";
import RunBar from "./run/RunBar.jsx";
import QueuePanel from "./panels/QueuePanel.jsx";
import ImageViewer from "./panels/ImageViewer.jsx";
import Toasts from "./panels/Toasts.jsx";
import MaskEditor from "./mask/MaskEditor.jsx";
import LibraryDialog from "./library/LibraryDialog.jsx";
import TrainPanel from "./train/TrainPanel.jsx";
import { useTrain } from "./train/store.js";
import { downloadTab, isWorkflowFile, openFiles, saveTab } from "./library/files.js";
import { useStudio } from "./store/index.js";
import "./App.css";

const REVALIDATE_MS = 500;

// A part of the page that throws shows what went wrong instead of blanking the studio.
class Guard extends Component {
  constructor(props) {
    super(props);
    this.state = { error: null };
  }
  static getDerivedStateFromError(error) {
    return { error };
  }
  componentDidCatch(error) {
    console.error(`${this.props.name} failed:`, error);
  }
  render() {
    if (!this.state.error) return this.props.children;
    return (
      <div className="guard-error" role="alert">
        <strong>The {this.props.name} stopped working.</strong>
        <span>{String(this.state.error.message || this.state.error)}</span>
        <button type="button" onClick={() => this.setState({ error: null })}>
          Try again
        </button>
      </div>
    );
  }
}

function Toolbar() {
  const newTab = useStudio((s) => s.newTab);
  const setLibraryOpen = useStudio((s) => s.setLibraryOpen);
  const nodeLibraryOpen = useStudio((s) => s.nodeLibraryOpen);
  const toggleNodeLibrary = useStudio((s) => s.toggleNodeLibrary);
  const hasTab = useStudio((s) => Boolean(s.activeTabId));
  const trainOpen = useTrain((s) => s.open);
  const fileInput = useRef(null);
  const active = () => useStudio.getState().activeTabId;

  return (
    <div className="toolbar" role="toolbar" aria-label="Workflow">
      <button
        type="button"
        className={`toolbar-nodes${nodeLibraryOpen ? " active" : ""}`}
        aria-pressed={nodeLibraryOpen}
        title="Show or hide the node library"
        aria-label="Node library"
        onClick={() => toggleNodeLibrary()}
      >
        ☰<span className="wide-only"> Nodes</span>
      </button>
      <span className="toolbar-sep" />
      <button type="button" data-testid="toolbar-new" title="A new, empty workflow in a new tab" onClick={() => newTab()}>
        New
      </button>
      <label className="toolbar-open button-like" title="Open a workflow (.json) or a PNG made by the studio or ComfyUI (Ctrl+O)">
        Open
        <input
          ref={fileInput}
          type="file"
          accept=".json,.png,application/json,image/png"
          multiple
          data-testid="toolbar-open"
          aria-label="Open"
          onChange={(e) => {
            const files = Array.from(e.target.files || []);
            e.target.value = "";
            openFiles(files);
          }}
        />
      </label>
      <button
        type="button"
        data-testid="toolbar-save"
        disabled={!hasTab}
        title="Save in the library (Ctrl+S)"
        onClick={() => saveTab(active())}
      >
        Save
      </button>
      <button
        type="button"
        data-testid="toolbar-save-as"
        disabled={!hasTab}
        title="Save in the library under a new name (Ctrl+Shift+S)"
        onClick={() => saveTab(active(), { askName: true })}
      >
        Save as
      </button>
      <button
        type="button"
        data-testid="toolbar-download"
        disabled={!hasTab}
        title="Download the workflow as a .json file"
        onClick={() => downloadTab(active())}
      >
        Download
      </button>
      <button
        type="button"
        data-testid="toolbar-library"
        title="Saved workflows and examples"
        onClick={() => setLibraryOpen(true)}
      >
        Library
      </button>
      <button
        type="button"
        data-testid="toolbar-train"
        className={trainOpen ? "active" : ""}
        aria-pressed={trainOpen}
        title="Train a LoRA or an embedding from a few pictures"
        onClick={() => useTrain.getState().toggle()}
      >
        Train
      </button>
    </div>
  );
}

// Ctrl+Enter, Ctrl+S, Ctrl+Shift+S, Ctrl+O anywhere on the page (also while typing a prompt).
function usePageKeys() {
  useEffect(() => {
    const onKey = (e) => {
      if (!(e.ctrlKey || e.metaKey) || e.altKey) return;
      const state = useStudio.getState();
      const key = e.key.toLowerCase();
      if (e.key === "Enter") {
        e.preventDefault();
        state.runActive();
      } else if (key === "s") {
        e.preventDefault();
        if (state.activeTabId) saveTab(state.activeTabId, { askName: e.shiftKey });
      } else if (key === "o" && !e.shiftKey) {
        e.preventDefault();
        const input = document.querySelector("[data-testid=toolbar-open]");
        if (input) input.click();
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
}

// .json/.png files dropped anywhere open as workflows (a picture dropped on a Load Image
// node is the canvas's: it handles that drop first and marks it handled).
function useFileDrops() {
  useEffect(() => {
    const hasFiles = (e) => Array.from((e.dataTransfer && e.dataTransfer.types) || []).includes("Files");
    const onDragOver = (e) => {
      if (!hasFiles(e) || e.defaultPrevented) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
    };
    const onDrop = (e) => {
      if (!hasFiles(e)) return;
      const handled = e.defaultPrevented;
      e.preventDefault(); // never let the browser navigate to the file
      if (handled) return;
      const files = Array.from(e.dataTransfer.files || []);
      const workflows = files.filter(isWorkflowFile);
      if (workflows.length) openFiles(workflows);
      else if (files.length) {
        useStudio
          .getState()
          .toast("Drop a workflow (.json or a studio/ComfyUI PNG) to open it, or a picture on a Load Image node.", "error");
      }
    };
    window.addEventListener("dragover", onDragOver);
    window.addEventListener("drop", onDrop);
    return () => {
      window.removeEventListener("dragover", onDragOver);
      window.removeEventListener("drop", onDrop);
    };
  }, []);
}

// Leaving with tabs not saved in the library asks first.
function useLeaveGuard() {
  useEffect(() => {
    const onLeave = (e) => {
      if (!(useStudio.getState().tabs || []).some((t) => t.dirty)) return;
      e.preventDefault();
      e.returnValue = "";
    };
    window.addEventListener("beforeunload", onLeave);
    return () => window.removeEventListener("beforeunload", onLeave);
  }, []);
}

// Validation issues drawn on nodes go as soon as the graph is fixed: a tab that has
// issues is checked again shortly after each change. (Also: the tabs' order is kept for
// jobs that are followed across a reload.)
function useRevalidate() {
  useEffect(() => {
    const timers = new Map();
    const unsubscribe = useStudio.subscribe((state, before) => {
      if (state.tabs === before.tabs) return;
      state.rememberTabOrder();
      for (const tabId of Object.keys(state.issues || {})) {
        const tab = (state.tabs || []).find((t) => t.id === tabId);
        const old = (before.tabs || []).find((t) => t.id === tabId);
        if (!tab || tab === old) continue;
        clearTimeout(timers.get(tabId));
        timers.set(
          tabId,
          setTimeout(() => useStudio.getState().validateTab(tabId), REVALIDATE_MS),
        );
      }
    });
    return () => {
      unsubscribe();
      timers.forEach(clearTimeout);
    };
  }, []);
}

export default function App() {
  const nodeLibraryOpen = useStudio((s) => s.nodeLibraryOpen);
  const trainOpen = useTrain((s) => s.open);
  const className = `studio-app${nodeLibraryOpen ? " with-library" : ""}`;

  useEffect(() => {
    const state = useStudio.getState();
    if (state.loadDefs) state.loadDefs();
    useTrain.getState().restore();
    return state.startPolling();
  }, []);
  usePageKeys();
  useFileDrops();
  useLeaveGuard();
  useRevalidate();

  return (
    <div className={className}>
      <header className="topbar">
        <div className="topbar-tabs">
          <Guard name="tab bar">
            <TabBar />
          </Guard>
        </div>
        <Toolbar />
        <RunBar />
      </header>
      <div className="workspace">
        {nodeLibraryOpen ? (
          <aside className="left-panel" aria-label="Node library">
            <Guard name="node library">
              <NodeLibrary />
            </Guard>
          </aside>
        ) : null}
        <main className="center">
          <Guard name="canvas">
            <Canvas />
          </Guard>
        </main>
        {trainOpen ? (
          <Guard name="train panel">
            <TrainPanel />
          </Guard>
        ) : null}
        <Guard name="queue panel">
          <QueuePanel />
        </Guard>
      </div>
      <Toasts />
      <Guard name="viewer">
        <ImageViewer />
      </Guard>
      <Guard name="mask editor">
        <MaskEditor />
      </Guard>
      <Guard name="library">
        <LibraryDialog />
      </Guard>
    </div>
  );
}
