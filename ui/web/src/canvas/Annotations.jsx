// What a workflow file holds besides nodes: groups (a translucent titled box drawn behind the
// nodes; dragging it moves what lies inside) and notes (free text, edited in place).
import { memo, useContext, useState } from "react";
import { NodeResizer } from "@xyflow/react";
import { useStudio } from "../store/index.js";
import { TabContext } from "./context.js";

function GroupBox({ id, data, selected }) {
  const tabId = useContext(TabContext);
  const updateNodeData = useStudio((s) => s.updateNodeData);
  const [editing, setEditing] = useState(false);
  const color = data.extra && typeof data.extra.color === "string" ? data.extra.color : null;
  const title = typeof data.title === "string" ? data.title : "Group";
  return (
    <div className={`group-box${selected ? " selected" : ""}`} data-testid={`group-${id.split(":")[1]}`} style={color ? { "--group-color": color } : undefined}>
      <NodeResizer isVisible={selected} minWidth={80} minHeight={50} handleClassName="sn-resize-handle" lineClassName="sn-resize-line" />
      <div className="group-title" onDoubleClick={() => setEditing(true)} title="Double-click to rename; drag to move the group and what is inside">
        {editing ? (
          <input
            className="nodrag"
            autoFocus
            defaultValue={title}
            onBlur={(event) => {
              updateNodeData(tabId, id, { title: event.target.value });
              setEditing(false);
            }}
            onKeyDown={(event) => {
              if (event.key === "Enter") event.target.blur();
              if (event.key === "Escape") setEditing(false);
            }}
          />
        ) : (
          title
        )}
      </div>
    </div>
  );
}

function NoteBox({ id, data, selected }) {
  const tabId = useContext(TabContext);
  const updateNodeData = useStudio((s) => s.updateNodeData);
  return (
    <div className={`note-box${selected ? " selected" : ""}`} data-testid={`note-${id.split(":")[1]}`}>
      <NodeResizer isVisible={selected} minWidth={120} minHeight={60} handleClassName="sn-resize-handle" lineClassName="sn-resize-line" />
      <div className="note-title">Note</div>
      <textarea
        className="note-text nodrag nowheel"
        aria-label="note"
        value={typeof data.text === "string" ? data.text : ""}
        placeholder="Write a note…"
        onChange={(event) => updateNodeData(tabId, id, { text: event.target.value })}
      />
    </div>
  );
}

export const GroupNode = memo(GroupBox);
export const NoteNode = memo(NoteBox);
