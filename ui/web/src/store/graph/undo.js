// Undo and redo per tab: snapshots of a tab's graph (nodes, edges, metadata, groups, notes),
// kept outside the tabs so they are never autosaved; quick edits of one thing are one step.
const MAX_UNDO = 100;
const COALESCE_MS = 1200; // edits of one thing closer together than this are one undo step

const snapshotOf = (tab) => ({
  nodes: tab.nodes,
  edges: tab.edges,
  metadata: tab.metadata,
  groups: tab.groups,
  notes: tab.notes,
});

/**
 * The undo stacks of one store. findTab(tabId) -> the tab or null. Returns the stacks by tab
 * (`history`, a Map the tabs part forgets a closed tab in), stacks(tabId) and snapshot(tabId, key).
 */
export function undoHistory(findTab) {
  // undo stacks and the last snapshot's key live outside the tabs (never autosaved)
  const history = new Map(); // tabId -> {past: [], future: [], key, at}

  const stacks = (tabId) => {
    if (!history.has(tabId)) history.set(tabId, { past: [], future: [], key: null, at: 0 });
    return history.get(tabId);
  };

  /** Remember the tab as it is now, so undo comes back to it. Same `key` soon after: one step. */
  const snapshot = (tabId, key = null) => {
    const tab = findTab(tabId);
    if (!tab) return;
    const h = stacks(tabId);
    const now = Date.now();
    if (key && h.key === key && now - h.at < COALESCE_MS) {
      h.at = now;
      return;
    }
    h.past.push(snapshotOf(tab));
    if (h.past.length > MAX_UNDO) h.past.shift();
    h.future = [];
    h.key = key;
    h.at = now;
  };

  return { history, stacks, snapshot };
}

/** The store's undo actions: snapshot, canUndo, undo, redo. */
export const undoSlice = (set, get, { findTab, stacks, snapshot }) => ({
  /** Take a snapshot now (before a drag starts, say). */
  snapshot(tabId, key) {
    snapshot(tabId, key);
  },

  canUndo(tabId) {
    return stacks(tabId).past.length > 0;
  },

  undo(tabId) {
    const tab = findTab(tabId);
    const h = stacks(tabId);
    if (!tab || !h.past.length) return false;
    h.future.push(snapshotOf(tab));
    const back = h.past.pop();
    h.key = null;
    set((s) => ({ tabs: s.tabs.map((t) => (t.id === tabId ? { ...t, ...back, dirty: true } : t)) }));
    return true;
  },

  redo(tabId) {
    const tab = findTab(tabId);
    const h = stacks(tabId);
    if (!tab || !h.future.length) return false;
    h.past.push(snapshotOf(tab));
    const next = h.future.pop();
    h.key = null;
    set((s) => ({ tabs: s.tabs.map((t) => (t.id === tabId ? { ...t, ...next, dirty: true } : t)) }));
    return true;
  },
});
