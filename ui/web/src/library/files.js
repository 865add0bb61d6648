// Workflows in and out of the page: save to the server's library (Save / Save as),
// download as `<title>.json`, and open .json/.png files (the Open button or a drop on the
// page) through POST /api/import, which also reads ComfyUI's formats.
import { api } from "../api.js";
import { useStudio } from "../store/index.js";

const WORKFLOW_FILE = /\.(json|png)$/i;
const LIBRARY_NAME = /^[\w][\w .()+-]{0,99}$/u;

export const fileStem = (name) => String(name || "workflow").replace(/^.*[\\/]/, "").replace(/\.[^.]+$/, "") || "workflow";

// A library name from a tab title: characters the library refuses become "-".
export function libraryNameFor(title) {
  const cleaned = String(title || "")
    .trim()
    .replace(/[^\w .()+-]/gu, "-")
    .replace(/^[^\w]+/u, "")
    .slice(0, 100);
  return cleaned || "workflow";
}

function tabById(tabId) {
  const state = useStudio.getState();
  return (state.tabs || []).find((t) => t.id === tabId) || null;
}

function workflowNamed(tabId, name) {
  const workflow = useStudio.getState().tabWorkflow(tabId);
  return { ...workflow, metadata: { ...(workflow.metadata || {}), name } };
}

// Save the tab to the library: under its library name (overwriting), or, for a new tab or
// with `askName` (Save as), under a name the user gives; a taken name asks before overwriting.
export async function saveTab(tabId, { askName = false } = {}) {
  const { toast, markSaved, renameTab } = useStudio.getState();
  const tab = tabById(tabId);
  if (!tab) return null;
  let name = !askName && tab.libraryName ? tab.libraryName : null;
  let overwrite = Boolean(name);
  if (!name) {
    const answer = window.prompt("Save the workflow in the library as:", tab.libraryName || libraryNameFor(tab.title));
    if (answer === null) return null;
    name = answer.trim();
    if (!LIBRARY_NAME.test(name)) {
      toast("A workflow name is letters, digits, spaces and . ( ) + - _ (at most 100, starting with a letter or digit).", "error");
      return null;
    }
  }
  try {
    try {
      await api.librarySave(name, workflowNamed(tabId, name), overwrite);
    } catch (error) {
      if (error.status !== 409 || overwrite) throw error;
      if (!window.confirm(`A workflow named "${name}" is already in the library. Replace it?`)) return null;
      overwrite = true;
      await api.librarySave(name, workflowNamed(tabId, name), true);
    }
  } catch (error) {
    toast(`Could not save "${name}": ${error.message}`, "error");
    return null;
  }
  if (tab.title !== name && renameTab) renameTab(tabId, name);
  markSaved(tabId, name);
  toast(`Saved "${name}" in the library`, "ok");
  return name;
}

export function downloadTab(tabId) {
  const tab = tabById(tabId);
  if (!tab) return;
  const workflow = workflowNamed(tabId, tab.title);
  const blob = new Blob([JSON.stringify(workflow, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = `${fileStem(`${tab.title || "workflow"}.json`)}.json`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export const isWorkflowFile = (file) => Boolean(file && WORKFLOW_FILE.test(file.name || ""));

// Open each .json/.png file in a new tab (title = file stem), saying what the import did.
export async function openFiles(files) {
  const { toast, openWorkflow } = useStudio.getState();
  for (const file of Array.from(files || [])) {
    if (!isWorkflowFile(file)) {
      toast(`${file.name} is not a workflow: open a .json file or a PNG made by the studio or ComfyUI.`, "error");
      continue;
    }
    try {
      const bytes = await file.arrayBuffer();
      const answer = await api.importFile(file.name, bytes);
      openWorkflow(answer.workflow, { title: fileStem(file.name), newTab: true });
      const message = answer.message || `Opened ${file.name}`;
      toast(message, answer.complete === false ? "info" : "ok");
    } catch (error) {
      toast(`Could not open ${file.name}: ${error.message}`, "error");
    }
  }
}

export async function openLibraryWorkflow(name) {
  const { toast, openWorkflow, tabs, setActiveTab } = useStudio.getState();
  const open = (tabs || []).find((t) => t.libraryName === name);
  if (open && !open.dirty) {
    setActiveTab(open.id);
    return open.id;
  }
  try {
    const workflow = await api.libraryGet(name);
    return openWorkflow(workflow, { title: name, libraryName: name, newTab: true });
  } catch (error) {
    toast(`Could not open "${name}": ${error.message}`, "error");
    return null;
  }
}

export async function openExample(name) {
  const { toast, openWorkflow } = useStudio.getState();
  try {
    const workflow = await api.example(name);
    return openWorkflow(workflow, { title: name, newTab: true });
  } catch (error) {
    toast(`Could not open the example "${name}": ${error.message}`, "error");
    return null;
  }
}
