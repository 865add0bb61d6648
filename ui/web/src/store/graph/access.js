// How every part of the graph slice reaches a tab: find it, make one from a workflow, and change
// one (a snapshot for undo first). One kit per store, handed to each part (store/graph.js).
import { workflowToFlow } from "../../graph/convert.js";
import { isObject } from "../../graph/defs.js";
import { newTabId } from "./helpers.js";
import { undoHistory } from "./undo.js";

/**
 * The kit: findTab, types (the node definitions by type), update, updateNode, makeTab,
 * uniqueTitle, and the undo history's history, stacks and snapshot.
 */
export function tabAccess(set, get) {
  const findTab = (tabId) => get().tabs.find((t) => t.id === tabId) || null;
  const types = () => get().defs.types;
  const { history, stacks, snapshot } = undoHistory(findTab);

  /** Change one tab: fn(tab) -> fields to replace. dirty: whether the graph changed. */
  const update = (tabId, fn, { dirty = true, undoKey, undo = true } = {}) => {
    const tab = findTab(tabId);
    if (!tab) return;
    if (undo) snapshot(tabId, undoKey);
    set((s) => ({
      tabs: s.tabs.map((t) => {
        if (t.id !== tabId) return t;
        const patch = fn(t);
        if (!patch) return t;
        return { ...t, ...patch, dirty: dirty ? true : t.dirty };
      }),
    }));
  };

  const updateNode = (tab, nodeId, fn) => tab.nodes.map((n) => (n.id === nodeId ? fn(n) : n));

  const makeTab = (workflow, { title, libraryName = null, dirty = false, id = newTabId() } = {}) => {
    const flow = workflowToFlow(workflow, types());
    const name = isObject(workflow) && isObject(workflow.metadata) ? workflow.metadata.name : null;
    return {
      id,
      title: title || (typeof name === "string" && name) || uniqueTitle("Untitled"),
      libraryName,
      nodes: flow.nodes,
      edges: flow.edges,
      metadata: flow.metadata,
      groups: flow.groups,
      notes: flow.notes,
      dirty,
    };
  };

  const uniqueTitle = (stem) => {
    const titles = new Set(get().tabs.map((t) => t.title));
    if (!titles.has(stem)) return stem;
    for (let i = 2; ; i++) if (!titles.has(`${stem} ${i}`)) return `${stem} ${i}`;
  };

  return { findTab, types, history, stacks, snapshot, update, updateNode, makeTab, uniqueTitle };
}
