// One seed story: the job's seed is the first constant `seed` input of the workflow (so the
// page has no second, hidden seed), and after each submit every seed input set to
// "increment" or "randomize" moves on so the next job differs (ComfyUI's "control after
// generate"). Pure functions (no React, no DOM) so node:test can check them.

export const SEED_MAX = 2 ** 53 - 1; // the largest whole number a JSON double keeps exactly

const isSeed = (value) => Number.isInteger(value) && value >= 0 && value <= SEED_MAX;

// A random whole number in [min, max], uniform over up to 53 bits (Math.random alone gives 52).
export function randomSeed(random = Math.random, min = 0, max = SEED_MAX) {
  const span = max - min + 1;
  const high = Math.floor(random() * 2 ** 21);
  const low = Math.floor(random() * 2 ** 32);
  return min + ((high * 2 ** 32 + low) % span);
}

// The value of the first constant input named "seed" (node order), or null.
export function firstConstantSeed(workflow) {
  for (const node of Object.values((workflow && workflow.nodes) || {})) {
    const value = node && node.inputs ? node.inputs.seed : undefined;
    if (isSeed(value)) return value;
  }
  return null;
}

// The seed a job runs with: the workflow's own seed, else a random one.
export function runSeed(workflow, random = Math.random) {
  const seed = firstConstantSeed(workflow);
  return seed === null ? randomSeed(random) : seed;
}

// The value after one run under `control` ("fixed" | "increment" | "randomize").
export function nextSeed(value, control, { min = 0, max = SEED_MAX, random = Math.random } = {}) {
  const low = Math.max(0, Math.ceil(min));
  const high = Math.min(SEED_MAX, Math.floor(max));
  if (control === "increment") return value + 1 > high || value + 1 < low ? low : value + 1;
  if (control === "randomize") return randomSeed(random, low, high);
  return value;
}

// The inputs to change after a submit: [{nodeId, input, value}] for every constant whole-number
// input whose control is "increment" or "randomize". `limits(nodeType, input)` may give
// {min, max} from the node definitions.
export function seedUpdates(workflow, controls, { random = Math.random, limits = () => ({}) } = {}) {
  const updates = [];
  for (const [nodeId, inputs] of Object.entries(controls || {})) {
    const node = workflow && workflow.nodes ? workflow.nodes[nodeId] : null;
    if (!node || !node.inputs) continue;
    for (const [input, control] of Object.entries(inputs || {})) {
      const value = node.inputs[input];
      if (!isSeed(value) || (control !== "increment" && control !== "randomize")) continue;
      const { min, max } = limits(node.type, input) || {};
      const bounds = { random };
      if (Number.isFinite(min)) bounds.min = min;
      if (Number.isFinite(max)) bounds.max = max;
      updates.push({ nodeId, input, value: nextSeed(value, control, bounds) });
    }
  }
  return updates;
}
