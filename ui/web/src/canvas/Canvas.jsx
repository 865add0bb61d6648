// The canvas of the active tab: React Flow drawing the tab's nodes and links, with the
// habits people bring from ComfyUI: double-click (or "/", Ctrl+K) to search for a node, a
// link dropped on empty canvas offers the nodes that take it, reroute dots on links
// (double-click or Alt+click a link), bypass/mute (Ctrl+B / Ctrl+M), copy/paste, undo/redo,
// a right-click menu, and pictures dropped on a LoadImage node are uploaded into it.
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import {
  Background,
  BackgroundVariant,
  Controls,
  MiniMap,
  ReactFlow,
  ReactFlowProvider,
  useNodesInitialized,
  useReactFlow,
} from "@xyflow/react";
import { api } from "../api.js";
import { indexFlow, inputType, outputType } from "../graph/convert.js";
import { displayName, socketColor } from "../graph/defs.js";
import SearchDialog from "../search/SearchDialog.jsx";
import { NODE_DRAG_TYPE } from "../search/NodeLibrary.jsx";
import { useStudio } from "../store/index.js";
import { GroupNode, NoteNode } from "./Annotations.jsx";
import ContextMenu from "./ContextMenu.jsx";
import { TabContext } from "./context.js";
import { inDialog, isTypingTarget, shortcutFor } from "./keys.js";
import RerouteNode from "./RerouteNode.jsx";
import StudioNode from "./StudioNode.jsx";
import "./canvas.css";

const nodeTypes = { studio: StudioNode, reroute: RerouteNode, note: NoteNode, group: GroupNode };
const FIT = { padding: 0.04, maxZoom: 1, minZoom: 0.7 }; // below 0.7 the 13px text is no longer readable
const NODE_WIDTH = 240;

const pointOf = (event) => {
  const touch = event.changedTouches && event.changedTouches[0];
  return touch ? { x: touch.clientX, y: touch.clientY } : { x: event.clientX, y: event.clientY };
};

function validViewport(value) {
  return value && [value.x, value.y, value.zoom].every((v) => typeof v === "number" && Number.isFinite(v)) && value.zoom > 0;
}

function rectOf(node) {
  const width = node.width ?? node.measured?.width ?? 0;
  const height = node.height ?? node.measured?.height ?? 0;
  return { x: node.position.x, y: node.position.y, width, height };
}

function Flow({ tab }) {
  const tabId = tab.id;
  const rf = useReactFlow();
  const types = useStudio((s) => s.defs.types);
  const colors = useStudio((s) => s.defs.colors);
  const [search, setSearch] = useState(null); // {position, link}
  const [menu, setMenu] = useState(null); // {x, y, items}
  const wrapper = useRef(null);
  const pointer = useRef(null); // the mouse on the page, for paste
  const groupDrag = useRef(null);
  const store = useStudio.getState;

  const edges = useMemo(() => {
    const index = indexFlow(tab.nodes, tab.edges);
    return tab.edges.map((edge) => {
      const type = outputType(index, edge.source, edge.sourceHandle, types) || "*";
      return {
        ...edge,
        style: { stroke: socketColor(type, colors), strokeWidth: edge.selected ? 4 : 2.5 },
        className: edge.selected ? "studio-edge selected" : "studio-edge",
      };
    });
  }, [tab.nodes, tab.edges, types, colors]);

  const toFlow = useCallback((point) => rf.screenToFlowPosition(point), [rf]);

  const viewCenter = useCallback(() => {
    const rect = wrapper.current ? wrapper.current.getBoundingClientRect() : { left: 0, top: 0, width: 800, height: 600 };
    return toFlow({ x: rect.left + rect.width / 2, y: rect.top + rect.height / 2 });
  }, [toFlow]);

  useEffect(() => {
    store().setCanvasApi({ center: viewCenter, toFlow, fitView: () => rf.fitView(FIT) });
    return () => store().setCanvasApi(null);
  }, [viewCenter, toFlow, rf, store]);

  const openSearch = useCallback(
    (screen, link = null) => {
      // where the node goes: the click, else the mouse when it is over the canvas, else the middle
      const rect = wrapper.current.getBoundingClientRect();
      const mouse = pointer.current;
      const over = mouse && mouse.x > rect.left && mouse.x < rect.right && mouse.y > rect.top && mouse.y < rect.bottom;
      const point = screen || (over ? mouse : { x: rect.left + rect.width / 2 - NODE_WIDTH / 2, y: rect.top + rect.height / 3 });
      setMenu(null);
      setSearch({ position: toFlow(point), link });
    },
    [toFlow],
  );

  const pickNode = (def) => {
    const { position, link } = search;
    const x = link && link.from === "input" ? position.x - NODE_WIDTH - 20 : position.x;
    store().addNode(tabId, def.type, { x, y: position.y - 16 }, { link });
    setSearch(null);
  };

  const selected = () => store().selectedIds(tabId);
  const pasteAt = (keepLinks) => {
    const at = pointer.current && wrapper.current && wrapper.current.contains(document.elementFromPoint(pointer.current.x, pointer.current.y))
      ? toFlow(pointer.current)
      : null;
    store().paste(tabId, at, { keepLinks });
  };

  // keyboard shortcuts (not while typing in a widget, nor inside a dialog)
  useEffect(() => {
    const onKey = (event) => {
      if (event.defaultPrevented || search) return;
      const action = shortcutFor(event);
      if (!action || isTypingTarget(event.target) || inDialog(event.target)) return;
      const s = store();
      switch (action) {
        case "undo":
          s.undo(tabId);
          break;
        case "redo":
          s.redo(tabId);
          break;
        case "copy":
          if (String(window.getSelection && window.getSelection()).length) return;
          if (!s.copySelection(tabId)) return;
          break;
        case "paste":
        case "paste-with-links":
          pasteAt(action === "paste-with-links");
          break;
        case "select-all":
          s.selectAll(tabId);
          break;
        case "bypass":
          s.toggleMode(tabId, selected(), "bypass");
          break;
        case "mute":
          s.toggleMode(tabId, selected(), "mute");
          break;
        case "delete":
          s.deleteSelection(tabId);
          break;
        case "search":
          openSearch(null);
          break;
        case "group":
          if (!selected().length) return;
          s.addGroup(tabId, viewCenter());
          break;
        default:
          return;
      }
      event.preventDefault();
      event.stopPropagation();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  });

  const linkFrom = (fromNode, fromHandle) => {
    const t = store().tabs.find((x) => x.id === tabId);
    const index = indexFlow(t.nodes, t.edges);
    if (fromHandle.type === "source") {
      return { from: "output", nodeId: fromNode.id, handle: fromHandle.id, type: outputType(index, fromNode.id, fromHandle.id, types) || "*" };
    }
    return { from: "input", nodeId: fromNode.id, handle: fromHandle.id, type: inputType(index, fromNode.id, fromHandle.id, types, t.edges) || "*" };
  };

  const onConnectEnd = (event, state) => {
    if (!state || state.isValid || state.toHandle || !state.fromNode || !state.fromHandle) return;
    const link = linkFrom(state.fromNode, state.fromHandle);
    if (state.toNode && state.toNode.id !== state.fromNode.id && state.toNode.type === "studio") {
      // dropped on a node's body: its first socket that fits
      store().connectNew(tabId, state.toNode.id, link);
      return;
    }
    const target = event.target;
    if (!(target && target.closest && target.closest(".react-flow__pane"))) return;
    const t = store().tabs.find((x) => x.id === tabId);
    const held = link.from === "input" && t.edges.find((e) => e.target === link.nodeId && e.targetHandle === link.handle);
    // a link pulled off an input and let go on empty canvas comes out; otherwise: what could take it?
    if (held) store().deleteElements(tabId, [], [held.id]);
    else openSearch(pointOf(event), link);
  };

  const insertReroute = (event, edge) => store().insertReroute(tabId, edge.id, toFlow(pointOf(event)));

  const nodeMenu = (event, node) => {
    event.preventDefault();
    const s = store();
    const chosen = node.selected ? selected() : [node.id];
    const items = [];
    if (node.type === "studio") {
      const def = types[node.data.type];
      items.push({
        label: "Rename…",
        run: () => {
          const title = window.prompt("Node title", node.data.title || (def ? displayName(def) : node.data.type));
          if (title !== null) s.renameNode(tabId, node.id, title);
        },
      });
      items.push({ label: node.data.mode === "bypass" ? "Stop bypassing" : "Bypass", keys: "Ctrl+B", run: () => s.toggleMode(tabId, chosen, "bypass") });
      items.push({ label: node.data.mode === "mute" ? "Unmute" : "Mute", keys: "Ctrl+M", run: () => s.toggleMode(tabId, chosen, "mute") });
      if (node.data.type === "LoadImage" && s.openMaskEditor) items.push({ label: "Edit mask…", run: () => s.openMaskEditor(tabId, node.id) });
      items.push("-");
      items.push({ label: "Duplicate", run: () => s.duplicateNodes(tabId, chosen) });
      items.push({ label: "Copy", keys: "Ctrl+C", run: () => s.copySelection(tabId, chosen) });
    } else if (node.type === "group") {
      items.push({
        label: "Rename…",
        run: () => {
          const title = window.prompt("Group title", node.data.title || "Group");
          if (title !== null) s.updateNodeData(tabId, node.id, { title });
        },
      });
    }
    items.push({ label: node.type === "reroute" ? "Remove reroute" : "Delete", keys: "Del", run: () => s.deleteElements(tabId, chosen, []) });
    setMenu({ x: event.clientX, y: event.clientY, items });
  };

  const paneMenu = (event) => {
    event.preventDefault();
    const s = store();
    const screen = pointOf(event);
    const at = toFlow(screen);
    const hasSelection = selected().length > 0;
    setMenu({
      x: screen.x,
      y: screen.y,
      items: [
        { label: "Add node…", keys: "dbl-click", run: () => openSearch(screen) },
        { label: "Add note", run: () => s.addNote(tabId, at) },
        { label: hasSelection ? "Group selected nodes" : "Add group", keys: hasSelection ? "Ctrl+G" : null, run: () => s.addGroup(tabId, at) },
        { label: "Paste", keys: "Ctrl+V", run: () => s.paste(tabId, at) },
        "-",
        { label: "Fit view", run: () => rf.fitView(FIT) },
        { label: "Undo", keys: "Ctrl+Z", disabled: !s.canUndo(tabId), run: () => s.undo(tabId) },
        "-",
        {
          label: "Clear canvas…",
          run: () => {
            if (window.confirm("Remove every node, group and note from this tab? Ctrl+Z brings them back.")) s.clearCanvas(tabId);
          },
        },
      ],
    });
  };

  const onNodeDragStart = (event, node) => {
    groupDrag.current = null;
    if (node.type !== "group") return;
    const box = rectOf(node);
    const inside = store()
      .tabs.find((t) => t.id === tabId)
      .nodes.filter((n) => {
        if (n.id === node.id || n.selected || n.type === "group") return false;
        // inside: the middle of the node's title bar lies in the box (as ComfyUI decides)
        const r = rectOf(n);
        const x = r.x + r.width / 2;
        const y = r.y + Math.min(14, r.height / 2);
        return x >= box.x && y >= box.y && x <= box.x + box.width && y <= box.y + box.height;
      })
      .map((n) => ({ id: n.id, x: n.position.x, y: n.position.y }));
    groupDrag.current = { id: node.id, x: node.position.x, y: node.position.y, inside };
  };

  const onNodeDrag = (event, node) => {
    const drag = groupDrag.current;
    if (!drag || drag.id !== node.id || !drag.inside.length) return;
    const dx = node.position.x - drag.x;
    const dy = node.position.y - drag.y;
    const positions = {};
    for (const n of drag.inside) positions[n.id] = { x: n.x + dx, y: n.y + dy };
    store().moveNodes(tabId, positions);
  };

  const onDragOver = (event) => {
    const kinds = Array.from(event.dataTransfer.types || []);
    if (kinds.includes(NODE_DRAG_TYPE)) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    } else if (kinds.includes("Files")) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
    }
  };

  const onDrop = async (event) => {
    const type = event.dataTransfer.getData(NODE_DRAG_TYPE);
    if (type) {
      event.preventDefault();
      event.stopPropagation();
      const at = toFlow(pointOf(event));
      store().addNode(tabId, type, { x: at.x - 20, y: at.y - 16 });
      return;
    }
    const files = Array.from(event.dataTransfer.files || []);
    const picture = files.find((f) => /^image\//.test(f.type) || /\.(png|jpe?g|webp|bmp|gif)$/i.test(f.name));
    const element = event.target && event.target.closest ? event.target.closest(".react-flow__node") : null;
    const nodeId = element ? element.getAttribute("data-id") : null;
    const node = nodeId ? store().tabs.find((t) => t.id === tabId).nodes.find((n) => n.id === nodeId) : null;
    const def = node && node.type === "studio" ? types[node.data.type] : null;
    const input = def ? (def.inputs || []).find((s) => s.file_list) || (def.type === "LoadImage" ? (def.inputs || []).find((s) => s.name === "path") : null) : null;
    if (!picture || !input) return; // a workflow file, or a drop elsewhere: the page handles it
    event.preventDefault(); // marks the drop handled for the page's own drop handler
    try {
      const answer = await api.uploadInput(picture.name, picture);
      store().setNodeInput(tabId, nodeId, input.name, answer.name);
      store().loadDefs();
      if (store().toast) store().toast(`${answer.name} is in input/ and on ${node.data.title || displayName(def)}`, "ok");
    } catch (error) {
      if (store().toast) store().toast(`Could not upload ${picture.name}: ${error.message}`, "error");
    }
  };

  const saved = tab.metadata && tab.metadata.studio ? tab.metadata.studio.viewport : null;
  const [initialViewport] = useState(() => (validViewport(saved) ? saved : undefined));
  // a workflow without a saved view is fitted once all its nodes have their size
  const initialized = useNodesInitialized();
  const fitted = useRef(Boolean(initialViewport) || !tab.nodes.length);
  useEffect(() => {
    if (fitted.current || !initialized) return;
    fitted.current = true;
    rf.fitView(FIT);
  }, [initialized, rf]);
  const empty = !tab.nodes.length;

  return (
    <div
      className="studio-canvas"
      ref={wrapper}
      onMouseMove={(event) => {
        pointer.current = { x: event.clientX, y: event.clientY };
      }}
      onDoubleClick={(event) => {
        if (event.target.classList && event.target.classList.contains("react-flow__pane")) openSearch(pointOf(event));
      }}
      onDragOver={onDragOver}
      onDrop={onDrop}
    >
      <ReactFlow
        data-testid="canvas"
        nodes={tab.nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        onNodesChange={(changes) => store().applyNodeChanges(tabId, changes)}
        onEdgesChange={(changes) => store().applyEdgeChanges(tabId, changes)}
        onConnect={(connection) => store().connect(tabId, connection)}
        isValidConnection={(connection) => store().isValidConnection(tabId, connection)}
        onConnectEnd={onConnectEnd}
        edgesReconnectable={false}
        onEdgeDoubleClick={insertReroute}
        onEdgeClick={(event, edge) => event.altKey && insertReroute(event, edge)}
        onNodeContextMenu={nodeMenu}
        onPaneContextMenu={paneMenu}
        onSelectionContextMenu={(event, nodes) => nodes.length && nodeMenu(event, { ...nodes[0], selected: true })}
        onEdgeContextMenu={(event, edge) => {
          event.preventDefault();
          setMenu({
            x: event.clientX,
            y: event.clientY,
            items: [
              { label: "Add reroute here", run: () => insertReroute(event, edge) },
              { label: "Delete link", run: () => store().deleteElements(tabId, [], [edge.id]) },
            ],
          });
        }}
        onNodeDragStart={onNodeDragStart}
        onNodeDrag={onNodeDrag}
        onMoveEnd={(event, viewport) => store().setViewport(tabId, viewport)}
        defaultViewport={initialViewport}
        minZoom={0.1}
        maxZoom={2.5}
        zoomOnDoubleClick={false}
        deleteKeyCode={null}
        elevateNodesOnSelect
        colorMode="dark"
        proOptions={{ hideAttribution: true }}
        connectionLineStyle={{ stroke: "#9aa4b2", strokeWidth: 2.5 }}
        connectionRadius={28}
      >
        <Background variant={BackgroundVariant.Dots} gap={22} size={1.3} color="#3b3b44" />
        <Controls showInteractive={false} position="bottom-left" />
        <MiniMap
          position="bottom-right"
          pannable
          zoomable
          nodeColor={(node) => (node.type === "group" ? "rgba(120,130,160,0.25)" : node.type === "note" ? "#6b6433" : node.data && node.data.mode ? "#5a3a5a" : "#55555f")}
          nodeStrokeWidth={0}
          maskColor="rgba(20,20,24,0.7)"
          style={{ width: 160, height: 110 }}
        />
      </ReactFlow>
      {empty ? (
        <div className="canvas-empty-hint">
          <strong>An empty canvas.</strong> Double-click or press <kbd>/</kbd> to add a node, drag one from the node library, or drop a
          workflow (.json, or a .png the studio saved) here.
        </div>
      ) : null}
      <div className="canvas-help">
        dbl-click: add node · drag link to empty: add connected node · dbl-click link: reroute · Ctrl+B/M: bypass/mute · Shift+drag: select ·
        right-click: menu
      </div>
      {search ? <SearchDialog link={search.link} onPick={pickNode} onClose={() => setSearch(null)} /> : null}
      {menu ? <ContextMenu menu={menu} onClose={() => setMenu(null)} /> : null}
    </div>
  );
}

function CanvasBody() {
  const tab = useStudio((s) => s.tabs.find((t) => t.id === s.activeTabId) || null);
  const defsError = useStudio((s) => s.defsError);
  const tabsReady = useStudio((s) => s.tabsReady);
  useEffect(() => {
    useStudio.getState().loadDefs();
  }, []);
  if (!tab) {
    return (
      <div className="studio-canvas canvas-loading" data-testid="canvas">
        {defsError && !tabsReady ? `Cannot reach the studio server (${defsError}); trying again…` : "Loading the node definitions…"}
      </div>
    );
  }
  return (
    <TabContext.Provider value={tab.id}>
      <ReactFlowProvider key={tab.id}>
        <Flow tab={tab} />
      </ReactFlowProvider>
    </TabContext.Provider>
  );
}

/** The React Flow canvas of the active tab. */
export default function Canvas() {
  return <CanvasBody />;
}
