// Messages in the bottom-left corner: info and ok fade after 5 s (store/ui.js), errors stay
// until closed.
import { useStudio } from "../store/index.js";
import "./panels.css";

export default function Toasts() {
  const toasts = useStudio((s) => s.toasts);
  const dismiss = useStudio((s) => s.dismissToast);
  return (
    <div className="toasts" aria-live="polite">
      {toasts.map((t) => (
        <div key={t.id} className={`toast toast-${t.kind}`} data-testid="toast" role={t.kind === "error" ? "alert" : "status"}>
          <span className="toast-text">{t.message}</span>
          <button type="button" className="toast-close" aria-label="Close message" onClick={() => dismiss(t.id)} />
        </div>
      ))}
    </div>
  );
}
