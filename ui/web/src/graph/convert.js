// A workflow file (docs/workflow-format.md, version 1) <-> React Flow nodes and edges.
//
// Flow nodes, by `type`:
//   "studio"  a workflow node; id = the workflow's node id; data = {type, inputs, order, title?, mode?,
//             color?, version?, extra, unknown?, sockets?, raw?, badInputs?}. `inputs` holds the
//             constants (and links the canvas cannot draw, kept verbatim); drawn links are edges.
//   "reroute" a reroute dot (metadata.studio.reroutes); id = "reroute:" + its id; data = {rid, extra}.
//   "note"    a note of the file; data = {text, extra, given}.
//   "group"   a group box of the file, drawn behind nodes; data = {title, color?, extra}.
// Edges: {id: "e:<target>/<input>", source, sourceHandle: output name | "out", target, targetHandle:
// input name | "in"}; one edge per input. A link drawn through reroutes is a chain of edges; the
// workflow's input always holds the direct link, and metadata.studio.via says which reroute the
// last edge comes from.
//
// Everything the canvas cannot show is kept and written back as it came, so opening a file and
// saving it changes nothing. Pure module (no React, no DOM): node's test runner imports it.
import { compatible, isLink, isObject, ANY } from "./defs.js";

export const REROUTE_PREFIX = "reroute:";
export const NOTE_PREFIX = "note:";
export const GROUP_PREFIX = "group:";
export const REROUTE_IN = "in";
export const REROUTE_OUT = "out";

const NODE_KEYS = new Set(["type", "version", "inputs", "mode", "title", "position", "size", "color"]);
const MODES = new Set(["bypass", "mute"]);

export function isPoint(value) {
  return Array.isArray(value) && value.length === 2 && value.every((v) => typeof v === "number" && Number.isFinite(v));
}

const round = (v) => Math.round(v);

export function edgeId(target, targetHandle) {
  return `e:${target}/${targetHandle}`;
}

export function makeEdge(source, sourceHandle, target, targetHandle) {
  return { id: edgeId(target, targetHandle), source, sourceHandle, target, targetHandle };
}

export function rerouteNodeId(rid) {
  return REROUTE_PREFIX + rid;
}

/** Columns by depth for nodes without a position (links decide the depth). */
export function autoLayout(nodes) {
  const depth = {};
  const visiting = {};
  const depthOf = (id) => {
    if (depth[id] !== undefined) return depth[id];
    if (visiting[id]) return 0;
    visiting[id] = true;
    let d = 0;
    const entry = nodes[id];
    const inputs = isObject(entry) && isObject(entry.inputs) ? entry.inputs : {};
    for (const value of Object.values(inputs)) {
      if (isLink(value) && value.node in nodes && value.node !== id) d = Math.max(d, depthOf(value.node) + 1);
    }
    depth[id] = d;
    return d;
  };
  const rows = {};
  const placed = {};
  for (const id of Object.keys(nodes)) {
    const d = depthOf(id);
    rows[d] = (rows[d] || 0) + 1;
    placed[id] = [40 + d * 300, 60 + (rows[d] - 1) * 220];
  }
  return placed;
}

// --- sockets ------------------------------------------------------------------------------

/**
 * The sockets a studio node draws: [{name, type}] inputs (those taking links) and outputs.
 * Unknown types get "*" sockets for the links the file gives them.
 */
export function nodeSockets(node, types) {
  const data = node.data || {};
  const def = types[data.type];
  if (def && !data.unknown) {
    return {
      inputs: (def.inputs || []).filter((s) => s.accepts !== "constant").map((s) => ({ name: s.name, type: s.type })),
      outputs: (def.outputs || []).map((o) => ({ name: o.name, type: o.type })),
    };
  }
  const sockets = data.sockets || { inputs: [], outputs: [] };
  return {
    inputs: sockets.inputs.map((name) => ({ name, type: ANY })),
    outputs: sockets.outputs.map((name) => ({ name, type: ANY })),
  };
}

function socketType(list, name) {
  const found = list.find((s) => s.name === name);
  return found ? found.type : null;
}

/** Index of a flow's nodes by id and of its edges by "target/handle". */
export function indexFlow(nodes, edges) {
  const byId = new Map();
  for (const node of nodes) byId.set(node.id, node);
  const into = new Map();
  for (const edge of edges) into.set(`${edge.target}/${edge.targetHandle}`, edge);
  return { byId, into };
}

/**
 * Where what arrives at (nodeId, handle) comes from, following reroutes back:
 * {node, output} of a studio node, or null when the chain is broken (or loops).
 */
export function resolveSource(index, nodeId, handle) {
  let edge = index.into.get(`${nodeId}/${handle}`);
  const seen = new Set();
  while (edge) {
    const source = index.byId.get(edge.source);
    if (!source) return null;
    if (source.type !== "reroute") return { node: source.id, output: edge.sourceHandle };
    if (seen.has(source.id)) return null;
    seen.add(source.id);
    edge = index.into.get(`${source.id}/${REROUTE_IN}`);
  }
  return null;
}

/** The socket type of an output of a flow node; a reroute takes the type of what feeds it. */
export function outputType(index, nodeId, handle, types) {
  const node = index.byId.get(nodeId);
  if (!node) return null;
  if (node.type === "reroute") {
    const source = resolveSource(index, nodeId, REROUTE_IN);
    return source ? outputType(index, source.node, source.output, types) : ANY;
  }
  if (node.type !== "studio") return null;
  return socketType(nodeSockets(node, types).outputs, handle);
}

/** The socket type an input of a flow node takes; a reroute takes what its consumers take (or anything). */
export function inputType(index, nodeId, handle, types, edges, seen = new Set()) {
  const node = index.byId.get(nodeId);
  if (!node) return null;
  if (node.type === "reroute") {
    if (seen.has(nodeId)) return ANY;
    seen.add(nodeId);
    let type = ANY;
    for (const edge of edges) {
      if (edge.source !== nodeId) continue;
      const wanted = inputType(index, edge.target, edge.targetHandle, types, edges, seen);
      if (wanted && wanted !== ANY) type = wanted;
    }
    return type;
  }
  if (node.type !== "studio") return null;
  return socketType(nodeSockets(node, types).inputs, handle);
}

/** Whether `target` (or a reroute behind it) feeds `source`: a new link would close a loop. */
export function wouldLoop(edges, source, target) {
  if (source === target) return true;
  const seen = new Set();
  const stack = [target];
  while (stack.length) {
    const id = stack.pop();
    if (id === source) return true;
    if (seen.has(id)) continue;
    seen.add(id);
    for (const edge of edges) if (edge.source === id) stack.push(edge.target);
  }
  return false;
}

/** Whether a connection may be drawn: both ends exist, types match, no loop. */
export function canConnect(nodes, edges, connection, types) {
  const { source, sourceHandle, target, targetHandle } = connection;
  const index = indexFlow(nodes, edges);
  const from = outputType(index, source, sourceHandle, types);
  // the input's current link is replaced, so leave it out when checking the target's type
  const others = edges.filter((e) => !(e.target === target && e.targetHandle === targetHandle));
  const to = inputType(indexFlow(nodes, others), target, targetHandle, types, others);
  if (!from || !to || !compatible(from, to)) return false;
  return !wouldLoop(others, source, target);
}

// --- workflow -> flow -----------------------------------------------------------------------

function studioNode(id, entry, fallback, types) {
  const node = { id, type: "studio", position: { x: fallback[0], y: fallback[1] }, data: {} };
  const data = node.data;
  if (!isObject(entry)) {
    data.raw = entry;
    data.type = null;
    data.unknown = true;
    data.inputs = {};
    data.order = [];
    data.extra = {};
    data.sockets = { inputs: [], outputs: [] };
    return node;
  }
  data.type = entry.type;
  data.unknown = !(typeof entry.type === "string" && types[entry.type]);
  data.extra = {};
  for (const [key, value] of Object.entries(entry)) {
    if (key === "type" || key === "inputs") continue;
    if (key === "version") data.version = value;
    else if (key === "mode" && MODES.has(value)) data.mode = value;
    else if ((key === "title" || key === "color") && typeof value === "string") data[key] = value;
    else if (key === "position" && isPoint(value)) node.position = { x: value[0], y: value[1] };
    else if (key === "size" && isPoint(value)) {
      node.width = value[0];
      node.height = value[1];
    } else data.extra[key] = value;
  }
  if ("inputs" in entry && !isObject(entry.inputs)) data.badInputs = entry.inputs;
  const inputs = isObject(entry.inputs) ? entry.inputs : {};
  data.inputs = { ...inputs };
  data.order = Object.keys(inputs);
  if (isObject(entry.inputs) && !data.order.length) data.hadInputs = true;
  if (data.unknown) data.sockets = { inputs: Object.keys(inputs).filter((k) => isLink(inputs[k])), outputs: [] };
  return node;
}

/**
 * A workflow object -> {nodes, edges, metadata, groups, notes} for the canvas. `types` maps
 * node type names to their descriptions. `groups`/`notes` hold the entries that could not be
 * drawn (written back as they came); drawn ones are flow nodes.
 */
export function workflowToFlow(workflow, types = {}) {
  const wf = isObject(workflow) ? workflow : {};
  const source = isObject(wf.nodes) ? wf.nodes : {};
  const placed = autoLayout(source);
  const studio = [];
  for (const [id, entry] of Object.entries(source)) studio.push(studioNode(id, entry, placed[id], types));
  const byId = new Map(studio.map((n) => [n.id, n]));

  const metadata = isObject(wf.metadata) ? structuredClone(wf.metadata) : {};
  const meta = isObject(metadata.studio) ? metadata.studio : {};

  // outputs of unknown types that other nodes (or reroutes) link to become sockets
  const froms = (Array.isArray(meta.reroutes) ? meta.reroutes : []).map((r) => (isObject(r) ? r.from : null));
  for (const node of studio) froms.push(...Object.values(node.data.inputs));
  for (const value of froms) {
    if (!isLink(value)) continue;
    const origin = byId.get(value.node);
    if (origin && origin.data.unknown && origin.data.raw === undefined && !origin.data.sockets.outputs.includes(value.output)) {
      origin.data.sockets.outputs.push(value.output);
    }
  }

  // reroutes: dots first, then what feeds each (another reroute or a node's output)
  const reroutes = [];
  const rerouteById = new Map();
  for (const item of Array.isArray(meta.reroutes) ? meta.reroutes : []) {
    if (!isObject(item) || typeof item.id !== "string" || !item.id || rerouteById.has(item.id)) continue;
    const extra = {};
    for (const [key, value] of Object.entries(item)) if (!["id", "position", "from"].includes(key)) extra[key] = value;
    const position = isPoint(item.position) ? item.position : [0, 0];
    const node = {
      id: rerouteNodeId(item.id),
      type: "reroute",
      position: { x: position[0], y: position[1] },
      data: { rid: item.id, extra },
    };
    reroutes.push(node);
    rerouteById.set(item.id, { node, from: item.from });
  }

  const nodes = [...studio, ...reroutes];
  const flowIndex = () => indexFlow(nodes, edges);
  const edges = [];
  for (const { node, from } of rerouteById.values()) {
    if (isLink(from)) {
      const origin = byId.get(from.node);
      if (origin && socketType(nodeSockets(origin, types).outputs, from.output)) {
        edges.push(makeEdge(origin.id, from.output, node.id, REROUTE_IN));
      }
    } else if (isObject(from) && typeof from.reroute === "string" && rerouteById.has(from.reroute)) {
      edges.push(makeEdge(rerouteNodeId(from.reroute), REROUTE_OUT, node.id, REROUTE_IN));
    }
  }
  // a reroute chain that loops on itself is cut where it closes
  for (let i = edges.length - 1; i >= 0; i--) {
    const edge = edges[i];
    const rest = edges.filter((e) => e !== edge);
    if (wouldLoop(rest, edge.source, edge.target)) edges.splice(i, 1);
  }

  const via = isObject(meta.via) ? meta.via : {};
  for (const node of studio) {
    const inputs = node.data.inputs;
    const sockets = nodeSockets(node, types);
    for (const [name, value] of Object.entries(inputs)) {
      if (!isLink(value)) continue;
      const origin = byId.get(value.node);
      const inType = socketType(sockets.inputs, name);
      const outType = origin ? socketType(nodeSockets(origin, types).outputs, value.output) : null;
      if (!inType || !outType || !compatible(outType, inType)) continue; // kept verbatim in inputs
      delete inputs[name];
      const rid = via[`${node.id}/${name}`];
      const through = typeof rid === "string" && rerouteById.get(rid);
      if (through) {
        const resolved = resolveSource(flowIndex(), through.node.id, REROUTE_IN);
        if (resolved && resolved.node === value.node && resolved.output === value.output) {
          edges.push(makeEdge(through.node.id, REROUTE_OUT, node.id, name));
          continue;
        }
      }
      edges.push(makeEdge(value.node, value.output, node.id, name));
    }
  }

  // groups and notes: drawn when well formed, kept verbatim otherwise
  const groupNodes = [];
  const groups = [];
  (Array.isArray(wf.groups) ? wf.groups : []).forEach((group, i) => {
    const bounds = isObject(group) ? group.bounds : null;
    const ok = Array.isArray(bounds) && bounds.length === 4 && bounds.every((v) => typeof v === "number" && Number.isFinite(v));
    if (!ok || (group.title !== undefined && typeof group.title !== "string")) {
      groups.push(group);
      return;
    }
    const extra = {};
    for (const [key, value] of Object.entries(group)) if (!["title", "bounds"].includes(key)) extra[key] = value;
    groupNodes.push({
      id: `${GROUP_PREFIX}${i}`,
      type: "group",
      position: { x: bounds[0], y: bounds[1] },
      width: Math.max(bounds[2], 40),
      height: Math.max(bounds[3], 40),
      zIndex: -1,
      data: { title: group.title, extra, bounds },
    });
  });
  const noteNodes = [];
  const notes = [];
  (Array.isArray(wf.notes) ? wf.notes : []).forEach((note, i) => {
    if (!isObject(note) || (note.text !== undefined && typeof note.text !== "string")) {
      notes.push(note);
      return;
    }
    const extra = {};
    for (const [key, value] of Object.entries(note)) {
      const shown = key === "text" || ((key === "position" || key === "size") && isPoint(value));
      if (!shown) extra[key] = value;
    }
    const given = isPoint(note.position);
    const fallback = [40, 60 + i * 120];
    const position = given ? note.position : fallback;
    const node = {
      id: `${NOTE_PREFIX}${i}`,
      type: "note",
      position: { x: position[0], y: position[1] },
      data: { text: note.text, extra, given, fallback },
    };
    if (isPoint(note.size)) {
      node.width = note.size[0];
      node.height = note.size[1];
    }
    noteNodes.push(node);
  });

  return { nodes: [...groupNodes, ...nodes, ...noteNodes], edges, metadata, groups, notes };
}

// --- flow -> workflow -----------------------------------------------------------------------

function inputOrder(node, def, linked) {
  const names = [...(node.data.order || [])];
  const add = (name) => {
    if (!names.includes(name)) names.push(name);
  };
  for (const spec of def ? def.inputs || [] : []) if (spec.name in node.data.inputs || linked.has(spec.name)) add(spec.name);
  for (const name of Object.keys(node.data.inputs)) add(name);
  for (const name of linked.keys()) add(name);
  return names;
}

function nodeEntry(node, index, types, via) {
  const data = node.data;
  if (data.raw !== undefined) return data.raw;
  const def = data.unknown ? null : types[data.type];
  const entry = { type: data.type };
  if (data.version !== undefined) entry.version = data.version;
  const linked = new Map();
  for (const [key, edge] of index.into) {
    if (edge.target !== node.id) continue;
    const handle = key.slice(node.id.length + 1);
    const origin = resolveSource(index, node.id, handle);
    if (!origin) continue;
    linked.set(handle, origin);
    if (index.byId.get(edge.source).type === "reroute") via[`${node.id}/${handle}`] = index.byId.get(edge.source).data.rid;
  }
  if (data.badInputs !== undefined) {
    entry.inputs = data.badInputs;
  } else {
    const inputs = {};
    for (const name of inputOrder(node, def, linked)) {
      if (linked.has(name)) inputs[name] = { node: linked.get(name).node, output: linked.get(name).output };
      else if (name in data.inputs) inputs[name] = data.inputs[name];
    }
    if (Object.keys(inputs).length || data.hadInputs) entry.inputs = inputs;
  }
  if (data.mode) entry.mode = data.mode;
  if (typeof data.title === "string" && data.title) entry.title = data.title;
  entry.position = [round(node.position.x), round(node.position.y)];
  if (node.width != null && node.height != null) entry.size = [round(node.width), round(node.height)];
  if (typeof data.color === "string") entry.color = data.color;
  return Object.assign(entry, data.extra || {});
}

/**
 * {nodes, edges, metadata, groups, notes} of a tab -> the workflow object (version 1).
 * `types` maps node type names to their descriptions.
 */
export function flowToWorkflow(flow, types = {}) {
  const nodes = flow.nodes || [];
  const edges = flow.edges || [];
  const index = indexFlow(nodes, edges);
  const wf = { version: 1, nodes: {} };
  const via = {};
  for (const node of nodes) if (node.type === "studio") wf.nodes[node.id] = nodeEntry(node, index, types, via);

  const groups = [];
  for (const node of nodes) {
    if (node.type !== "group") continue;
    const width = node.width ?? node.measured?.width ?? node.data.bounds?.[2] ?? 200;
    const height = node.height ?? node.measured?.height ?? node.data.bounds?.[3] ?? 120;
    const group = {};
    if (node.data.title !== undefined) group.title = node.data.title;
    group.bounds = [round(node.position.x), round(node.position.y), round(width), round(height)];
    groups.push(Object.assign(group, node.data.extra || {}));
  }
  groups.push(...(flow.groups || []));
  const notes = [];
  for (const node of nodes) {
    if (node.type !== "note") continue;
    const note = {};
    if (node.data.text !== undefined) note.text = node.data.text;
    const x = round(node.position.x);
    const y = round(node.position.y);
    const fallback = node.data.fallback;
    if (node.data.given || !fallback || fallback[0] !== x || fallback[1] !== y) note.position = [x, y];
    if (node.width != null && node.height != null) note.size = [round(node.width), round(node.height)];
    notes.push(Object.assign(note, node.data.extra || {}));
  }
  notes.push(...(flow.notes || []));
  if (groups.length) wf.groups = groups;
  if (notes.length) wf.notes = notes;

  const metadata = isObject(flow.metadata) ? structuredClone(flow.metadata) : {};
  const reroutes = [];
  for (const node of nodes) {
    if (node.type !== "reroute") continue;
    const item = { id: node.data.rid, position: [round(node.position.x), round(node.position.y)] };
    const edge = index.into.get(`${node.id}/${REROUTE_IN}`);
    const origin = edge && index.byId.get(edge.source);
    if (origin && origin.type === "reroute") item.from = { reroute: origin.data.rid };
    else if (origin) item.from = { node: origin.id, output: edge.sourceHandle };
    reroutes.push(Object.assign(item, node.data.extra || {}));
  }
  const studio = isObject(metadata.studio) ? metadata.studio : {};
  if (reroutes.length || "reroutes" in studio) studio.reroutes = reroutes;
  if (Object.keys(via).length || "via" in studio) studio.via = via;
  if (Object.keys(studio).length || isObject(metadata.studio)) metadata.studio = studio;
  if (Object.keys(metadata).length) wf.metadata = metadata;
  return wf;
}
