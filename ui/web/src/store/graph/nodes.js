// Nodes on the canvas: adding one (defaults from what is installed, a seed control, linked to a
// dropped link), its data and title, bypass and mute, selecting, and deleting nodes and edges.
import { makeEdge, REROUTE_IN } from "../../graph/convert.js";
import { freshId, isSeedInput, newNodeInputs } from "../../graph/defs.js";
import { takenIds, withStudio } from "./helpers.js";

export const nodesSlice = (set, get, { findTab, types, update, updateNode }) => ({
  /** Add a node of `type` with its top-left at `position` (flow coordinates); returns its id. */
  addNode(tabId, type, position = { x: 100, y: 100 }, { select = true, link = null } = {}) {
    const def = types()[type];
    const tab = findTab(tabId);
    if (!def || !tab) return null;
    const id = freshId(type, takenIds(tab.nodes));
    // not exactly on top of another node (two nodes added at the middle of the view, say)
    const spot = { x: Math.round(position.x), y: Math.round(position.y) };
    const near = (n) => Math.abs(n.position.x - spot.x) < 12 && Math.abs(n.position.y - spot.y) < 12;
    for (let i = 0; i < 50 && tab.nodes.some(near); i++) {
      spot.x += 30;
      spot.y += 30;
    }
    const node = {
      id,
      type: "studio",
      position: spot,
      selected: select,
      data: { type, inputs: newNodeInputs(def, get().models), order: [], extra: {}, version: def.version },
    };
    const seeds = (def.inputs || []).filter(isSeedInput);
    update(tabId, (t) => {
      const patch = {
        nodes: [...(select ? t.nodes.map((n) => (n.selected ? { ...n, selected: false } : n)) : t.nodes), node],
      };
      if (seeds.length) {
        const controls = { ...get().seedControls(tabId) };
        controls[id] = Object.fromEntries(seeds.map((s) => [s.name, "randomize"]));
        patch.metadata = withStudio(t.metadata, "seed_control", controls);
      }
      return patch;
    });
    // a node made from a dropped link is connected to it in the same undo step
    if (link) get().connectNew(tabId, id, link, { undo: false });
    return id;
  },

  /** Merge `patch` into a node's data (title, text of a note, mode ...). */
  updateNodeData(tabId, nodeId, patch, { undoKey } = {}) {
    update(tabId, (t) => ({ nodes: updateNode(t, nodeId, (n) => ({ ...n, data: { ...n.data, ...patch } })) }), {
      undoKey: undoKey || `data:${nodeId}:${Object.keys(patch).join(",")}`,
    });
  },

  renameNode(tabId, nodeId, title) {
    const value = String(title || "").trim();
    get().updateNodeData(tabId, nodeId, { title: value || undefined });
  },

  /** Toggle bypass or mute on nodes: all of them in that mode -> back to running, else into it. */
  toggleMode(tabId, nodeIds, mode) {
    const tab = findTab(tabId);
    if (!tab) return;
    const ids = new Set(nodeIds);
    const chosen = tab.nodes.filter((n) => ids.has(n.id) && n.type === "studio" && n.data.raw === undefined);
    if (!chosen.length) return;
    const next = chosen.every((n) => n.data.mode === mode) ? undefined : mode;
    update(tabId, (t) => ({
      nodes: t.nodes.map((n) => (chosen.includes(n) ? { ...n, data: { ...n.data, mode: next } } : n)),
    }));
  },

  selectedIds(tabId) {
    const tab = findTab(tabId);
    return tab ? tab.nodes.filter((n) => n.selected).map((n) => n.id) : [];
  },

  selectAll(tabId) {
    update(tabId, (t) => ({ nodes: t.nodes.map((n) => (n.selected ? n : { ...n, selected: true })) }), {
      dirty: false,
      undo: false,
    });
  },

  /** Delete nodes and edges; what went through a deleted reroute is reconnected past it. */
  deleteElements(tabId, nodeIds = [], edgeIds = []) {
    const tab = findTab(tabId);
    if (!tab || (!nodeIds.length && !edgeIds.length)) return;
    const gone = new Set(nodeIds);
    update(tabId, (t) => {
      let edges = t.edges.filter((e) => !edgeIds.includes(e.id));
      for (const id of nodeIds) {
        const node = t.nodes.find((n) => n.id === id);
        if (!node || node.type !== "reroute") continue;
        const feed = edges.find((e) => e.target === id && e.targetHandle === REROUTE_IN);
        edges = edges.flatMap((e) => {
          if (e.source !== id) return [e];
          if (!feed) return [];
          return [makeEdge(feed.source, feed.sourceHandle, e.target, e.targetHandle)];
        });
      }
      edges = edges.filter((e) => !gone.has(e.source) && !gone.has(e.target));
      const controls = { ...get().seedControls(tabId) };
      let metadata = t.metadata;
      if (nodeIds.some((id) => id in controls)) {
        for (const id of nodeIds) delete controls[id];
        metadata = withStudio(metadata, "seed_control", controls);
      }
      return { nodes: t.nodes.filter((n) => !gone.has(n.id)), edges, metadata };
    });
  },

  deleteSelection(tabId) {
    const tab = findTab(tabId);
    if (!tab) return;
    get().deleteElements(
      tabId,
      tab.nodes.filter((n) => n.selected).map((n) => n.id),
      tab.edges.filter((e) => e.selected).map((e) => e.id),
    );
  },
});
