// Copy, paste and duplicate nodes: the page's clipboard (kept in the browser's storage too, so
// a copy can be pasted into another tab or window); the copying itself is graph/clipboard.js.
import { copyNodes, pasteNodes } from "../../graph/clipboard.js";
import { isObject } from "../../graph/defs.js";
import { withStudio } from "./helpers.js";

const CLIPBOARD_KEY = "workflow-studio.clipboard.v1";

export const copyPasteSlice = (set, get, { findTab, types, update }) => ({
  clipboard: null,

  /** Copy the selected nodes (or those of `nodeIds`), with the links among them, to the page's clipboard. */
  copySelection(tabId, nodeIds = null) {
    const tab = findTab(tabId);
    if (!tab) return 0;
    const wanted = nodeIds ? new Set(nodeIds) : null;
    const chosen = tab.nodes.filter((n) => (wanted ? wanted.has(n.id) : n.selected) && n.type === "studio");
    if (!chosen.length) return 0;
    const clip = copyNodes(tab, chosen.map((n) => n.id), get().seedControls(tabId), types());
    try {
      window.localStorage.setItem(CLIPBOARD_KEY, JSON.stringify(clip));
    } catch {
      // the clipboard stays in this page only
    }
    set({ clipboard: clip });
    return chosen.length;
  },

  /**
   * Paste the clipboard's nodes with fresh ids, their top-left corner at `at` (flow
   * coordinates; default: beside the originals). keepLinks: links from nodes outside the copy too.
   */
  paste(tabId, at = null, { keepLinks = false } = {}) {
    let clip = get().clipboard;
    try {
      const stored = JSON.parse(window.localStorage.getItem(CLIPBOARD_KEY) || "null");
      if (stored && isObject(stored.nodes)) clip = stored;
    } catch {
      // use the page's own
    }
    const tab = findTab(tabId);
    if (!tab || !clip || !isObject(clip.nodes) || !Object.keys(clip.nodes).length) return [];
    const result = pasteNodes(tab, clip, { at, keepLinks, seedControls: get().seedControls(tabId) }, types());
    update(tabId, (t) => ({
      nodes: result.nodes,
      edges: result.edges,
      metadata: withStudio(t.metadata, "seed_control", result.seedControls),
    }));
    return result.ids;
  },

  duplicateNodes(tabId, nodeIds) {
    const tab = findTab(tabId);
    if (!tab) return [];
    const saved = get().clipboard;
    let stored = null;
    try {
      stored = window.localStorage.getItem(CLIPBOARD_KEY);
    } catch {
      stored = null;
    }
    get().copySelection(tabId, nodeIds);
    const pasted = get().paste(tabId, null, { keepLinks: true });
    set({ clipboard: saved });
    try {
      if (stored === null) window.localStorage.removeItem(CLIPBOARD_KEY);
      else window.localStorage.setItem(CLIPBOARD_KEY, stored);
    } catch {
      // nothing to put back
    }
    return pasted;
  },
});
