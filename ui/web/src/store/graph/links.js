// Links between sockets: checking a connection's types, drawing a link, linking a new node to a
// dropped link, and reroute dots placed on a link.
import {
  canConnect,
  indexFlow,
  inputType,
  makeEdge,
  nodeSockets,
  outputType,
  REROUTE_IN,
  REROUTE_OUT,
  rerouteNodeId,
} from "../../graph/convert.js";
import { compatible } from "../../graph/defs.js";
import { takenIds } from "./helpers.js";

export const linksSlice = (set, get, { findTab, types, update }) => ({
  isValidConnection(tabId, connection) {
    const tab = findTab(tabId);
    return Boolean(tab) && canConnect(tab.nodes, tab.edges, connection, types());
  },

  /** Draw a link (replacing what the input had); false when the types do not match. */
  connect(tabId, connection, { undo = true } = {}) {
    if (!get().isValidConnection(tabId, connection)) return false;
    const { source, sourceHandle, target, targetHandle } = connection;
    update(
      tabId,
      (t) => ({
        edges: [
          ...t.edges.filter((e) => !(e.target === target && e.targetHandle === targetHandle)),
          makeEdge(source, sourceHandle, target, targetHandle),
        ],
      }),
      { undo },
    );
    return true;
  },

  /** Connect a new node to a dragged link: the first input (or output) of a matching type. */
  connectNew(tabId, newId, link, options = {}) {
    const tab = findTab(tabId);
    const node = tab && tab.nodes.find((n) => n.id === newId);
    if (!node || !link) return false;
    const sockets = nodeSockets(node, types());
    const index = indexFlow(tab.nodes, tab.edges);
    if (link.from === "output") {
      const type = outputType(index, link.nodeId, link.handle, types());
      const input = sockets.inputs.find((s) => compatible(type, s.type));
      const connection = input && { source: link.nodeId, sourceHandle: link.handle, target: newId, targetHandle: input.name };
      return connection ? get().connect(tabId, connection, options) : false;
    }
    const type = inputType(index, link.nodeId, link.handle, types(), tab.edges);
    const output = sockets.outputs.find((s) => compatible(s.type, type));
    const connection = output && { source: newId, sourceHandle: output.name, target: link.nodeId, targetHandle: link.handle };
    return connection ? get().connect(tabId, connection, options) : false;
  },

  /** A reroute dot at `position` on an edge: the edge becomes source -> dot -> target. */
  insertReroute(tabId, edgeIdValue, position) {
    const tab = findTab(tabId);
    const edge = tab && tab.edges.find((e) => e.id === edgeIdValue);
    if (!edge) return null;
    const taken = takenIds(tab.nodes);
    let n = 1;
    while (taken.has(rerouteNodeId(`r${n}`))) n += 1;
    const rid = `r${n}`;
    const node = {
      id: rerouteNodeId(rid),
      type: "reroute",
      position: { x: Math.round(position.x - 7), y: Math.round(position.y - 7) },
      data: { rid, extra: {} },
    };
    update(tabId, (t) => ({
      nodes: [...t.nodes, node],
      edges: [
        ...t.edges.filter((e) => e.id !== edge.id),
        makeEdge(edge.source, edge.sourceHandle, node.id, REROUTE_IN),
        makeEdge(node.id, REROUTE_OUT, edge.target, edge.targetHandle),
      ],
    }));
    return node.id;
  },
});
