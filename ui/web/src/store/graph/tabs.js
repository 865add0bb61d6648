// The open tabs (one workflow each, as React Flow nodes and edges: graph/convert.js): which is
// active, opening, closing, renaming and clearing them, and what the canvas lends the panels.
import { flowToWorkflow } from "../../graph/convert.js";
import { EMPTY_WORKFLOW, withStudio } from "./helpers.js";

export const tabsSlice = (set, get, { findTab, types, history, snapshot, update, makeTab, uniqueTitle }) => ({
  tabs: [],
  activeTabId: null,
  // what the canvas lends the panels outside it (set by Canvas): {center() -> {x, y}}
  canvasApi: null,

  setCanvasApi(canvasApi) {
    set({ canvasApi });
  },

  activeTab() {
    return findTab(get().activeTabId);
  },

  tabWorkflow(tabId) {
    const tab = findTab(tabId === undefined ? get().activeTabId : tabId);
    if (!tab) return structuredClone(EMPTY_WORKFLOW);
    return flowToWorkflow(tab, types());
  },

  openWorkflow(workflow, { title, libraryName = null, newTab = true } = {}) {
    const current = get().activeTab();
    if (!newTab && current) {
      const fresh = makeTab(workflow, { title: title || current.title, libraryName, id: current.id });
      snapshot(current.id);
      set((s) => ({ tabs: s.tabs.map((t) => (t.id === current.id ? fresh : t)) }));
      return current.id;
    }
    const tab = makeTab(workflow, { title, libraryName });
    set((s) => ({ tabs: [...s.tabs, tab], activeTabId: tab.id }));
    return tab.id;
  },

  newTab() {
    return get().openWorkflow(EMPTY_WORKFLOW, { title: uniqueTitle("Untitled") });
  },

  closeTab(tabId) {
    const tab = findTab(tabId);
    if (!tab) return false;
    if (tab.dirty && !window.confirm(`"${tab.title}" has unsaved changes. Close it anyway?`)) return false;
    history.delete(tabId);
    const tabs = get().tabs;
    const index = tabs.indexOf(tab);
    const rest = tabs.filter((t) => t.id !== tabId);
    let active = get().activeTabId;
    if (active === tabId) active = rest.length ? rest[Math.min(index, rest.length - 1)].id : null;
    set((s) => {
      const nodeState = { ...(s.nodeState || {}) };
      const issues = { ...(s.issues || {}) };
      delete nodeState[tabId];
      delete issues[tabId];
      return { tabs: rest, activeTabId: active, nodeState, issues };
    });
    if (!rest.length) get().newTab();
    return true;
  },

  setActiveTab(tabId) {
    if (findTab(tabId)) set({ activeTabId: tabId });
  },

  renameTab(tabId, title) {
    const name = String(title || "").trim();
    if (!name) return;
    update(tabId, () => ({ title: name }), { dirty: false, undo: false });
  },

  markSaved(tabId, libraryName) {
    update(tabId, (t) => ({ dirty: false, libraryName: libraryName ?? t.libraryName, title: libraryName || t.title }), {
      dirty: false,
      undo: false,
    });
  },

  clearCanvas(tabId) {
    update(tabId, (t) => ({
      nodes: [],
      edges: [],
      groups: [],
      notes: [],
      metadata: withStudio(withStudio(t.metadata, "seed_control", undefined), "via", undefined),
    }));
  },
});
