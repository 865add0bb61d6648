// The Train panel (right of the canvas, opened by the toolbar's Train): teach a model a concept
// from a few captioned pictures, as a LoRA or an embedding. The form comes from the training
// nodes' definitions (nodes/training.py); Start uploads the pictures into a dataset and queues
// the training as a job; while it runs the panel shows its steps, loss, time left and the live
// loss plot, with Cancel; at the end the file's name and how to use it.
import { useEffect, useState } from "react";
import { urls } from "../api.js";
import { formatDuration, formatRate } from "../run/progress.js";
import { useStudio } from "../store/index.js";
import { useTrain } from "./store.js";
import {
  SETTING_LABELS,
  advancedSettings,
  KIND_WORDS,
  MAIN_SETTINGS,
  NODE_TYPES,
  TRAIN_NODE,
  pairCaptions,
  progressWords,
  trainableCheckpoints,
  usage,
  valuesOf,
} from "./train.js";
import "./train.css";

const KIND_HELP = {
  lora: "Teaches the model a new subject or style. Use it with a Load LoRA node.",
  embedding: "Teaches the text encoder a new word. Use it in any prompt.",
};

const HEADINGS = { running: "Training", done: "Trained", cancelled: "Stopped training" };

const labelOf = (name) => SETTING_LABELS[name] || name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());

function Field({ spec, value, onChange }) {
  const id = `train-${spec.name}`;
  if (spec.type === "BOOLEAN") {
    return (
      <label className="train-check" title={spec.description}>
        <input type="checkbox" data-testid={id} checked={Boolean(value)} onChange={(e) => onChange(e.target.checked)} />
        <span>{labelOf(spec.name)}</span>
      </label>
    );
  }
  if (Array.isArray(spec.choices) && spec.choices.length) {
    return (
      <label className="train-field" title={spec.description}>
        <span>{labelOf(spec.name)}</span>
        <select data-testid={id} value={value ?? spec.choices[0]} onChange={(e) => onChange(e.target.value)}>
          {spec.choices.map((choice) => (
            <option key={choice} value={choice}>
              {choice}
            </option>
          ))}
        </select>
      </label>
    );
  }
  if (spec.multiline) {
    return (
      <label className="train-field train-field-wide" title={spec.description}>
        <span>{labelOf(spec.name)}</span>
        <textarea data-testid={id} rows={3} value={value ?? ""} onChange={(e) => onChange(e.target.value)} />
      </label>
    );
  }
  const number = spec.type === "INT" || spec.type === "FLOAT";
  const parse = (text) => {
    if (!number) return text;
    const n = spec.type === "INT" ? Number.parseInt(text, 10) : Number.parseFloat(text);
    return Number.isFinite(n) ? n : text;
  };
  return (
    <label className="train-field" title={spec.description}>
      <span>{labelOf(spec.name)}</span>
      <input
        type={number ? "number" : "text"}
        data-testid={id}
        value={value ?? ""}
        min={spec.min}
        max={spec.max}
        step={number ? (spec.type === "INT" ? spec.step || 1 : "any") : undefined}
        onChange={(e) => onChange(parse(e.target.value))}
      />
    </label>
  );
}

function Pictures() {
  const pending = useTrain((s) => s.pending);
  const addPictures = useTrain((s) => s.addPictures);
  const setCaption = useTrain((s) => s.setCaption);
  const removePicture = useTrain((s) => s.removePicture);
  const kind = useTrain((s) => s.kind);
  const form = useTrain((s) => s.form);
  const def = useStudio((s) => (s.defs.types || {})[NODE_TYPES[kind]]);
  const token = valuesOf(kind, form, def).token;
  const choose = async (files) => {
    const { pictures, skipped } = await pairCaptions(files, (file) => file.text());
    addPictures(pictures);
    if (skipped) useStudio.getState().toast(`Left out ${skipped} file(s) that are neither pictures (png, jpg, webp) nor .txt captions.`, "info");
  };
  // pictures (and captions) dropped on the list join it; the page's own drop handler then
  // leaves them alone (it skips drops already handled)
  const onDrop = (e) => {
    const dropped = Array.from((e.dataTransfer && e.dataTransfer.files) || []);
    if (!dropped.length) return;
    e.preventDefault();
    choose(dropped);
  };
  return (
    <div
      className="train-pictures"
      data-testid="train-drop"
      onDragOver={(e) => e.preventDefault()}
      onDrop={onDrop}
    >
      <label className="train-choose button-like" title="Pictures (png, jpg, webp), and .txt captions of the same names">
        Choose pictures…
        <input
          type="file"
          multiple
          accept="image/png,image/jpeg,image/webp,.png,.jpg,.jpeg,.webp,.txt,text/plain"
          data-testid="train-files"
          onChange={(e) => {
            const files = Array.from(e.target.files || []);
            e.target.value = "";
            choose(files);
          }}
        />
      </label>
      <p className="train-hint">
        Choose or drop a few pictures of the concept, each with a caption naming it by its token, e.g. “a red {token} at the top
        left”. A picture without a caption is “a photo of {token}”. Picking .txt files of the same names fills the
        captions.
      </p>
      {pending.length ? (
        <ul className="train-thumbs" data-testid="train-thumbs">
          {pending.map((p, i) => (
            <li key={p.url} className="train-thumb">
              <img src={p.url} alt={p.name} />
              <input
                type="text"
                aria-label={`Caption of ${p.name}`}
                data-testid="train-caption"
                placeholder={`a photo of ${token}`}
                value={p.caption}
                onChange={(e) => setCaption(i, e.target.value)}
              />
              <button type="button" aria-label={`Remove ${p.name}`} title="Remove" onClick={() => removePicture(i)}>
                ×
              </button>
            </li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}

function TrainForm() {
  const kind = useTrain((s) => s.kind);
  const setKind = useTrain((s) => s.setKind);
  const source = useTrain((s) => s.source);
  const setSource = useTrain((s) => s.setSource);
  const datasets = useTrain((s) => s.datasets);
  const dataset = useTrain((s) => s.dataset);
  const setDataset = useTrain((s) => s.setDataset);
  const ckpt = useTrain((s) => s.ckpt);
  const setCkpt = useTrain((s) => s.setCkpt);
  const busy = useTrain((s) => s.busy);
  const pendingCount = useTrain((s) => s.pending.length);
  const form = useTrain((s) => s.form);
  const setField = useTrain((s) => s.setField);
  const start = useTrain((s) => s.start);
  const def = useStudio((s) => (s.defs.types || {})[NODE_TYPES[kind]]);
  const models = useStudio((s) => s.models);

  if (!def) {
    return <p className="train-hint">The training nodes are not available on this server (nodes/training.py).</p>;
  }
  const values = valuesOf(kind, form, def);
  const specs = Object.fromEntries((def.inputs || []).map((s) => [s.name, s]));
  const ckptChoices = trainableCheckpoints(models, (specs.ckpt_name || {}).choices);
  const chosenCkpt = ckptChoices.includes(ckpt) ? ckpt : ckptChoices[0] || "";
  const usable = datasets.filter((d) => d.pictures > 0);
  const chosenDataset = usable.some((d) => d.name === dataset) ? dataset : (usable[0] || {}).name || "";
  const existing = datasets.find((d) => d.name === values.name);
  const field = (name) =>
    specs[name] ? <Field key={name} spec={specs[name]} value={values[name]} onChange={(v) => setField(name, v)} /> : null;

  return (
    <form
      className="train-form"
      noValidate // the node checks the values and says what is wrong (a 422 names the input)
      onSubmit={(e) => {
        e.preventDefault();
        if (source === "existing") setDataset(chosenDataset);
        start(chosenCkpt);
      }}
    >
      <div className="train-kinds" role="group" aria-label="What to train">
        {Object.keys(NODE_TYPES).map((k) => (
          <button
            key={k}
            type="button"
            className={k === kind ? "active" : ""}
            aria-pressed={k === kind}
            data-testid={`train-kind-${k}`}
            onClick={() => setKind(k)}
          >
            {k === "lora" ? "LoRA" : "Embedding"}
          </button>
        ))}
      </div>
      <p className="train-hint">{KIND_HELP[kind]}</p>

      <label className="train-field" title={(specs.ckpt_name || {}).description}>
        <span>Base model</span>
        <select data-testid="train-ckpt" value={chosenCkpt} onChange={(e) => setCkpt(e.target.value)}>
          {ckptChoices.map((c) => (
            <option key={c} value={c}>
              {c}
            </option>
          ))}
        </select>
      </label>

      <fieldset className="train-section">
        <legend>Pictures</legend>
        <div className="train-sources" role="radiogroup" aria-label="Pictures">
          <label>
            <input type="radio" name="train-source" checked={source === "upload"} onChange={() => setSource("upload")} />
            New{pendingCount ? ` (${pendingCount})` : ""}
          </label>
          <label>
            <input
              type="radio"
              name="train-source"
              data-testid="train-source-existing"
              checked={source === "existing"}
              disabled={!usable.length}
              onChange={() => setSource("existing")}
            />
            Uploaded before
          </label>
        </div>
        {source === "upload" ? (
          <>
            <Pictures />
            {existing ? (
              <p className="train-hint">They join the dataset “{existing.name}” ({existing.pictures} pictures already).</p>
            ) : null}
          </>
        ) : (
          <label className="train-field">
            <span>Dataset</span>
            <select data-testid="train-dataset" value={chosenDataset} onChange={(e) => setDataset(e.target.value)}>
              {usable.map((d) => (
                <option key={d.name} value={d.name}>
                  {d.name} · {d.pictures} pictures, {d.captions} captioned
                </option>
              ))}
            </select>
          </label>
        )}
      </fieldset>

      {field("name")}
      {kind === "embedding" ? (
        <p className="train-hint">Prompts also read the bare name: pick one that is not an ordinary word (my-star, not star).</p>
      ) : null}
      {field("token")}
      {MAIN_SETTINGS.map(field)}
      <details className="train-advanced">
        <summary>Advanced</summary>
        {advancedSettings(kind, values).map(field)}
      </details>
      <div className="train-actions">
        <button type="submit" className="primary" data-testid="train-start" disabled={Boolean(busy)}>
          Start training
        </button>
        {busy ? <span className="train-busy">{busy}…</span> : null}
      </div>
      <p className="train-hint">
        The {KIND_WORDS[kind]} is written to models/{kind === "lora" ? "loras" : "embeddings"}/{values.name}
        .safetensors; pictures go to datasets/{source === "upload" ? values.name : chosenDataset}/ in the input folder.
      </p>
    </form>
  );
}

function UseResult({ training }) {
  const [copied, setCopied] = useState(false);
  const use = usage(training.kind, training.file, training.token);
  const addLoader = () => {
    const state = useStudio.getState();
    const tabId = state.activeTabId;
    const center = state.canvasApi ? state.canvasApi.center() : { x: 100, y: 100 };
    const id = state.addNode(tabId, "LoraLoader", center);
    if (!id) return;
    state.setNodeInput(tabId, id, "lora_name", use.loraName);
    state.toast(`Added Load LoRA with ${use.loraName}: link it between the checkpoint and the prompts and sampler.`, "ok");
  };
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(use.word);
      setCopied(true);
    } catch {
      useStudio.getState().toast(`Copy it by hand: ${use.word}`, "info");
    }
  };
  return (
    <div className="train-use">
      <p>{use.text}</p>
      {training.kind === "lora" ? (
        <button type="button" className="primary" data-testid="train-use" onClick={addLoader}>
          Add Load LoRA to the canvas
        </button>
      ) : (
        <div className="train-word">
          <code data-testid="train-word">{use.word}</code>
          <button type="button" data-testid="train-use" onClick={copy}>
            {copied ? "Copied" : "Copy"}
          </button>
        </div>
      )}
    </div>
  );
}

function TrainingView({ training }) {
  const cancel = useTrain((s) => s.cancel);
  const dismiss = useTrain((s) => s.dismiss);
  const fraction = training.total > 0 ? Math.min(1, training.step / training.total) : 0;
  const words = progressWords(training, formatRate, formatDuration);
  const plot = training.previewSeq ? urls.preview(training.jobId, TRAIN_NODE, 0, training.previewSeq) : null;
  const folder = training.kind === "lora" ? "loras" : "embeddings";
  return (
    <div className="train-job" data-testid="train-job" data-status={training.status}>
      <h3>
        {`${HEADINGS[training.ended ? training.status : "running"] || "Could not train"} the ${KIND_WORDS[training.kind]} “${training.name}”`}
      </h3>
      <div
        className={`train-progress${training.ended ? "" : " running"}`}
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(fraction * 100)}
        data-testid="train-progress"
      >
        <div style={{ width: `${(fraction * 100).toFixed(1)}%` }} />
      </div>
      <p className="train-status" data-testid="train-status" title="The loss is the mean of the last 20 steps">
        {words}
      </p>
      {plot ? (
        <img className="train-plot" data-testid="train-plot" src={plot} alt="The loss per step" />
      ) : (
        <div className="train-plot empty">The loss plot appears after the first steps.</div>
      )}
      {!training.ended ? (
        <button type="button" data-testid="train-cancel" onClick={cancel} title="Stop after the current step; what was learnt is saved">
          Cancel
        </button>
      ) : null}
      {training.ended && training.status === "done" && training.file ? (
        <div className="train-result" data-testid="train-result">
          <p>
            Saved as <strong>models/{folder}/{training.file}</strong>
            {training.result && training.result.steps_done ? ` after ${training.result.steps_done} steps.` : "."}
          </p>
          <UseResult training={training} />
        </div>
      ) : null}
      {training.ended && training.status === "cancelled" ? (
        <div className="train-result stopped" data-testid="train-result">
          <p>
            {training.saved
              ? `Stopped at step ${training.step}; what it learnt so far was saved as models/${folder}/${training.file}.`
              : "Stopped before any step was trained: nothing was saved."}
          </p>
          {training.saved && training.file ? <UseResult training={training} /> : null}
        </div>
      ) : null}
      {training.ended && training.status !== "done" && training.status !== "cancelled" ? (
        <p className="train-error" role="alert" data-testid="train-error">
          The training {training.status}: {training.error || "see the server's log"}
        </p>
      ) : null}
      {training.ended ? (
        <button type="button" data-testid="train-again" onClick={dismiss}>
          Train another
        </button>
      ) : null}
    </div>
  );
}

export default function TrainPanel() {
  const training = useTrain((s) => s.training);
  const setOpen = useTrain((s) => s.setOpen);
  useEffect(() => {
    useTrain.getState().refreshDatasets();
  }, []);
  return (
    <aside className="train-panel" data-testid="train-panel" aria-label="Train a concept">
      <div className="train-head">
        <h2>Train a concept</h2>
        <button type="button" aria-label="Close the Train panel" onClick={() => setOpen(false)}>
          ×
        </button>
      </div>
      <div className="train-body">{training ? <TrainingView training={training} /> : <TrainForm />}</div>
    </aside>
  );
}
