// The mask editor's arithmetic, free of React and the DOM: brush size, where a picture
// already is transparent, the picture saved with the mask as transparency, its file name.
// LoadImage's mask output is 1 where the picture is transparent, so painting = alpha 0.

// Brush diameter in image pixels: a twelfth of the shorter side, at least 1.
export const defaultBrush = (width, height) => Math.max(1, Math.round(Math.min(width, height) / 12));

// The slider's top: half the longer side (at least 2, so a 1-pixel picture still has a range).
export const maxBrush = (width, height) => Math.max(2, Math.round(Math.max(width, height) / 2));

// Mask coverage (0 = not painted, 255 = painted) of a picture that is already transparent.
// rgba -> Uint8ClampedArray(width * height).
export function maskFromAlpha(rgba) {
  const mask = new Uint8ClampedArray(rgba.length / 4);
  for (let i = 0; i < mask.length; i += 1) mask[i] = 255 - rgba[i * 4 + 3];
  return mask;
}

// The picture to save: its colours, with alpha = 255 - coverage (painted -> transparent).
export function applyMask(rgba, mask) {
  const out = new Uint8Array(rgba.length);
  for (let i = 0; i < mask.length; i += 1) {
    out[i * 4] = rgba[i * 4];
    out[i * 4 + 1] = rgba[i * 4 + 1];
    out[i * 4 + 2] = rgba[i * 4 + 2];
    out[i * 4 + 3] = 255 - mask[i];
  }
  return out;
}

// "photos/cat.jpg" -> "cat-mask.png"; a mask of a mask does not grow the name
// ("cat-mask-2.png" -> "cat-mask.png"); the server numbers a taken name.
export function maskFileName(path) {
  const base = String(path || "image").replace(/^.*[\\/]/, "");
  const stem = base.replace(/\.[^.]+$/, "").replace(/-mask(?:[ _-]?\(?\d+\)?)?$/, "") || "image";
  return `${stem}-mask.png`;
}
