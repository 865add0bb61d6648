// One tab per open workflow: its title ("•" when it has unsaved changes), double-click to
// rename, × to close (asks first when unsaved), + for a new empty one.
import { useState } from "react";
import { useStudio } from "../store/index.js";
import "./tabs.css";

function Tab({ tab, index, active }) {
  const [editing, setEditing] = useState(false);
  const setActiveTab = useStudio((s) => s.setActiveTab);
  const renameTab = useStudio((s) => s.renameTab);
  const closeTab = useStudio((s) => s.closeTab);
  return (
    <div
      className={`tab${active ? " active" : ""}${tab.dirty ? " dirty" : ""}`}
      data-testid={`tab-${index}`}
      role="tab"
      aria-selected={active}
      title={tab.libraryName ? `${tab.title} (library: ${tab.libraryName})` : tab.title}
      onClick={() => setActiveTab(tab.id)}
      onAuxClick={(event) => event.button === 1 && closeTab(tab.id)}
      onDoubleClick={() => setEditing(true)}
    >
      {editing ? (
        <input
          className="tab-rename"
          autoFocus
          defaultValue={tab.title}
          aria-label="Tab name"
          onFocus={(event) => event.target.select()}
          onBlur={(event) => {
            renameTab(tab.id, event.target.value);
            setEditing(false);
          }}
          onKeyDown={(event) => {
            if (event.key === "Enter") event.target.blur();
            if (event.key === "Escape") setEditing(false);
          }}
        />
      ) : (
        <span className="tab-title">
          {tab.title}
          {tab.dirty ? <span className="tab-dirty" aria-label="unsaved changes"> •</span> : null}
        </span>
      )}
      <button
        type="button"
        className="tab-close"
        data-testid={`tab-close-${index}`}
        aria-label={`Close ${tab.title}`}
        title="Close"
        onClick={(event) => {
          event.stopPropagation();
          closeTab(tab.id);
        }}
      >
        ×
      </button>
    </div>
  );
}

export function TabBar() {
  const tabs = useStudio((s) => s.tabs);
  const activeTabId = useStudio((s) => s.activeTabId);
  const newTab = useStudio((s) => s.newTab);
  return (
    <div className="tab-bar" role="tablist" aria-label="Open workflows">
      {tabs.map((tab, index) => (
        <Tab key={tab.id} tab={tab} index={index} active={tab.id === activeTabId} />
      ))}
      <button type="button" className="tab-new" data-testid="tab-new" aria-label="New tab" title="New tab" onClick={() => newTab()}>
        +
      </button>
    </div>
  );
}

export default TabBar;
