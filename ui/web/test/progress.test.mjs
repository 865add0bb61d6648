// run/progress.js: steps per second, time left, the whole run's fraction, and their words.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  etaSeconds,
  formatDuration,
  formatRate,
  runFraction,
  startMeter,
  updateMeter,
} from "../src/run/progress.js";

test("the first step is timed from the node's start", () => {
  const { rate, eta } = updateMeter(startMeter(1000), 1, 20, 1500);
  assert.equal(rate, 2);
  assert.equal(eta, 9.5);
});

test("the rate is smoothed: one slow step moves it only part of the way", () => {
  let meter = startMeter(0);
  let out;
  for (let step = 1; step <= 10; step += 1) {
    out = updateMeter(meter, step, 20, step * 250); // 4 steps/s
    meter = out.meter;
  }
  assert.ok(Math.abs(out.rate - 4) < 1e-9);
  out = updateMeter(meter, 11, 20, 10 * 250 + 1000); // one step took 1 s
  assert.ok(out.rate < 4 && out.rate > 2.5, `rate ${out.rate}`);
  assert.ok(Math.abs(out.eta - 9 / out.rate) < 1e-9);
});

test("events replayed at once (after a reload) do not make up a huge rate", () => {
  const meter = startMeter(0);
  const first = updateMeter(meter, 1, 10, 0);
  assert.equal(first.rate, null);
  assert.equal(first.eta, null);
  const later = updateMeter(first.meter, 2, 10, 1);
  assert.equal(later.rate, null);
});

test("a second pass of the same node starts its measure again", () => {
  let { meter } = updateMeter(startMeter(0), 20, 20, 5000);
  const again = updateMeter(meter, 1, 20, 5500);
  assert.equal(again.rate, 2);
});

test("no rate, no time left; never negative", () => {
  assert.equal(etaSeconds(5, 10, null), null);
  assert.equal(etaSeconds(5, 0, 3), null);
  assert.equal(etaSeconds(12, 10, 3), 0);
});

test("the whole run: nodes done of planned plus the running node's share", () => {
  assert.equal(runFraction(4, 0), 0);
  assert.equal(runFraction(4, 2), 0.5);
  assert.equal(runFraction(4, 2, 10, 20), 0.625);
  assert.equal(runFraction(4, 4, 10, 20), 1);
  assert.equal(runFraction(0, 0), 0);
  assert.equal(runFraction(2, 5), 1);
});

test("durations and rates in words", () => {
  assert.equal(formatDuration(4), "0:04");
  assert.equal(formatDuration(75.4), "1:15");
  assert.equal(formatDuration(3725), "1:02:05");
  assert.equal(formatDuration(null), "");
  assert.equal(formatRate(3.42), "3.4 it/s");
  assert.equal(formatRate(0.5), "2.0 s/it");
  assert.equal(formatRate(250.4), "250 it/s");
  assert.equal(formatRate(null), "");
});
