// Entry point: window.WorkflowStudio.mount(element) renders the studio over the page.
// The root goes straight under <body>, beside Gradio's container, so Gradio's own styles
// for buttons and inputs (scoped to that container) never reach the studio's.
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
  document.body.appendChild(root);
  createRoot(root).render(<App />);
}

window.WorkflowStudio = { mount };
