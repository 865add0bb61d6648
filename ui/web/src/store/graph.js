// The graph slice: node definitions and installed models from the server, the open tabs (one
// workflow each, as React Flow nodes and edges: graph/convert.js), every edit of a graph, and
// undo/redo per tab (snapshots). The contract is in the shared spec ("Graph slice").
// This module only composes the slice from its parts under store/graph/, one job each; they
// share one kit (store/graph/access.js) to find, make and change tabs.
import { edgeId, REROUTE_PREFIX } from "../graph/convert.js";
import { tabAccess } from "./graph/access.js";
import { annotationsSlice } from "./graph/annotations.js";
import { copyPasteSlice } from "./graph/copy-paste.js";
import { definitionsSlice } from "./graph/definitions.js";
import { flowChangesSlice } from "./graph/flow-changes.js";
import { inputsSlice } from "./graph/inputs.js";
import { linksSlice } from "./graph/links.js";
import { nodesSlice } from "./graph/nodes.js";
import { tabsSlice } from "./graph/tabs.js";
import { undoSlice } from "./graph/undo.js";

export const graphSlice = (set, get, storeApi) => {
  const kit = tabAccess(set, get);
  return {
    ...definitionsSlice(set, get, kit, storeApi),
    ...tabsSlice(set, get, kit),
    ...inputsSlice(set, get, kit),
    ...nodesSlice(set, get, kit),
    ...annotationsSlice(set, get, kit),
    ...linksSlice(set, get, kit),
    ...flowChangesSlice(set, get, kit),
    ...undoSlice(set, get, kit),
    ...copyPasteSlice(set, get, kit),
    edgeIdFor: edgeId,
    reroutePrefix: REROUTE_PREFIX,
  };
};
