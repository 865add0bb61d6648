// Entry point: window.WorkflowStudio.mount(element) renders the studio into the page's mount.
import { createRoot } from "react-dom/client";
import "@xyflow/react/dist/style.css";
import "./theme.css";
import App from "./App.jsx";

function mount(element) {
  if (!element || element.dataset.studioMounted) return;
  element.dataset.studioMounted = "1";
  const root = document.createElement("div");
  root.className = "studio-root";
  root.dataset.testid = "studio-root";
  element.appendChild(root);
  createRoot(root).render(<App />);
}

window.WorkflowStudio = { mount };
