// Notes and group boxes on the canvas (kept in the workflow file beside its nodes).
import { GROUP_PREFIX, NOTE_PREFIX } from "../../graph/convert.js";
import { takenIds } from "./helpers.js";

export const annotationsSlice = (set, get, { findTab, update }) => ({
  addNote(tabId, position, text = "") {
    const tab = findTab(tabId);
    if (!tab) return null;
    const taken = takenIds(tab.nodes);
    let i = tab.nodes.length;
    while (taken.has(`${NOTE_PREFIX}${i}`)) i += 1;
    const node = {
      id: `${NOTE_PREFIX}${i}`,
      type: "note",
      position,
      width: 260,
      height: 120,
      data: { text, extra: {}, given: true },
    };
    update(tabId, (t) => ({ nodes: [...t.nodes, node] }));
    return node.id;
  },

  /** A group box around the selected nodes (or a default box at `position`). */
  addGroup(tabId, position, title = "Group") {
    const tab = findTab(tabId);
    if (!tab) return null;
    const chosen = tab.nodes.filter((n) => n.selected && n.type !== "group");
    let box = { x: position.x, y: position.y, width: 400, height: 260 };
    if (chosen.length) {
      const right = (n) => n.position.x + (n.width ?? n.measured?.width ?? 240);
      const bottom = (n) => n.position.y + (n.height ?? n.measured?.height ?? 120);
      const x = Math.min(...chosen.map((n) => n.position.x)) - 20;
      const y = Math.min(...chosen.map((n) => n.position.y)) - 50;
      box = { x, y, width: Math.max(...chosen.map(right)) + 20 - x, height: Math.max(...chosen.map(bottom)) + 20 - y };
    }
    const taken = takenIds(tab.nodes);
    let i = tab.nodes.length;
    while (taken.has(`${GROUP_PREFIX}${i}`)) i += 1;
    const node = {
      id: `${GROUP_PREFIX}${i}`,
      type: "group",
      position: { x: box.x, y: box.y },
      width: box.width,
      height: box.height,
      zIndex: -1,
      data: { title, extra: {} },
    };
    update(tabId, (t) => ({ nodes: [node, ...t.nodes] }));
    return node.id;
  },
});
