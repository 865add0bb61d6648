// Pure helpers of the graph slice (no store): fresh tab ids, the empty workflow, the node ids a
// flow uses, and edits of a tab's metadata.studio (seed controls, reroute links, viewport).
import { isObject } from "../../graph/defs.js";

export const EMPTY_WORKFLOW = { version: 1, nodes: {} };

let tabCounter = 0;
export const newTabId = () => `tab-${Date.now().toString(36)}-${(tabCounter += 1)}`;

/** A flow's node ids in use (studio nodes and reroutes both). */
export const takenIds = (nodes) => new Set(nodes.map((n) => n.id));

export const studioMeta = (metadata) => (isObject(metadata) && isObject(metadata.studio) ? metadata.studio : {});

/** metadata with metadata.studio[key] replaced by `value` (removed when undefined). */
export function withStudio(metadata, key, value) {
  const studio = { ...studioMeta(metadata) };
  if (value === undefined) delete studio[key];
  else studio[key] = value;
  return { ...(metadata || {}), studio };
}
