// The graph slice: node definitions and installed models from the server, the open tabs (one
// workflow each, as React Flow nodes and edges: graph/convert.js), every edit of a graph, and
// undo/redo per tab (snapshots). The contract is in the shared spec ("Graph slice").
import { api } from "../api.js";
import {
  canConnect,
  edgeId,
  flowToWorkflow,
  indexFlow,
  inputType,
  makeEdge,
  nodeSockets,
  outputType,
  REROUTE_IN,
  REROUTE_OUT,
  REROUTE_PREFIX,
  NOTE_PREFIX,
  GROUP_PREFIX,
  rerouteNodeId,
  workflowToFlow,
} from "../graph/convert.js";
import { compatible, freshId, indexDefs, isObject, isSeedInput, newNodeInputs } from "../graph/defs.js";
import { copyNodes, pasteNodes } from "../graph/clipboard.js";
import { readSaved, startAutosave } from "../tabs/autosave.js";

const MAX_UNDO = 100;
const COALESCE_MS = 1200; // edits of one thing closer together than this are one undo step
const FOCUS_REFRESH_MS = 2000;
const CLIPBOARD_KEY = "workflow-studio.clipboard.v1";
const EMPTY_WORKFLOW = { version: 1, nodes: {} };

let tabCounter = 0;
const newTabId = () => `tab-${Date.now().toString(36)}-${(tabCounter += 1)}`;

/** A flow's node ids in use (studio nodes and reroutes both). */
const takenIds = (nodes) => new Set(nodes.map((n) => n.id));

const snapshotOf = (tab) => ({
  nodes: tab.nodes,
  edges: tab.edges,
  metadata: tab.metadata,
  groups: tab.groups,
  notes: tab.notes,
});

const studioMeta = (metadata) => (isObject(metadata) && isObject(metadata.studio) ? metadata.studio : {});

/** metadata with metadata.studio[key] replaced by `value` (removed when undefined). */
function withStudio(metadata, key, value) {
  const studio = { ...studioMeta(metadata) };
  if (value === undefined) delete studio[key];
  else studio[key] = value;
  return { ...(metadata || {}), studio };
}

export const graphSlice = (set, get, storeApi) => {
  // undo stacks and the last snapshot's key live outside the tabs (never autosaved)
  const history = new Map(); // tabId -> {past: [], future: [], key, at}
  let defsPromise = null;
  let started = false;

  const stacks = (tabId) => {
    if (!history.has(tabId)) history.set(tabId, { past: [], future: [], key: null, at: 0 });
    return history.get(tabId);
  };

  const findTab = (tabId) => get().tabs.find((t) => t.id === tabId) || null;
  const types = () => get().defs.types;

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

  // ---- start: tabs saved in the browser, else the example txt2img ---------------------------

  const restoreTabs = async () => {
    const saved = readSaved();
    if (saved && saved.tabs.length) {
      const seen = new Set();
      const tabs = saved.tabs.map((t) => {
        const id = t.id && !seen.has(t.id) ? t.id : newTabId();
        seen.add(id);
        return makeTab(t.workflow, { id, title: t.title, libraryName: t.libraryName, dirty: t.dirty });
      });
      const active = tabs[Math.min(Math.max(saved.active, 0), tabs.length - 1)];
      set({ tabs, activeTabId: active.id });
    } else {
      let workflow = null;
      try {
        workflow = await api.example("txt2img");
      } catch {
        workflow = null;
      }
      if (get().tabs.length === 0) {
        if (workflow) get().openWorkflow(workflow, { title: "txt2img" });
        else get().newTab();
      }
    }
    // the store's subscribe: handed in by zustand, or from the store module (it imports this one)
    const store = storeApi && storeApi.subscribe ? storeApi : (await import("./index.js")).useStudio;
    startAutosave(store, {
      onError: () => get().toast && get().toast("The browser's storage is full: tabs are not autosaved.", "error"),
    });
    set({ tabsReady: true });
  };

  return {
    defs: { types: {}, list: [], colors: {} },
    defsLoaded: false,
    defsError: null,
    models: { checkpoints: [], defaults: {} },
    tabs: [],
    activeTabId: null,
    tabsReady: false,
    // what the canvas lends the panels outside it (set by Canvas): {center() -> {x, y}}
    canvasApi: null,

    // ---- definitions ----------------------------------------------------------------------

    /** Fetch node definitions and models; the first time also restores the tabs. */
    loadDefs() {
      if (defsPromise) return defsPromise;
      defsPromise = (async () => {
        try {
          const [nodes, models, sockets] = await Promise.all([
            api.nodes(),
            api.models().catch(() => null),
            api.sockets().catch(() => null),
          ]);
          const defs = indexDefs(nodes, sockets && sockets.colors);
          set({ defs, defsLoaded: true, defsError: null, ...(models ? { models } : {}) });
          // node types that came since a tab was opened (a node pack installed): draw them now
          for (const tab of get().tabs) {
            if (!tab.nodes.some((n) => n.type === "studio" && n.data.unknown && n.data.raw === undefined && defs.types[n.data.type])) continue;
            const fresh = makeTab(flowToWorkflow(tab, defs.types), { ...tab, id: tab.id });
            set((s) => ({ tabs: s.tabs.map((t) => (t.id === tab.id ? { ...fresh, dirty: tab.dirty } : t)) }));
          }
        } catch (error) {
          set({ defsError: error.message || String(error) });
          defsPromise = null;
          if (!started) setTimeout(() => get().loadDefs(), 2000);
          return;
        }
        defsPromise = null;
        if (!started) {
          started = true;
          let last = Date.now();
          window.addEventListener("focus", () => {
            if (Date.now() - last < FOCUS_REFRESH_MS) return;
            last = Date.now();
            get().loadDefs();
          });
          await restoreTabs();
        }
      })();
      return defsPromise;
    },

    setCanvasApi(canvasApi) {
      set({ canvasApi });
    },

    // ---- tabs -----------------------------------------------------------------------------

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

    // ---- inputs and seeds -----------------------------------------------------------------

    setNodeInput(tabId, nodeId, name, value) {
      update(
        tabId,
        (t) => ({
          nodes: updateNode(t, nodeId, (n) => ({
            ...n,
            data: { ...n.data, inputs: { ...n.data.inputs, [name]: value } },
          })),
        }),
        { undoKey: `input:${nodeId}/${name}` },
      );
    },

    getNodeInput(tabId, nodeId, name) {
      const tab = findTab(tabId);
      if (!tab) return undefined;
      const edge = tab.edges.find((e) => e.target === nodeId && e.targetHandle === name);
      if (edge) {
        const wf = get().tabWorkflow(tabId);
        return wf.nodes[nodeId] && wf.nodes[nodeId].inputs ? wf.nodes[nodeId].inputs[name] : undefined;
      }
      const node = tab.nodes.find((n) => n.id === nodeId);
      return node && node.data.inputs ? node.data.inputs[name] : undefined;
    },

    seedControls(tabId) {
      const tab = findTab(tabId);
      const controls = tab ? studioMeta(tab.metadata).seed_control : null;
      return isObject(controls) ? controls : {};
    },

    setSeedControl(tabId, nodeId, input, mode) {
      update(tabId, (t) => {
        const controls = { ...get().seedControls(tabId) };
        controls[nodeId] = { ...(controls[nodeId] || {}), [input]: mode };
        return { metadata: withStudio(t.metadata, "seed_control", controls) };
      });
    },

    // ---- nodes ----------------------------------------------------------------------------

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

    // ---- links ----------------------------------------------------------------------------

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

    // ---- React Flow's changes -------------------------------------------------------------

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

    /** Take a snapshot now (before a drag starts, say). */
    snapshot(tabId, key) {
      snapshot(tabId, key);
    },

    // ---- undo -----------------------------------------------------------------------------

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

    // ---- copy and paste -------------------------------------------------------------------

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

    clipboard: null,
    edgeIdFor: edgeId,
    reroutePrefix: REROUTE_PREFIX,
  };
};
