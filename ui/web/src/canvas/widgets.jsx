// The widgets on a node, one row each: the input's name on the left, its value on the right.
// Numbers drag (on the name) and type; combos are searchable lists; prompts are textareas
// edited in place. Every value goes to the store as it changes (so Run sees what is typed).
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import { createPortal } from "react-dom";
import { clampNumber, numberStep, SEED_CONTROLS, stepDecimals, typeDefault, widgetKind } from "../graph/defs.js";

const DRAG_PX_PER_STEP = 6;
const TEXTAREA_MAX_LINES = 8;

const label = (spec) => spec.name.replace(/_/g, " ");

function formatNumber(spec, value) {
  if (typeof value !== "number") return value == null ? "" : String(value);
  if (spec.type === "INT") return String(value);
  return value.toFixed(stepDecimals(spec));
}

function NumberWidget({ testId, spec, value, onChange }) {
  const [text, setText] = useState(null);
  const drag = useRef(null);
  const step = numberStep(spec);
  const current = typeof value === "number" ? value : clampNumber(spec, typeDefault(spec));
  const commit = (number) => onChange(clampNumber(spec, number, current));
  const nudge = (by) => commit(current + by * step);

  const onPointerDown = (event) => {
    if (event.button !== 0) return;
    event.currentTarget.setPointerCapture(event.pointerId);
    drag.current = { x: event.clientX, start: current, moved: false };
  };
  const onPointerMove = (event) => {
    const d = drag.current;
    if (!d) return;
    const steps = Math.trunc((event.clientX - d.x) / DRAG_PX_PER_STEP);
    if (!steps && !d.moved) return;
    d.moved = true;
    commit(d.start + steps * step * (event.shiftKey ? 10 : 1));
  };
  const onPointerUp = () => {
    drag.current = null;
  };

  return (
    <div className="w-row">
      <span
        className="w-label w-drag nodrag"
        title={`${spec.description || spec.name} — drag sideways to change`}
        onPointerDown={onPointerDown}
        onPointerMove={onPointerMove}
        onPointerUp={onPointerUp}
        onPointerCancel={onPointerUp}
      >
        {label(spec)}
      </span>
      <span className="w-number nodrag">
        <button type="button" tabIndex={-1} className="w-step" aria-label={`decrease ${spec.name}`} onClick={() => nudge(-1)}>
          ‹
        </button>
        <input
          data-testid={testId}
          aria-label={spec.name}
          inputMode={spec.type === "INT" ? "numeric" : "decimal"}
          value={text ?? formatNumber(spec, value ?? current)}
          onChange={(event) => {
            setText(event.target.value);
            const number = Number(event.target.value.trim());
            if (event.target.value.trim() !== "" && Number.isFinite(number)) commit(number);
          }}
          onFocus={(event) => event.target.select()}
          onBlur={() => setText(null)}
          onKeyDown={(event) => {
            if (event.key === "ArrowUp" || event.key === "ArrowDown") {
              event.preventDefault();
              setText(null);
              nudge((event.key === "ArrowUp" ? 1 : -1) * (event.shiftKey ? 10 : 1));
            } else if (event.key === "Enter") {
              event.target.blur();
            } else if (event.key === "Escape") {
              setText(null);
              event.target.blur();
            }
          }}
        />
        <button type="button" tabIndex={-1} className="w-step" aria-label={`increase ${spec.name}`} onClick={() => nudge(1)}>
          ›
        </button>
      </span>
    </div>
  );
}

/** Choices ranked for what is typed: exact, then start, then inside, then letters in order. */
export function filterChoices(choices, query) {
  const q = query.trim().toLowerCase();
  if (!q) return choices;
  const rank = (choice) => {
    const c = String(choice).toLowerCase();
    if (c === q) return 0;
    if (c.startsWith(q)) return 1;
    if (c.includes(q)) return 2;
    let at = 0;
    for (const ch of q) {
      at = c.indexOf(ch, at);
      if (at < 0) return -1;
      at += 1;
    }
    return 3;
  };
  return choices
    .map((choice, i) => ({ choice, i, r: rank(choice) }))
    .filter((x) => x.r >= 0)
    .sort((a, b) => a.r - b.r || a.i - b.i)
    .map((x) => x.choice);
}

function ComboWidget({ testId, spec, value, onChange }) {
  const [open, setOpen] = useState(false);
  const [query, setQuery] = useState("");
  const [active, setActive] = useState(0);
  const [box, setBox] = useState(null);
  const input = useRef(null);
  const list = useRef(null);
  const choices = spec.choices || [];
  const shown = useMemo(() => filterChoices(choices, query), [choices, query]);
  const missing = value != null && value !== "" && !choices.includes(value);

  const openList = () => {
    const rect = input.current.getBoundingClientRect();
    setBox({ left: rect.left, top: rect.bottom + 2, width: Math.max(rect.width, 180), above: rect.top });
    setQuery("");
    setActive(Math.max(0, choices.indexOf(value)));
    setOpen(true);
  };
  const pick = (choice) => {
    if (choice !== undefined) onChange(choice);
    setOpen(false);
    setQuery("");
    input.current && input.current.blur();
  };

  useEffect(() => {
    if (!open) return undefined;
    const close = (event) => {
      if (list.current && list.current.contains(event.target)) return;
      if (input.current && input.current.contains(event.target)) return;
      setOpen(false);
      setQuery("");
    };
    window.addEventListener("pointerdown", close, true);
    window.addEventListener("wheel", close, true);
    return () => {
      window.removeEventListener("pointerdown", close, true);
      window.removeEventListener("wheel", close, true);
    };
  }, [open]);

  useLayoutEffect(() => {
    if (!open || !list.current) return;
    const row = list.current.querySelector(`[data-index="${active}"]`);
    if (row) row.scrollIntoView({ block: "nearest" });
  }, [open, active]);

  const root = typeof document !== "undefined" ? document.querySelector(".studio-root") || document.body : null;
  const room = box ? window.innerHeight - box.top - 8 : 0;
  const upward = box && room < 160 && box.above > room;

  return (
    <div className="w-row">
      <span className="w-label" title={spec.description || spec.name}>
        {label(spec)}
      </span>
      <span className={`w-combo nodrag${missing ? " missing" : ""}`}>
        <input
          ref={input}
          data-testid={testId}
          role="combobox"
          aria-expanded={open}
          aria-label={spec.name}
          title={missing ? `${value} is not installed here` : String(value ?? "")}
          value={open ? query : String(value ?? "")}
          placeholder={open ? String(value ?? "") : ""}
          onFocus={() => !open && openList()}
          onMouseDown={() => {
            if (document.activeElement === input.current && !open) openList();
          }}
          onChange={(event) => {
            setQuery(event.target.value);
            setActive(0);
            if (!open) setOpen(true);
          }}
          onBlur={() => {
            const exact = choices.find((c) => String(c).toLowerCase() === query.trim().toLowerCase());
            if (open && query && exact !== undefined) onChange(exact);
            setOpen(false);
            setQuery("");
          }}
          onKeyDown={(event) => {
            if (event.key === "ArrowDown" || event.key === "ArrowUp") {
              event.preventDefault();
              if (!open) openList();
              const by = event.key === "ArrowDown" ? 1 : -1;
              setActive((a) => Math.min(Math.max(a + by, 0), Math.max(shown.length - 1, 0)));
            } else if (event.key === "Enter") {
              event.preventDefault();
              pick(shown[active] ?? shown[0]);
            } else if (event.key === "Escape") {
              event.preventDefault();
              pick(undefined);
            }
          }}
        />
        <span className="w-caret" aria-hidden="true">
          ▾
        </span>
      </span>
      {open && box && root
        ? createPortal(
            <ul
              ref={list}
              className="w-combo-list"
              role="listbox"
              style={{
                left: box.left,
                width: box.width,
                ...(upward ? { bottom: window.innerHeight - box.above + 2, maxHeight: Math.min(320, box.above - 8) } : { top: box.top, maxHeight: Math.min(320, room) }),
              }}
            >
              {shown.length ? (
                shown.map((choice, i) => (
                  <li
                    key={String(choice)}
                    data-index={i}
                    role="option"
                    aria-selected={choice === value}
                    className={`${i === active ? "active" : ""}${choice === value ? " current" : ""}`}
                    onMouseDown={(event) => event.preventDefault()}
                    onMouseEnter={() => setActive(i)}
                    onClick={() => pick(choice)}
                  >
                    {String(choice)}
                  </li>
                ))
              ) : (
                <li className="empty">nothing matches “{query}”</li>
              )}
            </ul>,
            root,
          )
        : null}
    </div>
  );
}

function TextWidget({ testId, spec, value, onChange }) {
  return (
    <div className="w-row">
      <span className="w-label" title={spec.description || spec.name}>
        {label(spec)}
      </span>
      <input
        className="w-text nodrag"
        data-testid={testId}
        aria-label={spec.name}
        value={value == null ? "" : String(value)}
        onChange={(event) => onChange(event.target.value)}
        onKeyDown={(event) => event.key === "Enter" && event.target.blur()}
      />
    </div>
  );
}

function TextareaWidget({ testId, spec, value, onChange }) {
  const area = useRef(null);
  const text = value == null ? "" : String(value);
  useLayoutEffect(() => {
    const el = area.current;
    if (!el) return;
    const line = parseFloat(getComputedStyle(el).lineHeight) || 18;
    const pad = el.offsetHeight - el.clientHeight + 8;
    el.style.height = "auto";
    const wanted = Math.min(el.scrollHeight, line * TEXTAREA_MAX_LINES + pad);
    el.style.height = `${Math.max(wanted, line * 2 + pad)}px`;
  }, [text]);
  return (
    <div className="w-row w-row-textarea">
      <span className="w-label" title={spec.description || spec.name}>
        {label(spec)}
      </span>
      <textarea
        ref={area}
        className="w-textarea nodrag nowheel"
        data-testid={testId}
        aria-label={spec.name}
        spellCheck={false}
        value={text}
        placeholder="(empty)"
        onChange={(event) => onChange(event.target.value)}
      />
    </div>
  );
}

function BooleanWidget({ testId, spec, value, onChange }) {
  return (
    <label className="w-row w-bool nodrag">
      <span className="w-label" title={spec.description || spec.name}>
        {label(spec)}
      </span>
      <input
        type="checkbox"
        data-testid={testId}
        aria-label={spec.name}
        checked={Boolean(value)}
        onChange={(event) => onChange(event.target.checked)}
      />
    </label>
  );
}

/** The widget of one input, by its kind. */
export function Widget({ nodeId, spec, value, onChange }) {
  const testId = `widget-${nodeId}-${spec.name}`;
  const props = { testId, spec, value, onChange };
  switch (widgetKind(spec)) {
    case "combo":
      return <ComboWidget {...props} />;
    case "int":
    case "float":
      return <NumberWidget {...props} />;
    case "boolean":
      return <BooleanWidget {...props} />;
    case "textarea":
      return <TextareaWidget {...props} />;
    default:
      return <TextWidget {...props} />;
  }
}

/** "control after run" of a seed: fixed / increment / randomize. */
export function SeedControl({ nodeId, spec, mode, onChange }) {
  return (
    <div className="w-row w-seed">
      <span className="w-label" title="What happens to the seed after each run">
        control after run
      </span>
      <select
        className="nodrag"
        data-testid={`seed-control-${nodeId}-${spec.name}`}
        aria-label={`${spec.name}: control after run`}
        value={mode}
        onChange={(event) => onChange(event.target.value)}
      >
        {SEED_CONTROLS.map((m) => (
          <option key={m} value={m}>
            {m}
          </option>
        ))}
      </select>
    </div>
  );
}
