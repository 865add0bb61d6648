// What the queue panel and the viewer say about a job summary (GET /api/queue, /api/history,
// /api/jobs/{id}): its pictures, seeds, name and times in plain words.
import { urls } from "../api.js";
import { isMedia } from "../media/media.js";

// The job's saved pictures and videos (MP4 plays in the viewer), as URLs.
export const entryFiles = (entry) => (entry.outputs || []).filter(isMedia);
export const entryImages = (entry) => entryFiles(entry).map((f) => urls.file(f));

// A picture for a job that saved none (a PreviewImage workflow): the job's latest preview,
// while the server still keeps it; only for finished runs (a failed run's would be a
// half-sampled frame).
export const entryPreview = (entry) => (entry.status === "done" ? urls.jobPreview(entry.id) : null);

// {nodeId: seed} of the workflow's constant seeds, else the run's seed.
export function entrySeeds(entry) {
  const seeds = entry.seeds && typeof entry.seeds === "object" ? Object.entries(entry.seeds) : [];
  if (seeds.length) return seeds;
  return entry.seed !== null && entry.seed !== undefined ? [["run", entry.seed]] : [];
}

export const entrySeedText = (entry) => {
  const seeds = entrySeeds(entry);
  if (!seeds.length) return "";
  return seeds.length === 1 ? `seed ${seeds[0][1]}` : `seeds ${seeds.map(([, s]) => s).join(", ")}`;
};

export const entryName = (entry) => entry.name || `job ${entry.id}`;

// Seconds since 1970 -> "14:03" today, "12 Mar 14:03" on another day.
export function clockTime(seconds) {
  if (!seconds) return "";
  const date = new Date(seconds * 1000);
  const time = date.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
}

// How long the job ran: "4.2 s", "1 min 05 s".
export function runLength(entry) {
  if (!entry.started || !entry.finished) return "";
  const s = Math.max(0, entry.finished - entry.started);
  if (s < 0.1) return "<0.1 s";
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${String(Math.round(s % 60)).padStart(2, "0")} s`;
}

export const STATUS_WORDS = {
  queued: "queued",
  running: "running",
  done: "done",
  failed: "failed",
  cancelled: "cancelled",
  interrupted: "interrupted",
};
