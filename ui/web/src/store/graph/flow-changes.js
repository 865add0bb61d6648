// React Flow's changes applied to a tab (select, drag, resize, remove), moving nodes, and the
// view (pan and zoom) kept in metadata.studio.viewport; one undo step per drag or resize.
import { withStudio } from "./helpers.js";

export const flowChangesSlice = (set, get, { findTab, update }) => ({
  applyNodeChanges(tabId, changes) {
    const tab = findTab(tabId);
    if (!tab) return;
    const removed = changes.filter((c) => c.type === "remove").map((c) => c.id);
    if (removed.length) get().deleteElements(tabId, removed, []);
    const rest = changes.filter((c) => c.type !== "remove");
    if (!rest.length) return;
    const moved = rest.some((c) => c.type === "position" && c.position);
    const resized = rest.some((c) => c.type === "dimensions" && c.resizing !== undefined && c.setAttributes);
    const byId = new Map();
    for (const change of rest) {
      if (!byId.has(change.id)) byId.set(change.id, []);
      byId.get(change.id).push(change);
    }
    const apply = (node) => {
      const list = byId.get(node.id);
      if (!list) return node;
      const next = { ...node };
      for (const c of list) {
        if (c.type === "select") next.selected = c.selected;
        else if (c.type === "position") {
          if (c.position) next.position = c.position;
          if (c.dragging !== undefined) next.dragging = c.dragging;
        } else if (c.type === "dimensions" && c.dimensions) {
          next.measured = { ...c.dimensions };
          if (c.setAttributes === true || c.setAttributes === "width") next.width = c.dimensions.width;
          if (c.setAttributes === true || c.setAttributes === "height") next.height = c.dimensions.height;
          if (c.resizing !== undefined) next.resizing = c.resizing;
        }
      }
      return next;
    };
    // one undo step per drag or resize of the same nodes (selection changes do not count)
    const ids = [...new Set(rest.filter((c) => c.type !== "select").map((c) => c.id))].sort().join(",");
    update(tabId, (t) => ({ nodes: t.nodes.map(apply) }), {
      dirty: moved || resized,
      undo: moved || resized,
      undoKey: `${resized ? "size" : "move"}:${ids}`,
    });
  },

  applyEdgeChanges(tabId, changes) {
    const removed = changes.filter((c) => c.type === "remove").map((c) => c.id);
    if (removed.length) get().deleteElements(tabId, [], removed);
    const selects = new Map(changes.filter((c) => c.type === "select").map((c) => [c.id, c.selected]));
    if (!selects.size) return;
    update(
      tabId,
      (t) => ({ edges: t.edges.map((e) => (selects.has(e.id) ? { ...e, selected: selects.get(e.id) } : e)) }),
      { dirty: false, undo: false },
    );
  },

  /** Move nodes (a group's contents follow the group); positions: {id: {x, y}}. */
  moveNodes(tabId, positions) {
    // part of a drag whose undo step is already taken
    update(tabId, (t) => ({ nodes: t.nodes.map((n) => (positions[n.id] ? { ...n, position: positions[n.id] } : n)) }), {
      undo: false,
    });
  },

  setViewport(tabId, viewport) {
    const round = (v, d) => Math.round(v * d) / d;
    const value = { x: round(viewport.x, 1), y: round(viewport.y, 1), zoom: round(viewport.zoom, 1000) };
    update(tabId, (t) => ({ metadata: withStudio(t.metadata, "viewport", value) }), { dirty: false, undo: false });
  },
});
