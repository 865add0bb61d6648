// The mask editor of a LoadImage node: its picture scaled to fit, a translucent pink mask
// painted over it with a round brush sized in image pixels. Save writes a new file in the
// input folder (the picture, transparent where painted; the server never overwrites) and
// points the node at it. Esc or Cancel closes without saving.
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from "react";
import { api, urls } from "../api.js";
import { useStudio } from "../store/index.js";
import { applyMask, defaultBrush, maskFileName, maskFromAlpha, maxBrush } from "./mask.js";
import { encodePng } from "./png.js";
import "../panels/panels.css";
import "./mask.css";

// The paint is only shown (its alpha is the mask): a strong pink that stands out on
// light and dark pictures alike.
const MASK_RGB = [255, 64, 160];
const MASK_PAINT = `rgb(${MASK_RGB.join(", ")})`;

function loadPicture(path) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const width = img.naturalWidth;
      const height = img.naturalHeight;
      const canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      const ctx = canvas.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(img, 0, 0);
      resolve({ width, height, rgba: ctx.getImageData(0, 0, width, height).data });
    };
    img.onerror = () => reject(new Error(`the picture ${path} cannot be loaded`));
    img.src = urls.input(path);
  });
}

function Editor({ tabId, nodeId }) {
  const close = useStudio((s) => s.closeMaskEditor);
  const [path] = useState(() => {
    const state = useStudio.getState();
    return state.getNodeInput ? state.getNodeInput(tabId, nodeId, "path") : null;
  });
  const [picture, setPicture] = useState(null);
  const [error, setError] = useState(path ? null : "Choose a picture on the Load Image node first.");
  const [brush, setBrush] = useState(8);
  const [erase, setErase] = useState(false);
  const [scale, setScale] = useState(1);
  const [saving, setSaving] = useState(false);
  const [cursor, setCursor] = useState(null); // {x, y} in display pixels, or null
  const rootRef = useRef(null);
  const stageRef = useRef(null);
  const pictureRef = useRef(null);
  const maskRef = useRef(null);
  const stroke = useRef(null); // last point of the stroke being painted

  useEffect(() => {
    rootRef.current && rootRef.current.focus();
    if (!path) return undefined;
    let live = true;
    loadPicture(path).then(
      (loaded) => {
        if (!live) return;
        setPicture(loaded);
        setBrush(defaultBrush(loaded.width, loaded.height));
      },
      (e) => live && setError(e.message),
    );
    return () => {
      live = false;
    };
  }, [path]);

  // Draw the picture and start the mask from its transparent area.
  useLayoutEffect(() => {
    if (!picture) return;
    const { width, height, rgba } = picture;
    pictureRef.current.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(rgba), width, height), 0, 0);
    const coverage = maskFromAlpha(rgba);
    const pixels = new Uint8ClampedArray(width * height * 4);
    for (let i = 0; i < coverage.length; i += 1) {
      pixels.set(MASK_RGB, i * 4);
      pixels[i * 4 + 3] = coverage[i];
    }
    maskRef.current.getContext("2d").putImageData(new ImageData(pixels, width, height), 0, 0);
  }, [picture]);

  // Fit the picture into the stage (small pictures are scaled up, pixel-sharp).
  useLayoutEffect(() => {
    if (!picture || !stageRef.current) return undefined;
    const fit = () => {
      const box = stageRef.current.getBoundingClientRect();
      setScale(Math.max(0.01, Math.min((box.width - 16) / picture.width, (box.height - 16) / picture.height)));
    };
    fit();
    const observer = new ResizeObserver(fit);
    observer.observe(stageRef.current);
    return () => observer.disconnect();
  }, [picture]);

  const toImage = (e) => {
    const rect = maskRef.current.getBoundingClientRect();
    return {
      x: ((e.clientX - rect.left) * picture.width) / rect.width,
      y: ((e.clientY - rect.top) * picture.height) / rect.height,
    };
  };

  const paint = (from, to) => {
    const ctx = maskRef.current.getContext("2d");
    ctx.save();
    ctx.globalCompositeOperation = erase ? "destination-out" : "source-over";
    ctx.fillStyle = MASK_PAINT;
    ctx.strokeStyle = MASK_PAINT;
    ctx.lineWidth = brush;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (from) {
      ctx.beginPath();
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    } else {
      ctx.beginPath();
      ctx.arc(to.x, to.y, brush / 2, 0, Math.PI * 2);
      ctx.fill();
    }
    ctx.restore();
  };

  const onPointerDown = (e) => {
    if (!picture || e.button !== 0) return;
    e.currentTarget.setPointerCapture(e.pointerId);
    const point = toImage(e);
    paint(null, point);
    stroke.current = point;
  };
  const onPointerMove = (e) => {
    const rect = maskRef.current.getBoundingClientRect();
    setCursor({ x: e.clientX - rect.left, y: e.clientY - rect.top });
    if (!stroke.current || !picture) return;
    const point = toImage(e);
    paint(stroke.current, point);
    stroke.current = point;
  };
  const onPointerUp = () => {
    stroke.current = null;
  };

  const clear = () => {
    if (!picture) return;
    maskRef.current.getContext("2d").clearRect(0, 0, picture.width, picture.height);
  };

  const save = useCallback(async () => {
    if (!picture || saving) return;
    const { toast, setNodeInput } = useStudio.getState();
    setSaving(true);
    try {
      const { width, height, rgba } = picture;
      const maskPixels = maskRef.current.getContext("2d").getImageData(0, 0, width, height).data;
      const coverage = new Uint8ClampedArray(width * height);
      for (let i = 0; i < coverage.length; i += 1) coverage[i] = maskPixels[i * 4 + 3];
      const bytes = await encodePng(width, height, applyMask(rgba, coverage));
      const answer = await api.uploadInput(maskFileName(path), new Blob([bytes], { type: "image/png" }));
      setNodeInput(tabId, nodeId, "path", answer.name);
      toast(`Saved the mask as ${answer.name}; the Load Image node now uses it.`, "ok");
      close();
    } catch (e) {
      toast(`Could not save the mask: ${e.message}`, "error");
      setSaving(false);
    }
  }, [picture, saving, path, tabId, nodeId, close]);

  const top = picture ? maxBrush(picture.width, picture.height) : 100;
  const onKeyDown = (e) => {
    e.stopPropagation(); // the canvas's shortcuts (Delete, Ctrl+Z...) stay out of the editor
    if (e.key === "Escape") {
      e.preventDefault();
      close();
    } else if (e.key === "[" || e.key === "]") {
      e.preventDefault();
      setBrush((b) => Math.min(top, Math.max(1, b + (e.key === "]" ? 1 : -1) * Math.max(1, Math.round(b / 8)))));
    } else if ((e.key === "e" || e.key === "x") && e.target.tagName !== "INPUT") {
      setErase((v) => !v);
    }
  };

  const display = picture ? { width: picture.width * scale, height: picture.height * scale } : null;
  return (
    <div className="modal-backdrop">
      <div
        className="dialog mask-editor"
        data-testid="mask-editor"
        role="dialog"
        aria-label="Mask editor"
        tabIndex={-1}
        ref={rootRef}
        onKeyDown={onKeyDown}
      >
        <div className="dialog-head">
          <h2>
            Edit mask <span className="mask-path">{path || ""}</span>
          </h2>
          <span className="mask-hint">paint the area to change · [ ] brush size · E erase</span>
        </div>
        <div className="mask-stage" ref={stageRef}>
          {error ? <p className="mask-error">{error}</p> : null}
          {!error && !picture ? <p className="mask-loading">Loading the picture…</p> : null}
          {picture ? (
            <div className="mask-layers" style={display}>
              <canvas ref={pictureRef} width={picture.width} height={picture.height} style={display} />
              <canvas
                ref={maskRef}
                className="mask-layer"
                data-testid="mask-canvas"
                width={picture.width}
                height={picture.height}
                style={display}
                onPointerDown={onPointerDown}
                onPointerMove={onPointerMove}
                onPointerUp={onPointerUp}
                onPointerCancel={onPointerUp}
                onPointerLeave={() => setCursor(null)}
              />
              {cursor ? (
                <div
                  className={`mask-cursor${erase ? " erase" : ""}`}
                  style={{
                    left: cursor.x,
                    top: cursor.y,
                    width: Math.max(4, brush * scale),
                    height: Math.max(4, brush * scale),
                  }}
                />
              ) : null}
            </div>
          ) : null}
        </div>
        <div className="dialog-foot mask-tools">
          <button
            type="button"
            data-testid="mask-erase"
            aria-pressed={erase}
            className={erase ? "active" : ""}
            title="Switch between painting and erasing (E)"
            onClick={() => setErase((v) => !v)}
          >
            {erase ? "Erasing" : "Painting"}
          </button>
          <label className="mask-brush">
            Brush
            <input
              type="range"
              min={1}
              max={top}
              step={1}
              value={brush}
              data-testid="mask-brush-size"
              aria-label="Brush size in image pixels"
              onChange={(e) => setBrush(Number(e.target.value))}
            />
            <span className="mask-brush-value">{brush} px</span>
          </label>
          <button type="button" onClick={clear} disabled={!picture}>
            Clear
          </button>
          <span className="spacer" />
          {picture ? (
            <span className="mask-size">
              {picture.width}×{picture.height}
            </span>
          ) : null}
          <button type="button" onClick={close}>
            Cancel
          </button>
          <button type="button" className="primary" data-testid="mask-save" disabled={!picture || saving} onClick={save}>
            {saving ? "Saving…" : "Save mask"}
          </button>
        </div>
      </div>
    </div>
  );
}

export default function MaskEditor() {
  const target = useStudio((s) => s.maskEditor);
  if (!target) return null;
  return <Editor key={`${target.tabId}/${target.nodeId}`} tabId={target.tabId} nodeId={target.nodeId} />;
}
