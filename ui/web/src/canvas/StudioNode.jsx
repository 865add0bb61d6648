// One workflow node on the canvas, as HTML: a header (title, mode, run state), sockets coloured
// by type (inputs left, outputs right), widgets (name left, value right), and what the run
// says: a progress bar, pictures, text, errors in plain words.
import { memo, useContext, useEffect, useRef, useState } from "react";
import { Handle, NodeResizer, Position, useUpdateNodeInternals } from "@xyflow/react";
import { api, urls } from "../api.js";
import MediaItem from "../media/Media.jsx";
import { isVideo } from "../media/media.js";
import { displayName, hasSocket, hasWidget, isLink, isSeedInput, socketColor, typeDefault } from "../graph/defs.js";
import { useStudio } from "../store/index.js";
import { TabContext } from "./context.js";
import { SeedControl, Widget } from "./widgets.jsx";
import "./nodes.css";

const STATE_LABELS = {
  queued: "queued",
  running: "running",
  done: "done",
  cached: "cached",
  failed: "failed",
  skipped: "skipped",
};

/** "a,b": the inputs of a node that have a link drawn into them (a stable string for selectors). */
function linkedKey(state, tabId, nodeId) {
  const tab = state.tabs.find((t) => t.id === tabId);
  if (!tab) return "";
  const names = [];
  for (const edge of tab.edges) if (edge.target === nodeId) names.push(edge.targetHandle);
  return names.sort().join(",");
}

function seedModes(state, tabId, nodeId) {
  const tab = state.tabs.find((t) => t.id === tabId);
  const controls = tab && tab.metadata && tab.metadata.studio && tab.metadata.studio.seed_control;
  return (controls && controls[nodeId]) || null;
}

function clock(seconds) {
  if (!Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function SocketHandle({ nodeId, type, side, name, color, kind }) {
  return (
    <Handle
      type={kind}
      position={side}
      id={name}
      data-testid={`socket-${nodeId}-${kind === "target" ? "in" : "out"}-${name}`}
      className="sn-handle"
      style={{ background: color }}
      title={`${name}: ${type}`}
    />
  );
}

function Title({ tabId, id, text }) {
  const [editing, setEditing] = useState(false);
  const renameNode = useStudio((s) => s.renameNode);
  if (editing) {
    return (
      <input
        className="sn-title-edit nodrag"
        autoFocus
        defaultValue={text}
        onFocus={(event) => event.target.select()}
        onBlur={(event) => {
          renameNode(tabId, id, event.target.value);
          setEditing(false);
        }}
        onKeyDown={(event) => {
          if (event.key === "Enter") event.target.blur();
          if (event.key === "Escape") setEditing(false);
        }}
      />
    );
  }
  return (
    <span className="sn-title" data-testid={`node-${id}-title`} title="Double-click to rename" onDoubleClick={() => setEditing(true)}>
      {text}
    </span>
  );
}

function Progress({ id, run }) {
  const total = run.total || 0;
  const fraction = total ? Math.min(1, (run.step || 0) / total) : null;
  const parts = [];
  if (total) parts.push(`${run.step || 0}/${total}`);
  if (Number.isFinite(run.rate) && run.rate > 0) parts.push(`${run.rate >= 10 ? run.rate.toFixed(0) : run.rate.toFixed(1)} it/s`);
  if (Number.isFinite(run.eta) && run.eta > 0) parts.push(`${clock(run.eta)} left`);
  return (
    <div className="sn-progress" data-testid={`node-${id}-progress`} role="progressbar" aria-valuenow={fraction == null ? undefined : Math.round(fraction * 100)}>
      <div className={`sn-progress-bar${fraction == null ? " indeterminate" : ""}`} style={fraction == null ? undefined : { width: `${fraction * 100}%` }} />
      {parts.length ? <span className="sn-progress-text">{parts.join(" · ")}</span> : null}
    </div>
  );
}

function Media({ id, run, inputPicture }) {
  const [index, setIndex] = useState(0);
  const [broken, setBroken] = useState(null);
  const images = (run && run.images) || [];
  let src = null;
  let many = false;
  if (run && run.state === "running" && run.preview) src = run.preview;
  else if (images.length) {
    src = images[Math.min(index, images.length - 1)];
    many = images.length > 1;
  } else if (run && run.preview) src = run.preview;
  else if (inputPicture) src = inputPicture;
  if (!src) return null;
  return (
    <div className={`sn-media${src === inputPicture ? " input-picture" : ""}`}>
      {broken === src ? (
        <div className="sn-media-missing">{inputPicture === src ? "picture not found in input/" : "picture not available"}</div>
      ) : (
        <MediaItem
          data-testid={`node-${id}-${isVideo(src) ? "video" : "image"}`}
          src={src}
          alt=""
          draggable={false}
          onError={() => setBroken(src)}
          onLoad={(event) => {
            const w = event.currentTarget.naturalWidth || event.currentTarget.videoWidth;
            event.currentTarget.classList.toggle("tiny", w >= 24 && w < 96);
          }}
        />
      )}
      {many ? (
        <div className="sn-thumbs nodrag">
          {images.map((url, i) => (
            <button type="button" key={url} className={i === index ? "active" : ""} onClick={() => setIndex(i)} title={`${isVideo(url) ? "video" : "image"} ${i + 1} of ${images.length}`}>
              <MediaItem src={url} alt="" controls={false} draggable={false} />
            </button>
          ))}
        </div>
      ) : null}
    </div>
  );
}

function UploadButton({ tabId, id, input }) {
  const file = useRef(null);
  const [busy, setBusy] = useState(false);
  const setNodeInput = useStudio((s) => s.setNodeInput);
  const upload = async (chosen) => {
    if (!chosen) return;
    setBusy(true);
    try {
      const answer = await api.uploadInput(chosen.name, chosen);
      setNodeInput(tabId, id, input, answer.name);
      useStudio.getState().loadDefs();
    } catch (error) {
      const toast = useStudio.getState().toast;
      if (toast) toast(`Could not upload ${chosen.name}: ${error.message}`, "error");
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <button type="button" className="sn-button nodrag" disabled={busy} onClick={() => file.current.click()}>
        {busy ? "Uploading…" : "Upload…"}
      </button>
      <input
        ref={file}
        type="file"
        accept="image/*"
        hidden
        onChange={(event) => {
          upload(event.target.files[0]);
          event.target.value = "";
        }}
      />
    </>
  );
}

function UnknownBody({ data }) {
  const entries = data.raw !== undefined ? [["(entry)", data.raw]] : Object.entries(data.badInputs !== undefined ? { inputs: data.badInputs } : data.inputs);
  return (
    <div className="sn-unknown">
      {entries.map(([name, value]) => (
        <div className="w-row" key={name}>
          <span className="w-label">{name}</span>
          <code className="sn-unknown-value">{isLink(value) ? `→ ${value.node}.${value.output}` : JSON.stringify(value)}</code>
        </div>
      ))}
    </div>
  );
}

/** The height the user gave the node (a minimum: the node grows with its content), or null. */
function givenHeight(state, tabId, nodeId) {
  const tab = state.tabs.find((t) => t.id === tabId);
  const node = tab && tab.nodes.find((n) => n.id === nodeId);
  return node && node.width != null && node.height != null ? node.height : null;
}

function StudioNode({ id, data, selected }) {
  const tabId = useContext(TabContext);
  const height = useStudio((s) => givenHeight(s, tabId, id));
  const def = useStudio((s) => (data.unknown ? null : s.defs.types[data.type]));
  const colors = useStudio((s) => s.defs.colors);
  const linked = useStudio((s) => linkedKey(s, tabId, id));
  const run = useStudio((s) => (s.nodeState && s.nodeState[tabId] ? s.nodeState[tabId][id] : null));
  const issues = useStudio((s) => (s.issues && s.issues[tabId] ? s.issues[tabId][id] : null));
  const seeds = useStudio((s) => seedModes(s, tabId, id));
  const setNodeInput = useStudio((s) => s.setNodeInput);
  const setSeedControl = useStudio((s) => s.setSeedControl);
  const updateNodeInternals = useUpdateNodeInternals();
  const linkedSet = new Set(linked ? linked.split(",") : []);

  useEffect(() => {
    updateNodeInternals(id);
  }, [linked, id, updateNodeInternals]);

  const unknown = !def;
  const typeName = data.raw !== undefined ? "not a node" : String(data.type);
  const title = (typeof data.title === "string" && data.title) || (def ? displayName(def) : typeName);
  const specs = def ? def.inputs || [] : [];
  const linkInputs = def
    ? specs.filter((s) => s.accepts === "link")
    : ((data.sockets && data.sockets.inputs) || []).map((name) => ({ name, type: "*" }));
  const outputs = def ? def.outputs || [] : ((data.sockets && data.sockets.outputs) || []).map((name) => ({ name, type: "*" }));
  const widgetSpecs = specs.filter((s) => s.accepts !== "link");
  const rows = Math.max(linkInputs.length, outputs.length);
  const wide = specs.some((s) => s.multiline && hasWidget(s));
  const fileInput = specs.find((s) => s.file_list) || (def && def.type === "LoadImage" ? specs.find((s) => s.name === "path") : null);
  const picturePath = fileInput && typeof data.inputs[fileInput.name] === "string" ? data.inputs[fileInput.name] : null;
  const state = run && run.state;
  const errorLines = [];
  if (state === "failed" && run.error) errorLines.push(run.error);
  for (const message of issues || []) errorLines.push(message);

  const classes = ["studio-node"];
  if (selected) classes.push("selected");
  if (state) classes.push(`state-${state}`);
  if (data.mode) classes.push(`mode-${data.mode}`);
  if (errorLines.length) classes.push("has-error");
  if (unknown) classes.push("unknown");
  if (height != null) classes.push("sized");
  if (wide) classes.push("wide");

  const headerStyle = typeof data.color === "string" ? { background: data.color } : undefined;
  const valueOf = (spec) => (spec.name in data.inputs ? data.inputs[spec.name] : typeDefault(spec));

  return (
    <div
      className={classes.join(" ")}
      data-testid={`node-${id}`}
      style={height != null ? { minHeight: height } : undefined}
    >
      <NodeResizer isVisible={selected} minWidth={160} minHeight={48} handleClassName="sn-resize-handle" lineClassName="sn-resize-line" />
      <div className="sn-header" style={headerStyle} title={def ? `${def.type}: ${def.description || ""}` : undefined}>
        <Title tabId={tabId} id={id} text={title} />
        {data.mode ? <span className={`sn-badge mode`}>{data.mode === "bypass" ? "bypassed" : "muted"}</span> : null}
        {state && state !== "running" ? <span className={`sn-badge state-${state}`}>{STATE_LABELS[state] || state}</span> : null}
      </div>
      {unknown ? <div className="sn-unknown-type">{data.raw !== undefined ? "not a node: kept as it is" : `unknown node type ${typeName}`}</div> : null}
      {state === "running" ? <Progress id={id} run={run} /> : null}
      <div className="sn-body">
        {Array.from({ length: rows }, (_, i) => {
          const input = linkInputs[i];
          const output = outputs[i];
          return (
            <div className="sn-socket-row" key={`row-${i}`}>
              {input ? (
                <span className={`sn-in${input.optional ? " optional" : ""}`}>
                  <SocketHandle nodeId={id} kind="target" side={Position.Left} name={input.name} type={input.type} color={socketColor(input.type, colors)} />
                  {input.name}
                </span>
              ) : (
                <span />
              )}
              {output ? (
                <span className="sn-out">
                  {output.name}
                  <SocketHandle nodeId={id} kind="source" side={Position.Right} name={output.name} type={output.type} color={socketColor(output.type, colors)} />
                </span>
              ) : null}
            </div>
          );
        })}
        {widgetSpecs.map((spec) => {
          const socket = hasSocket(spec) ? (
            <SocketHandle nodeId={id} kind="target" side={Position.Left} name={spec.name} type={spec.type} color={socketColor(spec.type, colors)} />
          ) : null;
          if (linkedSet.has(spec.name)) {
            return (
              <div className="sn-socket-row" key={spec.name}>
                <span className="sn-in">
                  {socket}
                  {spec.name}
                </span>
              </div>
            );
          }
          if (!hasWidget(spec)) return null;
          return (
            <div className="sn-widget" key={spec.name}>
              {socket ? <div className="sn-anchor">{socket}</div> : null}
              <Widget nodeId={id} spec={spec} value={valueOf(spec)} onChange={(value) => setNodeInput(tabId, id, spec.name, value)} />
              {isSeedInput(spec) ? (
                <SeedControl
                  nodeId={id}
                  spec={spec}
                  mode={(seeds && seeds[spec.name]) || "fixed"}
                  onChange={(mode) => setSeedControl(tabId, id, spec.name, mode)}
                />
              ) : null}
            </div>
          );
        })}
        {unknown ? <UnknownBody data={data} /> : null}
      </div>
      <Media id={id} run={run} inputPicture={picturePath ? urls.input(picturePath) : null} />
      {run && typeof run.text === "string" ? <pre className="sn-text nowheel">{run.text}</pre> : null}
      {fileInput ? (
        <div className="sn-actions">
          <UploadButton tabId={tabId} id={id} input={fileInput.name} />
          {def && def.type === "LoadImage" ? (
            <button
              type="button"
              className="sn-button nodrag"
              data-testid={`node-${id}-mask`}
              disabled={!picturePath}
              onClick={() => {
                const open = useStudio.getState().openMaskEditor;
                if (open) open(tabId, id);
              }}
            >
              Edit mask
            </button>
          ) : null}
        </div>
      ) : null}
      {errorLines.length ? (
        <div className="sn-error" data-testid={`node-${id}-error`} role="alert">
          {errorLines.map((line, i) => (
            <div key={i}>{line}</div>
          ))}
        </div>
      ) : null}
    </div>
  );
}

export default memo(StudioNode);
