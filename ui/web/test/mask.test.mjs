// mask/mask.js and mask/png.js: the mask editor's arithmetic and its PNG encoder.
import { test } from "node:test";
import assert from "node:assert/strict";
import { inflateSync } from "node:zlib";
import { applyMask, defaultBrush, maskFileName, maskFromAlpha, maxBrush } from "../src/mask/mask.js";
import { crc32, encodePng } from "../src/mask/png.js";

test("the brush is sized to the picture: a twelfth of its shorter side, at least 1", () => {
  assert.equal(defaultBrush(32, 32), 3);
  assert.equal(defaultBrush(512, 768), 43);
  assert.equal(defaultBrush(8, 8), 1);
  assert.equal(maxBrush(32, 20), 16);
  assert.equal(maxBrush(1, 1), 2);
});

test("a picture that is already transparent starts painted there; saving keeps colours", () => {
  const rgba = new Uint8Array([10, 20, 30, 255, 40, 50, 60, 0, 70, 80, 90, 128]);
  const mask = maskFromAlpha(rgba);
  assert.deepEqual([...mask], [0, 255, 127]);
  const painted = Uint8ClampedArray.from([255, 255, 0]);
  assert.deepEqual([...applyMask(rgba, painted)], [10, 20, 30, 0, 40, 50, 60, 0, 70, 80, 90, 255]);
});

test("mask file names: stem-mask.png, without growing on a mask of a mask", () => {
  assert.equal(maskFileName("cat.jpg"), "cat-mask.png");
  assert.equal(maskFileName("photos/cat.png"), "cat-mask.png");
  assert.equal(maskFileName("cat-mask.png"), "cat-mask.png");
  assert.equal(maskFileName("cat-mask-2.png"), "cat-mask.png");
  assert.equal(maskFileName(""), "image-mask.png");
});

test("encodePng writes a valid RGBA PNG whose pixels read back exactly", async () => {
  const w = 3;
  const h = 2;
  const px = new Uint8Array(w * h * 4).map((_, i) => (i * 37) % 256);
  const png = await encodePng(w, h, px);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const view = new DataView(png.buffer, png.byteOffset);
  const chunks = {};
  for (let at = 8; at < png.length; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...png.subarray(at + 4, at + 8));
    const data = png.subarray(at + 8, at + 8 + length);
    assert.equal(view.getUint32(at + 8 + length), crc32(png.subarray(at + 4, at + 8 + length)), `${type} crc`);
    chunks[type] = data;
    at += 12 + length;
  }
  assert.deepEqual(Object.keys(chunks), ["IHDR", "IDAT", "IEND"]);
  const header = new DataView(chunks.IHDR.buffer, chunks.IHDR.byteOffset);
  assert.equal(header.getUint32(0), w);
  assert.equal(header.getUint32(4), h);
  assert.deepEqual([...chunks.IHDR.subarray(8)], [8, 6, 0, 0, 0]);
  const raw = inflateSync(chunks.IDAT);
  for (let y = 0; y < h; y += 1) {
    assert.equal(raw[y * (w * 4 + 1)], 0);
    assert.deepEqual([...raw.subarray(y * (w * 4 + 1) + 1, (y + 1) * (w * 4 + 1))], [...px.subarray(y * w * 4, (y + 1) * w * 4)]);
  }
});

test("crc32 matches the standard check value", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
});
