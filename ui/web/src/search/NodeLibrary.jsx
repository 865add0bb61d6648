// The node library panel: every node type by category (a tree), with a filter box. A click
// adds the node in the middle of the view; dragging one onto the canvas adds it there.
import { useMemo, useState } from "react";
import { displayName } from "../graph/defs.js";
import { useStudio } from "../store/index.js";
import { byCategory, searchNodes } from "./search.js";
import "./search.css";

export const NODE_DRAG_TYPE = "application/x-studio-node";

/** {name, defs, children: Map} from "image/transform"-style categories. */
function categoryTree(list) {
  const root = { name: "", defs: [], children: new Map() };
  for (const [category, defs] of byCategory(list)) {
    let at = root;
    for (const part of category.split("/")) {
      if (!at.children.has(part)) at.children.set(part, { name: part, defs: [], children: new Map() });
      at = at.children.get(part);
    }
    at.defs.push(...defs);
  }
  return root;
}

function addToCanvas(type) {
  const state = useStudio.getState();
  const tabId = state.activeTabId;
  if (!tabId) return;
  const center = state.canvasApi ? state.canvasApi.center() : { x: 100, y: 100 };
  state.addNode(tabId, type, { x: center.x - 120, y: center.y - 60 });
}

function Item({ def }) {
  return (
    <li
      className="library-node"
      draggable
      title={`${def.type}: ${def.description || ""}`}
      onDragStart={(event) => {
        event.dataTransfer.setData(NODE_DRAG_TYPE, def.type);
        event.dataTransfer.effectAllowed = "copy";
      }}
      onClick={() => addToCanvas(def.type)}
    >
      {displayName(def)}
    </li>
  );
}

function Branch({ node, path, open, toggle, depth }) {
  const key = path.join("/");
  const isOpen = open.has(key);
  const count = (n) => n.defs.length + [...n.children.values()].reduce((sum, c) => sum + count(c), 0);
  return (
    <li className="library-category">
      <button type="button" className="library-toggle" style={{ paddingLeft: 8 + depth * 12 }} onClick={() => toggle(key)} aria-expanded={isOpen}>
        <span className="library-caret">{isOpen ? "▾" : "▸"}</span>
        {node.name}
        <span className="library-count">{count(node)}</span>
      </button>
      {isOpen ? (
        <ul style={{ "--depth": depth + 1 }}>
          {[...node.children.values()].map((child) => (
            <Branch key={child.name} node={child} path={[...path, child.name]} open={open} toggle={toggle} depth={depth + 1} />
          ))}
          {node.defs.map((def) => (
            <Item key={def.type} def={def} />
          ))}
        </ul>
      ) : null}
    </li>
  );
}

export function NodeLibrary() {
  const list = useStudio((s) => s.defs.list);
  const [query, setQuery] = useState("");
  const [open, setOpen] = useState(() => new Set());
  const tree = useMemo(() => categoryTree(list), [list]);
  const found = useMemo(() => (query.trim() ? searchNodes(list, query, { limit: 80 }) : null), [list, query]);
  const toggle = (key) =>
    setOpen((before) => {
      const next = new Set(before);
      if (next.has(key)) next.delete(key);
      else next.add(key);
      return next;
    });
  return (
    <div className="node-library" data-testid="node-library">
      <div className="library-head">
        <input
          className="library-filter"
          placeholder="Filter nodes…"
          aria-label="Filter nodes"
          value={query}
          onChange={(event) => setQuery(event.target.value)}
          onKeyDown={(event) => {
            if (event.key === "Escape") setQuery("");
            if (event.key === "Enter" && found && found.length) addToCanvas(found[0].type);
          }}
        />
      </div>
      <ul className="library-tree">
        {found
          ? found.map((def) => <Item key={def.type} def={def} />)
          : [...tree.children.values()].map((node) => (
              <Branch key={node.name} node={node} path={[node.name]} open={open} toggle={toggle} depth={0} />
            ))}
        {found && !found.length ? <li className="library-empty">No node matches.</li> : null}
      </ul>
      <div className="library-hint">Click to add in the middle of the view, or drag onto the canvas.</div>
    </div>
  );
}

export default NodeLibrary;
