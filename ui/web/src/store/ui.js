// The UI slice: toasts, which dialogs are open (viewer, mask editor, library) and the
// node-library panel. Everything here is about the page, nothing about the server.

const FADE_MS = 5000;
let nextToastId = 1;

export const uiSlice = (set, get) => ({
  // [{id, message, kind: "info"|"ok"|"error"}]; info and ok fade after 5 s, errors stay.
  toasts: [],
  toast(message, kind = "info") {
    const id = nextToastId++;
    set((s) => ({ toasts: [...s.toasts, { id, message: String(message), kind }].slice(-6) }));
    if (kind !== "error") setTimeout(() => get().dismissToast(id), FADE_MS);
    return id;
  },
  dismissToast(id) {
    set((s) => ({ toasts: s.toasts.filter((t) => t.id !== id) }));
  },

  libraryOpen: false,
  setLibraryOpen(open) {
    set({ libraryOpen: Boolean(open) });
  },

  // Closed by default on narrow screens so the canvas keeps its room.
  nodeLibraryOpen: typeof window !== "undefined" ? window.innerWidth >= 1400 : true,
  toggleNodeLibrary(open) {
    set((s) => ({ nodeLibraryOpen: open === undefined ? !s.nodeLibraryOpen : Boolean(open) }));
  },

  // The large view of a history entry: {entry, index} or null.
  viewer: null,
  openViewer(entry, index = 0) {
    set({ viewer: entry ? { entry, index } : null });
  },
  closeViewer() {
    set({ viewer: null });
  },

  // The mask editor: {tabId, nodeId} of the LoadImage node it edits, or null.
  maskEditor: null,
  openMaskEditor(tabId, nodeId) {
    set({ maskEditor: { tabId, nodeId } });
  },
  closeMaskEditor() {
    set({ maskEditor: null });
  },
});
