// The dataset routes (docs/api.md "Training datasets"): list them, add a picture with its
// caption. Answers and errors as api.js gives them (an ApiError with the server's words).
import { ApiError } from "../api.js";

const enc = encodeURIComponent;

async function call(method, path, init = {}) {
  let response;
  try {
    response = await fetch(path, { method, credentials: "same-origin", ...init });
  } catch {
    throw new ApiError(0, "the studio server cannot be reached: is it still running?", null);
  }
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("application/json") ? await response.json().catch(() => null) : null;
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || `${method} ${path} answered ${response.status}`, data);
  return data;
}

export const datasetsApi = {
  // -> [{name, pictures, captions}]
  list: async () => ((await call("GET", "/api/datasets")) || {}).datasets || [],
  // -> {dataset, name, caption}: the names the picture and its caption were saved under
  addPicture: (dataset, file, caption) => {
    const query = `name=${enc(file.name)}${caption ? `&caption=${enc(caption)}` : ""}`;
    return call("POST", `/api/datasets/${enc(dataset)}/files?${query}`, {
      body: file,
      headers: { "Content-Type": file.type || "application/octet-stream" },
    });
  },
};
