// Node definitions and installed models from the server, fetched again when the window gets the
// focus back; the first load also restores the tabs (saved in the browser, else the example
// txt2img) and starts their autosave.
import { api } from "../../api.js";
import { flowToWorkflow } from "../../graph/convert.js";
import { indexDefs } from "../../graph/defs.js";
import { readSaved, startAutosave } from "../../tabs/autosave.js";
import { newTabId } from "./helpers.js";

const FOCUS_REFRESH_MS = 2000;

export const definitionsSlice = (set, get, { makeTab }, storeApi) => {
  let defsPromise = null;
  let started = false;

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
    const store = storeApi && storeApi.subscribe ? storeApi : (await import("../index.js")).useStudio;
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
    tabsReady: false,

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
  };
};
