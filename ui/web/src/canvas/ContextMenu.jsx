// The canvas's right-click menu: items {label, keys?, disabled?, run} and "-" separators,
// at a point on the page; any click elsewhere, Esc or the wheel closes it.
import { useEffect, useLayoutEffect, useRef, useState } from "react";

export default function ContextMenu({ menu, onClose }) {
  const list = useRef(null);
  const [at, setAt] = useState({ left: menu.x, top: menu.y });
  // kept inside the window
  useLayoutEffect(() => {
    const box = list.current.getBoundingClientRect();
    setAt({
      left: Math.max(4, Math.min(menu.x, window.innerWidth - box.width - 4)),
      top: Math.max(4, Math.min(menu.y, window.innerHeight - box.height - 4)),
    });
  }, [menu.x, menu.y]);
  useEffect(() => {
    const close = (event) => {
      if (!event.target.closest || !event.target.closest(".canvas-menu")) onClose();
    };
    const escape = (event) => event.key === "Escape" && onClose();
    window.addEventListener("pointerdown", close, true);
    window.addEventListener("keydown", escape, true);
    window.addEventListener("wheel", onClose, true);
    return () => {
      window.removeEventListener("pointerdown", close, true);
      window.removeEventListener("keydown", escape, true);
      window.removeEventListener("wheel", onClose, true);
    };
  }, [onClose]);
  return (
    <ul ref={list} className="canvas-menu" role="menu" style={at} data-testid="canvas-menu">
      {menu.items.map((item, i) =>
        item === "-" ? (
          <li key={`separator-${i}`} className="separator" role="separator" />
        ) : (
          <li key={item.label} role="menuitem">
            <button
              type="button"
              disabled={item.disabled}
              onClick={() => {
                onClose();
                item.run();
              }}
            >
              <span>{item.label}</span>
              {item.keys ? <kbd>{item.keys}</kbd> : null}
            </button>
          </li>
        ),
      )}
    </ul>
  );
}
