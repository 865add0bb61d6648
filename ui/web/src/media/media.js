// Which saved files the studio shows, and how: pictures (PNG, JPEG, animated WebP, GIF and APNG
// all play in an <img>) and videos (MP4, WebM need a <video>). Pure functions, so the page's
// module tests check them.

const PICTURE = /\.(png|jpe?g|webp|gif|bmp)$/i;
const VIDEO = /\.(mp4|webm)$/i;

// The path part of a file name or URL (no query, no fragment), decoded.
function pathOf(name) {
  const text = String(name || "").split(/[?#]/)[0];
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

// Whether a file name or URL is a video the page plays with <video>.
export const isVideo = (name) => VIDEO.test(pathOf(name));

// Whether a file name or URL is something the page shows: a picture or a video.
export const isMedia = (name) => PICTURE.test(pathOf(name)) || VIDEO.test(pathOf(name));
