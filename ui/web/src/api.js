// The HTTP API (docs/api.md), one function per route. Every function returns parsed JSON
// or throws an ApiError whose message is the server's plain-words `error` (or a summary
// of the validation issues, kept on `.issues`).

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
    this.issues = body && Array.isArray(body.issues) ? body.issues : null;
  }
}

async function request(method, path, { json, body, headers } = {}) {
  const init = { method, credentials: "same-origin", headers: { ...(headers || {}) } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, "the studio server cannot be reached: is it still running?", null);
  }
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("application/json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    let message = (data && data.error) || `${method} ${path} answered ${response.status}`;
    if (data && Array.isArray(data.issues)) message = data.issues.map((i) => i.text || i.message).join("\n");
    throw new ApiError(response.status, message, data);
  }
  return data;
}

const enc = encodeURIComponent;
const encPath = (path) => path.split("/").map(enc).join("/");

export const api = {
  nodes: () => request("GET", "/api/nodes"),
  models: () => request("GET", "/api/models"),
  sockets: () => request("GET", "/api/sockets"),
  submit: (workflow, seed, extra = {}) =>
    request("POST", "/api/jobs", { json: { workflow, seed, source: "ui", ...extra } }),
  job: (id) => request("GET", `/api/jobs/${enc(id)}`),
  events: (id, after = 0, wait = 0) => request("GET", `/api/jobs/${enc(id)}/events?after=${after}&wait=${wait}`),
  cancel: (id) => request("POST", `/api/jobs/${enc(id)}/cancel`),
  queue: () => request("GET", "/api/queue"),
  history: (limit = 50, offset = 0) => request("GET", `/api/history?limit=${limit}&offset=${offset}`),
  validate: (workflow) => request("POST", "/api/validate", { json: { workflow } }),
  importFile: (name, bytes) =>
    request("POST", `/api/import?name=${enc(name)}`, {
      body: bytes,
      headers: { "Content-Type": "application/octet-stream" },
    }),
  inputs: () => request("GET", "/api/inputs"),
  uploadInput: (name, blob) =>
    request("POST", `/api/inputs?name=${enc(name)}`, {
      body: blob,
      headers: { "Content-Type": blob.type || "application/octet-stream" },
    }),
  library: () => request("GET", "/api/library"),
  libraryGet: (name) => request("GET", `/api/library/${enc(name)}`),
  librarySave: (name, workflow, overwrite = false) =>
    request("PUT", `/api/library/${enc(name)}`, { json: { workflow, overwrite } }),
  libraryRename: (name, to) => request("POST", `/api/library/${enc(name)}/rename`, { json: { to } }),
  libraryDelete: (name) => request("DELETE", `/api/library/${enc(name)}`),
  example: (name) => request("GET", `/api/examples/${enc(name)}`),
};

// URLs for <img src>.
export const urls = {
  file: (path) => `/api/files/${encPath(path)}`,
  input: (path) => `/api/inputs/${encPath(path)}`,
  preview: (jobId, nodeId, index = 0, bust = "") =>
    `/api/jobs/${enc(jobId)}/preview?node=${enc(nodeId)}&index=${index}${bust ? `&n=${enc(bust)}` : ""}`,
  jobPreview: (jobId) => `/api/jobs/${enc(jobId)}/preview`,
  stream: (jobId, after = 0) => `/api/jobs/${enc(jobId)}/stream?after=${after}`,
};
