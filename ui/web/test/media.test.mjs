// media/media.js and panels/entries.js: which saved files the page shows, and which play as video.
import { test } from "node:test";
import assert from "node:assert/strict";
import { isMedia, isVideo } from "../src/media/media.js";
import { entryFiles, entryImages } from "../src/panels/entries.js";

test("MP4 and WebM play as video; animated pictures stay pictures", () => {
  for (const name of ["video/svd_00001.mp4", "clip.WEBM", "/api/files/video/svd_00001.mp4", "/api/files/a%20b.mp4?n=3"]) {
    assert.equal(isVideo(name), true, name);
  }
  for (const name of ["frames_00001.webp", "frames_00001.gif", "frames_00001.png", "mp4.png", "", null]) {
    assert.equal(isVideo(name), false, String(name));
  }
});

test("pictures and videos are shown, other files are not", () => {
  assert.deepEqual(
    ["a.png", "b.webp", "c.gif", "d.mp4", "e.json", "f.safetensors", "g.JPG"].filter(isMedia),
    ["a.png", "b.webp", "c.gif", "d.mp4", "g.JPG"],
  );
});

test("a job's saved videos are among its pictures, in order, as file URLs", () => {
  const entry = { outputs: ["video/svd_00001.webp", "video/svd_00001.mp4", "notes.txt"] };
  assert.deepEqual(entryFiles(entry), ["video/svd_00001.webp", "video/svd_00001.mp4"]);
  assert.deepEqual(entryImages(entry), ["/api/files/video/svd_00001.webp", "/api/files/video/svd_00001.mp4"]);
});
