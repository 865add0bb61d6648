// Steps per second, time left and the whole run's fraction, from node_progress events.
// Pure functions (no React, no DOM) so node:test can check them.

const SMOOTHING = 0.3; // weight of the newest measurement in the moving average
const MIN_GAP_MS = 5; // events closer than this (a replay after a reload) are not timed

// A meter for one node: call startMeter when the node starts, then updateMeter for each
// progress event. Meters are plain objects and never change in place.
export function startMeter(now) {
  return { since: now, lastStep: 0, lastTime: now, rate: null };
}

// -> {meter, rate (steps/s or null), eta (seconds or null)}
export function updateMeter(meter, step, total, now) {
  let m = meter || startMeter(now);
  if (step < m.lastStep) m = startMeter(m.lastTime); // a second pass of the same node
  const steps = step - m.lastStep;
  const gap = now - m.lastTime;
  let rate = m.rate;
  if (steps > 0 && gap >= MIN_GAP_MS) {
    const measured = (steps * 1000) / gap;
    rate = rate === null ? measured : rate + SMOOTHING * (measured - rate);
  }
  const next = steps > 0 ? { since: m.since, lastStep: step, lastTime: now, rate } : { ...m, rate };
  return { meter: next, rate, eta: etaSeconds(step, total, rate) };
}

export function etaSeconds(step, total, rate) {
  if (!rate || rate <= 0 || !(total > 0)) return null;
  return Math.max(0, (total - step) / rate);
}

// The whole run as a fraction 0..1: nodes done of those planned, plus the running node's share.
export function runFraction(planned, done, step = 0, total = 0) {
  if (!(planned > 0)) return 0;
  const current = total > 0 ? Math.min(1, Math.max(0, step / total)) : 0;
  return Math.min(1, Math.max(0, (Math.min(done, planned) + (done < planned ? current : 0)) / planned));
}

// 4 -> "0:04", 75 -> "1:15", 3725 -> "1:02:05".
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

// 3.42 -> "3.4 it/s"; below one step a second as ComfyUI writes it: 0.5 -> "2.0 s/it".
export function formatRate(rate) {
  if (!rate || rate <= 0 || !Number.isFinite(rate)) return "";
  if (rate >= 1) return `${rate >= 100 ? Math.round(rate) : rate.toFixed(1)} it/s`;
  return `${(1 / rate).toFixed(1)} s/it`;
}
