// The page's one store (zustand): the graph slice (tabs, node definitions), the run slice
// (queue, history, what each node shows) and the UI slice (toasts, dialogs).
// docs in each slice's module; the contract is in ui/web/README.md.
import { create } from "zustand";
import { graphSlice } from "./graph.js";
import { runSlice } from "./run.js";
import { uiSlice } from "./ui.js";

export const useStudio = create((set, get) => ({
  ...graphSlice(set, get),
  ...runSlice(set, get),
  ...uiSlice(set, get),
}));

// For tests and the console: the store without React.
window.studioStore = useStudio;
