// run/seeds.js: one seed per job (the workflow's own), and "control after run".
import { test } from "node:test";
import assert from "node:assert/strict";
import { firstConstantSeed, nextSeed, randomSeed, runSeed, SEED_MAX, seedUpdates } from "../src/run/seeds.js";

const flow = (nodes) => ({ version: 1, nodes });
const sampler = (seed) => ({ type: "Sampler", inputs: { seed, steps: 4 } });

test("the job's seed is the first constant seed input, so there is no second seed", () => {
  const wf = flow({ a: { type: "EmptyLatent", inputs: {} }, s1: sampler(42), s2: sampler(7) });
  assert.equal(firstConstantSeed(wf), 42);
  assert.equal(runSeed(wf), 42);
});

test("a linked seed is not a constant; without one the seed is random and in range", () => {
  const wf = flow({ s: sampler({ node: "n", output: "value" }) });
  assert.equal(firstConstantSeed(wf), null);
  assert.equal(runSeed(wf, () => 0.5), randomSeed(() => 0.5));
  for (const r of [0, 0.25, 0.999999999]) {
    const seed = randomSeed(() => r);
    assert.ok(Number.isSafeInteger(seed) && seed >= 0 && seed <= SEED_MAX);
  }
});

test("randomSeed reaches the top of 53 bits and stays below 2^53", () => {
  assert.equal(randomSeed(() => 1 - 2 ** -53), SEED_MAX);
  assert.equal(randomSeed(() => 0), 0);
  assert.ok(randomSeed(() => 0.9999999, 10, 20) <= 20);
});

test("fixed keeps, increment adds one and wraps, randomize draws", () => {
  assert.equal(nextSeed(42, "fixed"), 42);
  assert.equal(nextSeed(42, "increment"), 43);
  assert.equal(nextSeed(SEED_MAX, "increment"), 0);
  assert.equal(nextSeed(10, "increment", { max: 10, min: 3 }), 3);
  const drawn = nextSeed(42, "randomize", { random: () => 0.123 });
  assert.ok(drawn !== 42 && drawn >= 0 && drawn <= SEED_MAX);
});

test("seed updates after a submit: only constant seeds under increment/randomize", () => {
  const wf = flow({ s1: sampler(42), s2: sampler(7), s3: sampler({ node: "x", output: "v" }), s4: sampler(1) });
  const controls = {
    s1: { seed: "increment" },
    s2: { seed: "randomize" },
    s3: { seed: "increment" },
    s4: { seed: "fixed" },
    gone: { seed: "increment" },
  };
  const updates = seedUpdates(wf, controls, { random: () => 0.5 });
  assert.deepEqual(
    updates.map((u) => [u.nodeId, u.input]),
    [
      ["s1", "seed"],
      ["s2", "seed"],
    ],
  );
  assert.equal(updates[0].value, 43);
  assert.ok(updates[1].value !== 7);
});

test("the node definition's max bounds the increment", () => {
  const wf = flow({ s: sampler(100) });
  const [u] = seedUpdates(wf, { s: { seed: "increment" } }, { limits: () => ({ min: 5, max: 100 }) });
  assert.equal(u.value, 5);
});
