// A reroute dot on a link: one input, one output, coloured by the type of what feeds it.
import { memo, useContext } from "react";
import { Handle, Position } from "@xyflow/react";
import { indexFlow, outputType, REROUTE_IN, REROUTE_OUT } from "../graph/convert.js";
import { socketColor } from "../graph/defs.js";
import { useStudio } from "../store/index.js";
import { TabContext } from "./context.js";

function rerouteType(state, tabId, id) {
  const tab = state.tabs.find((t) => t.id === tabId);
  if (!tab) return "*";
  return outputType(indexFlow(tab.nodes, tab.edges), id, REROUTE_OUT, state.defs.types) || "*";
}

function RerouteNode({ id, data, selected }) {
  const tabId = useContext(TabContext);
  const type = useStudio((s) => rerouteType(s, tabId, id));
  const color = useStudio((s) => socketColor(type, s.defs.colors));
  return (
    <div
      className={`reroute-dot${selected ? " selected" : ""}`}
      data-testid={`reroute-${data.rid}`}
      title={`reroute (${type}); Delete removes it and keeps the link`}
      style={{ background: color }}
    >
      <Handle type="target" position={Position.Left} id={REROUTE_IN} className="reroute-handle" />
      <Handle type="source" position={Position.Right} id={REROUTE_OUT} className="reroute-handle" />
    </div>
  );
}

export default memo(RerouteNode);
