// Keyboard shortcuts of the canvas. Pure: which action a key event asks for; the canvas acts.
//   Ctrl+Z undo · Ctrl+Shift+Z / Ctrl+Y redo · Ctrl+C copy · Ctrl+V paste (Ctrl+Shift+V with
//   the links coming in) · Ctrl+A select all · Ctrl+B bypass · Ctrl+M mute · Delete/Backspace
//   delete · "/" or Ctrl+K search · Ctrl+G group the selection.

/** Whether the key goes to a text field (the canvas leaves it alone). */
export function isTypingTarget(target) {
  if (!target || !target.tagName) return false;
  const tag = target.tagName.toLowerCase();
  if (tag === "textarea" || tag === "select") return true;
  if (tag === "input") {
    const type = (target.type || "text").toLowerCase();
    return !["checkbox", "radio", "button", "submit", "range", "color", "file"].includes(type);
  }
  return Boolean(target.isContentEditable);
}

/** Whether the key was pressed inside a dialog (the mask editor, the library ...). */
export function inDialog(target) {
  return Boolean(target && target.closest && target.closest("[role=dialog], [aria-modal=true]"));
}

/** The canvas action a keydown asks for, or null. */
export function shortcutFor(event) {
  const key = event.key || "";
  const lower = key.toLowerCase();
  const mod = event.ctrlKey || event.metaKey;
  if (mod && !event.altKey) {
    if (lower === "z") return event.shiftKey ? "redo" : "undo";
    if (lower === "y") return "redo";
    if (lower === "c" && !event.shiftKey) return "copy";
    if (lower === "v") return event.shiftKey ? "paste-with-links" : "paste";
    if (lower === "a" && !event.shiftKey) return "select-all";
    if (lower === "b" && !event.shiftKey) return "bypass";
    if (lower === "m" && !event.shiftKey) return "mute";
    if (lower === "k") return "search";
    if (lower === "g" && !event.shiftKey) return "group";
    return null;
  }
  if (event.altKey || event.metaKey || event.ctrlKey) return null;
  if (key === "Delete" || key === "Backspace") return "delete";
  if (key === "/") return "search";
  return null;
}
