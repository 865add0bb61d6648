// The Train panel's state (a store of its own: the studio's store is about tabs and runs):
// whether it is open, the kind and settings chosen, the pictures waiting to be uploaded, the
// datasets on the server, and the training job it follows. Starting uploads the pictures into
// the dataset, then queues the training workflow through the same /api/jobs the canvas uses
// and follows the job's events; the job itself lives on the server (the queue panel lists and
// cancels it too), and a reload finds it again.
import { create } from "zustand";
import { api, urls } from "../api.js";
import { applyJobEvent, newRun } from "../run/events.js";
import { openJobStream } from "../run/runner.js";
import { useStudio } from "../store/index.js";
import { datasetsApi } from "./datasets.js";
import {
  applyTrainEvent,
  nameProblem,
  NODE_TYPES,
  newTraining,
  TRAIN_NODE,
  trainingWorkflow,
  valuesOf,
} from "./train.js";

const CURRENT_KEY = "workflow-studio.training.v1";

const studio = () => useStudio.getState();
const defOf = (kind) => (studio().defs.types || {})[NODE_TYPES[kind]] || null;

// The training as one of this page's runs in the studio's store (run/events.js), so the run bar
// and the queue panel show its steps and time left as they do for a canvas run.
function mirrorRun(jobId, event) {
  const ctx = { now: Date.now(), urls, isOutputNode: () => true, title: () => "Training" };
  useStudio.setState((s) => {
    const before = s.runs[jobId] || newRun(jobId, null);
    const { run } = applyJobEvent(before, {}, event, ctx);
    return { runs: { ...s.runs, [jobId]: run } };
  });
}

// The LoRA files Load LoRA offers now (its choices in the node definitions).
function loraNames() {
  const def = (studio().defs.types || {}).LoraLoader;
  const spec = def ? (def.inputs || []).find((s) => s.name === "lora_name") : null;
  return (spec && spec.choices) || [];
}

function remember(info) {
  try {
    if (info) localStorage.setItem(CURRENT_KEY, JSON.stringify(info));
    else localStorage.removeItem(CURRENT_KEY);
  } catch {
    // storage refused: following works until a reload
  }
}

function remembered() {
  try {
    const value = JSON.parse(localStorage.getItem(CURRENT_KEY) || "null");
    return value && typeof value.jobId === "string" ? value : null;
  } catch {
    return null;
  }
}

export const useTrain = create((set, get) => {
  let closeStream = null;

  // Once the job has ended: its results (when the event had none) and fresh model lists, so
  // LoraLoader offers the new file at once; `saved`: whether the file is there now.
  const finish = async () => {
    const t = get().training;
    if (!t) return;
    let result = t.result;
    if (!result) {
      try {
        const job = await api.job(t.jobId);
        result = (job.results && job.results[TRAIN_NODE]) || null;
      } catch {
        result = null;
      }
    }
    try {
      await studio().loadDefs();
    } catch {
      // the lists refresh on the next focus
    }
    const file = result && result.name ? result.name : `${t.name}.safetensors`;
    // a cancelled training keeps what it learnt (as the trainer does), once a step was done
    let saved = Boolean(result && result.name) || t.step > 0;
    if (!(result && result.name) && t.kind === "lora") saved = loraNames().includes(file);
    set((s) => (s.training && s.training.jobId === t.jobId ? { training: { ...s.training, result, file, saved } } : {}));
    get().refreshDatasets();
  };

  return {
    open: false,
    kind: "lora",
    form: {}, // the values changed from the node's defaults (per kind: {lora: {...}, embedding: {...}})
    source: "upload", // "upload" new pictures or use an "existing" dataset
    ckpt: "", // the base model chosen ("" : the first one offered)
    dataset: "", // the existing dataset chosen
    pending: [], // [{file, name, caption, url}] pictures chosen, not uploaded yet
    datasets: [],
    training: null,
    busy: null, // what the panel is doing before the job exists ("uploading 3 of 8")

    setOpen(open) {
      set({ open: Boolean(open) });
      if (open) get().refreshDatasets();
    },
    toggle() {
      get().setOpen(!get().open);
    },
    setKind(kind) {
      set({ kind });
    },
    setSource(source) {
      set({ source });
    },
    setCkpt(ckpt) {
      set({ ckpt });
    },
    setDataset(dataset) {
      set({ dataset, source: "existing" });
    },

    // The settings as the node takes them (train.js valuesOf).
    values(kind = get().kind) {
      return valuesOf(kind, get().form, defOf(kind));
    },
    setField(name, value) {
      const kind = get().kind;
      set((s) => ({ form: { ...s.form, [kind]: { ...((s.form || {})[kind] || {}), [name]: value } } }));
    },

    addPictures(pictures) {
      const added = pictures.map((p) => ({ ...p, url: URL.createObjectURL(p.file) }));
      set((s) => ({ pending: [...s.pending, ...added], source: "upload" }));
    },
    setCaption(index, caption) {
      set((s) => ({ pending: s.pending.map((p, i) => (i === index ? { ...p, caption } : p)) }));
    },
    removePicture(index) {
      const gone = get().pending[index];
      if (gone) URL.revokeObjectURL(gone.url);
      set((s) => ({ pending: s.pending.filter((_, i) => i !== index) }));
    },
    clearPictures() {
      for (const p of get().pending) URL.revokeObjectURL(p.url);
      set({ pending: [] });
    },

    async refreshDatasets() {
      try {
        set({ datasets: await datasetsApi.list() });
      } catch {
        // keep what is shown
      }
    },

    // Upload the pictures waiting (into the dataset named like the file unless one was
    // chosen), then queue the training and follow it. -> the job id, or null.
    async start(ckpt) {
      const { kind, source, pending } = get();
      const values = get().values(kind);
      const problem = nameProblem(values.name);
      if (problem) {
        studio().toast(`The name: ${problem}`, "error");
        return null;
      }
      if (kind === "lora" && loraNames().includes(`${values.name}.safetensors`)) {
        studio().toast(`models/loras already has ${values.name}.safetensors: choose another name.`, "error");
        return null;
      }
      let datasetName = get().dataset;
      if (source === "upload") {
        if (!pending.length) {
          studio().toast("Choose pictures to train on (and their captions), or use a dataset already uploaded.", "error");
          return null;
        }
        datasetName = values.name;
        for (let i = 0; i < pending.length; i += 1) {
          set({ busy: `uploading picture ${i + 1} of ${pending.length}` });
          try {
            await datasetsApi.addPicture(datasetName, pending[i].file, pending[i].caption.trim());
          } catch (error) {
            set({ busy: null });
            studio().toast(`Could not upload ${pending[i].name}: ${error.message}`, "error");
            return null;
          }
        }
        get().clearPictures();
        await get().refreshDatasets();
        set({ source: "existing", dataset: datasetName });
      } else if (!datasetName) {
        studio().toast("Choose a dataset to train on.", "error");
        return null;
      }
      set({ busy: "queueing the training" });
      const form = { ...values, ckpt_name: ckpt, dataset: datasetName };
      let job;
      try {
        job = await api.submit(trainingWorkflow(kind, form, defOf(kind)));
      } catch (error) {
        set({ busy: null });
        const issues = error.issues ? error.issues.map((i) => i.message || i.text).join("; ") : error.message;
        studio().toast(`Could not start the training: ${issues}`, "error");
        return null;
      }
      set({ busy: null });
      studio().pollQueue();
      get().follow(job.id, { kind, name: values.name, steps: values.steps, token: values.token });
      return job.id;
    },

    // Follow a training job's events from its first one (so a reload replays them).
    follow(jobId, info) {
      if (closeStream) closeStream();
      remember({ jobId, ...info });
      set({ training: newTraining(jobId, info) });
      const stream = openJobStream(jobId, 0, {
        onEvent: (event) => {
          set((s) => (s.training && s.training.jobId === jobId ? { training: applyTrainEvent(s.training, event) } : {}));
          mirrorRun(jobId, event);
        },
        onEnd: () => {
          if (closeStream === stream) closeStream = null;
          mirrorRun(jobId, { event: "job_finished", status: get().training ? get().training.status : "done" });
          studio().pollQueue();
          set((s) => (s.training && s.training.jobId === jobId && !s.training.ended ? { training: { ...s.training, ended: true } } : {}));
          finish();
        },
      });
      closeStream = stream;
    },

    cancel() {
      const t = get().training;
      if (t && !t.ended) return studio().cancelJob(t.jobId);
      return Promise.resolve();
    },

    // Put the finished training aside (the panel shows the form again).
    dismiss() {
      if (closeStream) closeStream();
      closeStream = null;
      remember(null);
      set({ training: null });
    },

    // At start: the training this page followed before a reload, if any.
    restore() {
      const info = remembered();
      if (info && !get().training) get().follow(info.jobId, info);
    },
  };
});
