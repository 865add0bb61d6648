// The node search box: opens on a double-click on empty canvas, "/" or Ctrl+K, and when a link
// is dropped on empty canvas (then only nodes that can take the link are listed). Arrow keys
// and Enter pick, Esc closes.
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import { displayName } from "../graph/defs.js";
import { useStudio } from "../store/index.js";
import { searchNodes } from "./search.js";
import "./search.css";

export default function SearchDialog({ link = null, onPick, onClose }) {
  const list = useStudio((s) => s.defs.list);
  const [query, setQuery] = useState("");
  const [active, setActive] = useState(0);
  const results = useMemo(() => searchNodes(list, query, { link, limit: 60 }), [list, query, link]);
  const input = useRef(null);
  const rows = useRef(null);

  useEffect(() => {
    input.current && input.current.focus();
  }, []);
  useLayoutEffect(() => {
    const row = rows.current && rows.current.querySelector(`[data-index="${active}"]`);
    if (row) row.scrollIntoView({ block: "nearest" });
  }, [active]);

  const onKeyDown = (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const by = event.key === "ArrowDown" ? 1 : -1;
      setActive((a) => (results.length ? (a + by + results.length) % results.length : 0));
    } else if (event.key === "Enter") {
      event.preventDefault();
      if (results[active]) onPick(results[active]);
    } else if (event.key === "Escape") {
      event.preventDefault();
      onClose();
    }
    event.stopPropagation();
  };

  return (
    <div className="search-backdrop" onPointerDown={(event) => event.target === event.currentTarget && onClose()}>
      <div className="search-dialog" data-testid="search-dialog" role="dialog" aria-label="Add a node">
        <input
          ref={input}
          data-testid="search-input"
          className="search-input"
          placeholder={link ? `Add a node that takes ${link.type}…` : "Search nodes: KSampler, load checkpoint, vae dec…"}
          value={query}
          onChange={(event) => {
            setQuery(event.target.value);
            setActive(0);
          }}
          onKeyDown={onKeyDown}
          role="combobox"
          aria-expanded="true"
          aria-controls="search-results"
        />
        {link ? <div className="search-filter">only nodes that connect to a {link.type} {link.from === "output" ? "output" : "input"}</div> : null}
        <ul className="search-results" id="search-results" role="listbox" ref={rows}>
          {results.map((def, i) => {
            const name = displayName(def);
            return (
              <li
                key={def.type}
                data-index={i}
                data-testid="search-result"
                data-type={def.type}
                role="option"
                aria-selected={i === active}
                className={i === active ? "active" : ""}
                onMouseMove={() => active !== i && setActive(i)}
                onClick={() => onPick(def)}
              >
                <div className="search-row">
                  <span className="search-name">{name}</span>
                  {name.replace(/\s+/g, "") !== def.type ? <span className="search-type">{def.type}</span> : null}
                  <span className="search-category">{def.category}</span>
                </div>
                {def.description ? <div className="search-description">{def.description}</div> : null}
              </li>
            );
          })}
          {!results.length ? <li className="search-empty">No node matches “{query}”.</li> : null}
        </ul>
      </div>
    </div>
  );
}
