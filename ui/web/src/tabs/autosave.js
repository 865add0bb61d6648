// Autosave: the open tabs (each as its workflow file, with its id, title, library name and
// whether it has unsaved changes; ids stay, so jobs followed by tab survive a reload) are written to localStorage "workflow-studio.tabs.v1" 300 ms after each
// change, and read back at start, so a reload loses nothing. Undo history is not kept.

export const STORAGE_KEY = "workflow-studio.tabs.v1";
const DEBOUNCE_MS = 300;

/** What was saved: {tabs: [{id, title, libraryName, dirty, workflow}], active: index}, or null. */
export function readSaved(storage = globalThis.localStorage) {
  let saved;
  try {
    saved = JSON.parse(storage.getItem(STORAGE_KEY) || "null");
  } catch {
    return null;
  }
  if (!saved || !Array.isArray(saved.tabs)) return null;
  const tabs = saved.tabs.filter((t) => t && typeof t === "object" && t.workflow && typeof t.workflow === "object");
  return {
    tabs: tabs.map((t) => ({
      id: typeof t.id === "string" && t.id ? t.id : null,
      title: typeof t.title === "string" ? t.title : "Untitled",
      libraryName: typeof t.libraryName === "string" ? t.libraryName : null,
      dirty: Boolean(t.dirty),
      workflow: t.workflow,
    })),
    active: Number.isInteger(saved.active) ? saved.active : 0,
  };
}

/** The saved form of the store's tabs. */
export function savedForm(state) {
  const tabs = state.tabs.map((tab) => ({
    id: tab.id,
    title: tab.title,
    libraryName: tab.libraryName,
    dirty: tab.dirty,
    workflow: state.tabWorkflow(tab.id),
  }));
  return { version: 1, tabs, active: Math.max(0, state.tabs.findIndex((t) => t.id === state.activeTabId)) };
}

/**
 * Save the tabs whenever they change (debounced), and at once when the page goes away.
 * `store`: {getState, subscribe}. Returns a function that stops it.
 */
export function startAutosave(store, { storage = globalThis.localStorage, onError = () => {} } = {}) {
  let timer = null;
  let warned = false;
  const write = () => {
    timer = null;
    try {
      storage.setItem(STORAGE_KEY, JSON.stringify(savedForm(store.getState())));
    } catch (error) {
      if (!warned) onError(error);
      warned = true;
    }
  };
  const unsubscribe = store.subscribe((state, before) => {
    if (state.tabs === before.tabs && state.activeTabId === before.activeTabId) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(write, DEBOUNCE_MS);
  });
  const flush = () => {
    if (timer) {
      clearTimeout(timer);
      write();
    }
  };
  window.addEventListener("pagehide", flush);
  window.addEventListener("beforeunload", flush);
  write();
  return () => {
    unsubscribe();
    flush();
    window.removeEventListener("pagehide", flush);
    window.removeEventListener("beforeunload", flush);
  };
}
