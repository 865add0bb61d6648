// A node's input values (typed into its widgets, or what a link brings) and the seed controls
// (randomize, fixed ...) kept in the tab's metadata.studio.seed_control.
import { isObject } from "../../graph/defs.js";
import { studioMeta, withStudio } from "./helpers.js";

export const inputsSlice = (set, get, { findTab, update, updateNode }) => ({
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
});
