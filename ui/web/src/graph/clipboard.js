// Copy and paste of nodes: a copy is a piece of workflow file ({version, nodes, seed_control});
// pasting gives its nodes fresh ids, moves them, keeps the links among them and (when asked)
// the links coming from nodes outside the copy. Pure (no React, no DOM).
import { canConnect, flowToWorkflow, makeEdge, workflowToFlow } from "./convert.js";
import { freshId, isLink, isObject } from "./defs.js";

/** The copy of a tab's nodes `ids` (studio nodes; links to other nodes stay in their inputs). */
export function copyNodes(tab, ids, seedControls, types) {
  const wanted = new Set(ids);
  const whole = flowToWorkflow(tab, types);
  const nodes = Object.fromEntries(Object.entries(whole.nodes).filter(([id]) => wanted.has(id)));
  const seeds = Object.fromEntries(Object.entries(seedControls || {}).filter(([id]) => wanted.has(id)));
  return { version: 1, nodes, seed_control: seeds };
}

/**
 * The copy `clip` pasted into `tab`: {nodes, edges} of the tab afterwards (the pasted nodes
 * selected, the others not), `ids` of the new nodes and `seedControls` (the tab's, with the
 * copies'). at: where the copy's top-left corner goes (flow coordinates); default: 40 px
 * beside the originals. keepLinks: links from nodes outside the copy too.
 */
export function pasteNodes(tab, clip, { at = null, keepLinks = false, seedControls = {} }, types) {
  const taken = new Set(tab.nodes.map((n) => n.id));
  const rename = {};
  for (const [id, entry] of Object.entries(clip.nodes)) {
    const fresh = freshId(isObject(entry) && typeof entry.type === "string" ? entry.type : id, taken);
    taken.add(fresh);
    rename[id] = fresh;
  }
  const positions = Object.values(clip.nodes).map((e) => (isObject(e) && Array.isArray(e.position) ? e.position : [0, 0]));
  const minX = Math.min(...positions.map((p) => p[0]));
  const minY = Math.min(...positions.map((p) => p[1]));
  const offset = at ? [at.x - minX, at.y - minY] : [40, 40];
  const existing = new Set(tab.nodes.filter((n) => n.type === "studio").map((n) => n.id));
  const nodes = {};
  for (const [id, entry] of Object.entries(clip.nodes)) {
    const copy = structuredClone(entry);
    if (isObject(copy)) {
      if (Array.isArray(copy.position)) copy.position = [copy.position[0] + offset[0], copy.position[1] + offset[1]];
      const inputs = isObject(copy.inputs) ? copy.inputs : {};
      for (const [name, value] of Object.entries(inputs)) {
        if (!isLink(value)) continue;
        if (value.node in rename) inputs[name] = { node: rename[value.node], output: value.output };
        else if (!(keepLinks && existing.has(value.node))) delete inputs[name];
      }
    }
    nodes[rename[id]] = copy;
  }
  const flow = workflowToFlow({ version: 1, nodes }, types);
  // links from nodes outside the copy (keepLinks) are drawn into the tab's graph
  const outside = [];
  for (const node of flow.nodes) {
    for (const [name, value] of Object.entries(node.data.inputs || {})) {
      if (!isLink(value) || !existing.has(value.node)) continue;
      outside.push({ source: value.node, sourceHandle: value.output, target: node.id, targetHandle: name });
      delete node.data.inputs[name];
    }
    node.selected = true;
  }
  const all = [...tab.nodes.map((n) => (n.selected ? { ...n, selected: false } : n)), ...flow.nodes];
  let edges = [...tab.edges, ...flow.edges];
  for (const c of outside) {
    if (canConnect(all, edges, c, types)) edges = [...edges, makeEdge(c.source, c.sourceHandle, c.target, c.targetHandle)];
  }
  const seeds = { ...seedControls };
  for (const [id, value] of Object.entries(clip.seed_control || {})) if (id in rename) seeds[rename[id]] = value;
  return { nodes: all, edges, ids: flow.nodes.map((n) => n.id), seedControls: seeds };
}
