/*
 * The studio's node canvas: litegraph.js showing a workflow in the studio's own
 * format (docs/workflow-format.md), and the conversion both ways.
 *
 *   window.StudioCanvas.mount(element, props, trigger, watch)   used by ui/canvas.py
 *   window.StudioCanvas.formatWorkflow(workflow)                the editor's text
 *   window.studioCanvas                                          the page's canvas
 *       .loadText(text) / .loadWorkflow(obj) / .toWorkflow()
 *       .addNode(type, [x, y]) / .connect(fromId, output, toId, input)
 *       .setWidget(id, input, value) / .showIssues(list) / .showRun(log)
 *       .showStates({states: {id: state}}) / .runStates()      run state per node
 *       .updateDefs({node_defs, set_file}) / .widgetChoices(id, input)   refreshed lists
 *       .undo() / .redo()
 *
 * A .json or .png file dropped on the canvas goes to the page's "Open workflow"
 * upload (the server reads the workflow, and the run seed of a PNG).
 *
 * Node ids: each litegraph node keeps the workflow's id (a string) in
 * properties.id; new and pasted nodes get a fresh one ("image_invert_2").
 * Inputs that take both a constant and a link get a widget with a socket at
 * the left end of its row: a link dropped on the socket wins and greys the
 * widget out; removing the link brings the widget's value back. Widget values are
 * written for inputs the file gave or the user touched (all of them for new
 * nodes), so loading a file and saving it again changes nothing. Whatever the
 * canvas cannot show (unknown inputs, links it cannot draw, unknown node
 * types) is kept aside and written back unchanged, so validation still sees it.
 */
(function () {
  "use strict";

  const NOTE_TYPE = "annotation/Note";
  const FALLBACK_COLOR = "#9e9e9e";
  const ERROR_COLOR = "#ff4d4f";
  const ERROR_BG = "#4a2323";
  const RUN_COLORS = { running: "#52c41a", done: "#3a7d2c", cached: "#1677ff", failed: ERROR_COLOR };
  const RUN_LABELS = { running: "running…", done: "done", cached: "cached", failed: "failed" };
  const MAX_UNDO = 100;
  const POLL_MS = 300;
  const FOCUS_REFRESH_MS = 2000;
  // the file input of the page's "Open workflow" button (Gradio puts it just before the button)
  const OPEN_INPUT = "input[type=file]:has(+ #studio-open), #studio-open input[type=file]";

  // --- pure helpers ------------------------------------------------------------------

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function isLink(value) {
    return isObject(value) && typeof value.node === "string" && typeof value.output === "string";
  }

  function isPoint(value) {
    return Array.isArray(value) && value.length === 2 && value.every((v) => typeof v === "number" && isFinite(v));
  }

  function roundPoint(point) {
    return [Math.round(point[0]), Math.round(point[1])];
  }

  /** The litegraph type key of a node description: "category/Type" (the palette's menus). */
  function litegraphKey(def) {
    return (def.category ? def.category + "/" : "") + def.type;
  }

  /** "ImageInvert" -> "image_invert": the stem of fresh node ids. */
  function idStem(type) {
    const stem = String(type)
      .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
      .replace(/[^A-Za-z0-9_]+/g, "_")
      .toLowerCase()
      .replace(/^_+|_+$/g, "");
    return stem || "node";
  }

  function decimals(step) {
    if (!(step > 0) || step >= 1) return 0;
    return Math.min(6, Math.ceil(-Math.log10(step) - 1e-9));
  }

  function typeDefault(spec) {
    if (Array.isArray(spec.choices)) return spec.choices.length ? spec.choices[0] : "";
    if (spec.type === "INT" || spec.type === "FLOAT") return spec.min != null && spec.min > 0 ? spec.min : 0;
    if (spec.type === "BOOLEAN") return false;
    return "";
  }

  function initialValue(spec) {
    return "default" in spec && spec.default !== null ? spec.default : typeDefault(spec);
  }

  /** A widget's value made acceptable for its input: whole numbers for INT, inside min/max. */
  function normalize(spec, value) {
    if (spec.type === "INT" || spec.type === "FLOAT") {
      let number = Number(value);
      if (!isFinite(number)) number = initialValue(spec);
      if (spec.type === "INT") number = Math.round(number);
      if (spec.min != null && number < spec.min) number = spec.min;
      if (spec.max != null && number > spec.max) number = spec.max;
      return number;
    }
    if (spec.type === "BOOLEAN") return Boolean(value);
    return value == null ? "" : String(value);
  }

  /** Whether a constant from a file can sit in the widget made for ``spec``. */
  function fitsWidget(spec, value) {
    if (spec.type === "INT" || spec.type === "FLOAT") return typeof value === "number";
    if (spec.type === "BOOLEAN") return typeof value === "boolean";
    return typeof value === "string";
  }

  /** JSON on one line, spaced like the example files: {"a": 1, "b": [1, 2]}. */
  function compact(value) {
    if (Array.isArray(value)) return "[" + value.map(compact).join(", ") + "]";
    if (isObject(value)) {
      const keys = Object.keys(value).filter((key) => value[key] !== undefined);
      return "{" + keys.map((key) => JSON.stringify(key) + ": " + compact(value[key])).join(", ") + "}";
    }
    const text = JSON.stringify(value);
    return text === undefined ? "null" : text;
  }

  /** The editor's text of a workflow: one line per node, group and note. */
  function formatWorkflow(wf) {
    const lines = ["{"];
    const keys = Object.keys(wf);
    keys.forEach((key, k) => {
      const comma = k < keys.length - 1 ? "," : "";
      const value = wf[key];
      if (key === "nodes" && isObject(value)) {
        const ids = Object.keys(value);
        if (!ids.length) {
          lines.push(`  "nodes": {}${comma}`);
          return;
        }
        lines.push('  "nodes": {');
        ids.forEach((id, i) => {
          const sep = i < ids.length - 1 ? "," : "";
          lines.push(`    ${JSON.stringify(id)}: ${compact(value[id])}${sep}`);
        });
        lines.push(`  }${comma}`);
      } else if ((key === "groups" || key === "notes") && Array.isArray(value) && value.length) {
        lines.push(`  ${JSON.stringify(key)}: [`);
        value.forEach((item, i) => lines.push(`    ${compact(item)}${i < value.length - 1 ? "," : ""}`));
        lines.push(`  ]${comma}`);
      } else {
        lines.push(`  ${JSON.stringify(key)}: ${compact(value)}${comma}`);
      }
    });
    lines.push("}");
    return lines.join("\n");
  }

  /** The workflow without the canvas's view: what counts as a change of the graph. */
  function graphKey(wf) {
    const copy = Object.assign({}, wf);
    if (isObject(copy.metadata)) {
      copy.metadata = Object.assign({}, copy.metadata);
      delete copy.metadata.canvas;
    }
    return JSON.stringify(copy);
  }

  /** Columns by depth for nodes without a position (links decide the depth). */
  function autoLayout(nodes) {
    const depth = {};
    const visiting = {};
    function depthOf(id) {
      if (depth[id] !== undefined) return depth[id];
      if (visiting[id]) return 0;
      visiting[id] = true;
      let d = 0;
      const entry = nodes[id];
      const inputs = isObject(entry) && isObject(entry.inputs) ? entry.inputs : {};
      for (const value of Object.values(inputs)) {
        if (isLink(value) && value.node in nodes) d = Math.max(d, depthOf(value.node) + 1);
      }
      depth[id] = d;
      return d;
    }
    const rows = {};
    const placed = {};
    for (const id of Object.keys(nodes)) {
      const d = depthOf(id);
      rows[d] = (rows[d] || 0) + 1;
      placed[id] = [40 + d * 300, 60 + (rows[d] - 1) * 200];
    }
    return placed;
  }

  // --- node classes -------------------------------------------------------------------

  function slotOptions(type, colors, spec) {
    const color = colors[type] || FALLBACK_COLOR;
    const options = { color_on: color, color_off: color };
    if (spec && spec.optional) options.label = spec.name + " (optional)";
    return options;
  }

  function addWidgetFor(node, spec) {
    let widget = null;
    const callback = function (value) {
      const normal = normalize(spec, value);
      if (widget && widget.value !== normal) widget.value = normal;
      node._studio.explicit.add(spec.name);
      delete node._studio.extras[spec.name];
      if (node.graph && node.graph._studioTouched) node.graph._studioTouched();
    };
    const initial = initialValue(spec);
    if (Array.isArray(spec.choices)) {
      widget = node.addWidget("combo", spec.name, initial, callback, { values: spec.choices.slice() });
    } else if (spec.type === "INT" || spec.type === "FLOAT") {
      const isInt = spec.type === "INT";
      const step = spec.step || (isInt ? 1 : 0.01);
      const options = { step: step * 10, precision: isInt ? 0 : Math.max(decimals(step), 2) };
      if (spec.min != null) options.min = spec.min;
      if (spec.max != null) options.max = spec.max;
      widget = node.addWidget("number", spec.name, initial, callback, options);
    } else if (spec.type === "BOOLEAN") {
      widget = node.addWidget("toggle", spec.name, Boolean(initial), callback, { on: "true", off: "false" });
    } else {
      widget = node.addWidget("text", spec.name, String(initial), callback, { multiline: Boolean(spec.multiline) });
    }
    widget.studioSpec = spec;
    return widget;
  }

  /** Grey out the widget of an input whose socket has a link (the link is used). */
  function updateWidgetStates(node) {
    if (!node.widgets) return;
    for (const widget of node.widgets) {
      const slot = node.inputs ? node.inputs.find((s) => s.name === widget.name) : null;
      widget.disabled = Boolean(slot && slot.link != null);
    }
  }

  function wrapText(ctx, text, width) {
    const words = String(text).split(/\s+/);
    const lines = [];
    let line = "";
    for (const word of words) {
      const next = line ? line + " " + word : word;
      if (line && ctx.measureText(next).width > width) {
        lines.push(line);
        line = word;
      } else {
        line = next;
      }
    }
    if (line) lines.push(line);
    return lines;
  }

  /** Red frame and messages for nodes with issues; a coloured frame for the run's state. */
  function drawStudioState(ctx) {
    const st = this._studio;
    if (!st) return;
    const titleHeight = LiteGraph.NODE_TITLE_HEIGHT;
    const width = this.flags && this.flags.collapsed ? this._collapsed_width || titleHeight : this.size[0];
    const height = this.flags && this.flags.collapsed ? 0 : this.size[1];
    const frame = st.issues.length ? ERROR_COLOR : RUN_COLORS[st.runState];
    if (frame) {
      ctx.save();
      ctx.strokeStyle = frame;
      ctx.lineWidth = st.runState === "running" || st.runState === "failed" || st.issues.length ? 4 : 2;
      if (st.runState === "running") {
        ctx.shadowColor = frame;
        ctx.shadowBlur = 16;
      }
      ctx.strokeRect(-4, -titleHeight - 4, width + 8, height + titleHeight + 8);
      ctx.restore();
    }
    if (st.runState) {
      // a badge at the right end of the title: running / done / cached / failed
      const label = RUN_LABELS[st.runState] || st.runState;
      ctx.save();
      ctx.font = "bold 11px sans-serif";
      const textWidth = ctx.measureText(label).width;
      const badgeWidth = textWidth + 12;
      const x = width - badgeWidth - 6;
      const y = -titleHeight + 5;
      ctx.fillStyle = RUN_COLORS[st.runState] || FALLBACK_COLOR;
      ctx.beginPath();
      if (ctx.roundRect) ctx.roundRect(x, y, badgeWidth, titleHeight - 10, 6);
      else ctx.rect(x, y, badgeWidth, titleHeight - 10);
      ctx.fill();
      ctx.fillStyle = "#ffffff";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(label, x + badgeWidth / 2, y + (titleHeight - 10) / 2 + 0.5);
      ctx.restore();
    }
    if (st.issues.length) {
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.fillStyle = "#ff7875";
      let y = height + 18;
      for (const message of st.issues.slice(0, 4)) {
        for (const line of wrapText(ctx, "⚠ " + message, Math.max(width, 220)).slice(0, 3)) {
          ctx.fillText(line, 0, y);
          y += 15;
        }
      }
      ctx.restore();
    }
  }

  function studioState() {
    return { explicit: new Set(), extras: {}, issues: [], runState: null, keepSize: false };
  }

  function makeNodeClass(def, colors) {
    function StudioNode() {
      this.serialize_widgets = true;
      this.properties = { id: "" };
      this._studio = studioState();
      this._studio.def = def;
      // sockets of link-only inputs and outputs first, in rows; then the widgets.
      // An input taking both gets a socket at the left end of its widget's row.
      const linkOnly = def.inputs.filter((spec) => spec.accepts === "link");
      for (const spec of linkOnly) this.addInput(spec.name, spec.type, slotOptions(spec.type, colors, spec));
      for (const output of def.outputs) this.addOutput(output.name, output.type, slotOptions(output.type, colors));
      const rows = Math.max(linkOnly.length, def.outputs.length);
      this.widgets_start_y = rows * LiteGraph.NODE_SLOT_HEIGHT + 6;
      def.inputs.forEach((spec) => {
        if (spec.accepts === "link") return;
        const widget = addWidgetFor(this, spec);
        if (spec.accepts !== "both") return;
        const row = this.widgets.indexOf(widget);
        const options = slotOptions(spec.type, colors, spec);
        options.label = "";
        options.pos = [6, this.widgets_start_y + row * (LiteGraph.NODE_WIDGET_HEIGHT + 4) + LiteGraph.NODE_WIDGET_HEIGHT / 2];
        this.addInput(spec.name, spec.type, options);
      });
      this.size = this.computeSize();
      this.size[0] = Math.max(this.size[0], 200);
    }
    StudioNode.title = def.type;
    StudioNode.desc = def.description;
    StudioNode.prototype.onDrawForeground = drawStudioState;
    StudioNode.prototype.onConnectionsChange = function () {
      updateWidgetStates(this);
    };
    return StudioNode;
  }

  /** A note's text, drawn wrapped over the whole node; a click opens an editing box. */
  function noteWidget(node) {
    return {
      type: "studio_note",
      name: "text",
      value: "",
      options: {},
      draw(ctx, owner, width, y) {
        ctx.save();
        ctx.font = "13px sans-serif";
        ctx.fillStyle = this.value ? "#ecebd0" : "#9d9b7a";
        const lines = wrapText(ctx, this.value || "(click to write a note)", width - 20);
        const room = Math.max(1, Math.floor((owner.size[1] - y - 4) / 16));
        lines.slice(0, room).forEach((line, i) => ctx.fillText(line, 10, y + 14 + i * 16));
        ctx.restore();
      },
      mouse(event) {
        if (event.type !== LiteGraph.pointerevents_method + "down") return false;
        const widget = this;
        LGraphCanvas.active_canvas.prompt(
          "Note",
          widget.value,
          (value) => {
            widget.value = String(value);
            node._studio.explicit.add("text");
            if (node.graph && node.graph._studioTouched) node.graph._studioTouched();
          },
          event,
          true,
        );
        return true;
      },
      computeSize(width) {
        return [width, 40];
      },
    };
  }

  function NoteNode() {
    this.serialize_widgets = true;
    this.properties = { id: "" };
    this._studio = studioState();
    this.addCustomWidget(noteWidget(this));
    this.size = [280, 80];
    this.color = "#5b5b2e";
    this.bgcolor = "#3f3f28";
  }
  NoteNode.title = "Note";
  NoteNode.desc = "Free text on the canvas (saved in the file's notes).";

  /** A node of a type this studio does not have: drawn, kept, never offered in the palette. */
  function makeUnknownNode(type) {
    const node = new LGraphNode(`${type} (unknown type)`);
    node.properties = { id: "" };
    node._studio = studioState();
    node.size = [240, 40];
    node.color = "#6b2b2b";
    node.bgcolor = "#3a2222";
    node.onDrawForeground = drawStudioState;
    return node;
  }

  function registerTypes(defs, colors) {
    for (const def of defs) LiteGraph.registerNodeType(litegraphKey(def), makeNodeClass(def, colors));
    LiteGraph.registerNodeType(NOTE_TYPE, NoteNode);
    for (const [type, color] of Object.entries(colors)) LGraphCanvas.link_type_colors[type] = color;
  }

  // --- the canvas ---------------------------------------------------------------------

  class StudioCanvas {
    constructor(host, defs, colors) {
      this.defs = {};
      for (const def of defs) this.defs[def.type] = def;
      this.colors = colors;
      registerTypes(defs, colors);
      LiteGraph.release_link_on_empty_shows_menu = true;
      LiteGraph.search_hide_on_mouse_leave = false;
      this.onChange = () => {};
      this.metadata = {};
      this.loading = false;
      this.blocked = false;
      this.lastText = null;
      this.lastKey = null;
      this.lastState = null;
      this.undoStack = [];
      this.redoStack = [];
      this.pointerDown = false;

      this.host = host;
      host.classList.add("studio-canvas-host");
      this.canvasEl = document.createElement("canvas");
      this.canvasEl.className = "studio-canvas";
      host.appendChild(this.canvasEl);
      this.overlay = document.createElement("div");
      this.overlay.className = "studio-canvas-overlay";
      this.overlay.hidden = true;
      host.appendChild(this.overlay);
      const help = document.createElement("div");
      help.className = "studio-canvas-help";
      help.textContent =
        "Double-click: add a node · right-click: menu, groups · drag: move/pan · wheel: zoom · " +
        "Ctrl+C/V copy/paste · Del delete · Ctrl+Z/Y undo/redo";
      host.appendChild(help);

      this.graph = new LGraph();
      this.graph._studioTouched = () => setTimeout(() => this.checkChanged(), 0);
      this.graph.onNodeAdded = (node) => this.nodeAdded(node);
      this.lgcanvas = new LGraphCanvas(this.canvasEl, this.graph);
      for (const [type, color] of Object.entries(colors)) {
        this.lgcanvas.default_connection_color_byType[type] = color;
        this.lgcanvas.default_connection_color_byTypeOff[type] = color;
      }
      this.lgcanvas.allow_searchbox = true;
      this.lgcanvas.render_canvas_border = false;
      this.lgcanvas.show_info = false;

      this.canvasEl.addEventListener("pointerdown", () => {
        this.pointerDown = true;
        this.canvasEl.focus();
      });
      document.addEventListener("pointerup", () => {
        if (!this.pointerDown) return;
        this.pointerDown = false;
        setTimeout(() => this.checkChanged(), 0);
      });
      document.addEventListener(
        "pointermove",
        () => {
          const node = this.lgcanvas.resizing_node;
          if (node && node._studio) node._studio.keepSize = true;
        },
        true,
      );
      this.canvasEl.addEventListener(
        "keydown",
        (event) => {
          if (!(event.ctrlKey || event.metaKey)) return;
          const key = event.key.toLowerCase();
          if (key === "z" && !event.shiftKey) this.undo();
          else if (key === "y" || (key === "z" && event.shiftKey)) this.redo();
          else return;
          event.preventDefault();
          event.stopImmediatePropagation();
        },
        true,
      );
      this.canvasEl.addEventListener("keyup", () => setTimeout(() => this.checkChanged(), 0));
      // a workflow .json or a .png the studio made, dropped on the canvas, opens like "Open workflow"
      host.addEventListener(
        "dragover",
        (event) => {
          if (event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files")) {
            event.preventDefault();
            event.stopPropagation();
          }
        },
        true,
      );
      host.addEventListener("drop", (event) => this.dropped(event), true);
      new ResizeObserver(() => this.resize()).observe(host);
      this.resize();
      this.timer = setInterval(() => this.checkChanged(), POLL_MS);
    }

    /** A file dropped on the canvas: hand it to the page's "Open workflow" upload. */
    dropped(event) {
      const files = event.dataTransfer ? Array.from(event.dataTransfer.files || []) : [];
      const file = files.find((f) => /\.(png|json)$/i.test(f.name));
      if (!files.length) return;
      event.preventDefault();
      event.stopPropagation();
      if (!file) {
        this.flash("Drop a workflow .json or a .png the studio saved to open its workflow.");
        return;
      }
      const input = document.querySelector(OPEN_INPUT);
      if (!input) return;
      const transfer = new DataTransfer();
      transfer.items.add(file);
      input.files = transfer.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    }

    flash(message) {
      if (this.blocked) return;
      this.overlay.textContent = message;
      this.overlay.hidden = false;
      setTimeout(() => {
        if (!this.blocked) this.overlay.hidden = true;
      }, 4000);
    }

    resize() {
      const width = Math.max(100, Math.floor(this.host.clientWidth));
      const height = Math.max(100, Math.floor(this.host.clientHeight));
      if (this.canvasEl.width !== width || this.canvasEl.height !== height) this.lgcanvas.resize(width, height);
      this.lgcanvas.setDirty(true, true);
    }

    // -- ids ---------------------------------------------------------------------------

    nodes() {
      return this.graph._nodes.slice().sort((a, b) => a.id - b.id);
    }

    nodeById(id) {
      return this.graph._nodes.find((node) => node.properties && node.properties.id === id) || null;
    }

    freshId(node) {
      const st = node._studio || {};
      const type = st.def ? st.def.type : node.type === NOTE_TYPE ? "note" : "node";
      const stem = idStem(type);
      const taken = new Set(this.graph._nodes.filter((n) => n !== node).map((n) => n.properties && n.properties.id));
      if (!taken.has(stem)) return stem;
      for (let i = 2; ; i++) if (!taken.has(`${stem}_${i}`)) return `${stem}_${i}`;
    }

    nodeAdded(node) {
      if (!node._studio) node._studio = studioState();
      if (!node.properties) node.properties = {};
      const id = node.properties.id;
      const clash = this.graph._nodes.some((other) => other !== node && other.properties && other.properties.id === id);
      if (typeof id !== "string" || !id || clash) node.properties.id = this.freshId(node);
      if (!this.loading) {
        // made on the canvas (palette, paste, clone): every widget value is written
        for (const widget of node.widgets || []) node._studio.explicit.add(widget.name);
        if (node._studio.def && node.properties.version == null) node.properties.version = node._studio.def.version;
        setTimeout(() => updateWidgetStates(node), 0);
      }
    }

    // -- our format -> litegraph -------------------------------------------------------

    /** Show the editor's text; returns false (and keeps the last graph) when it cannot. */
    loadText(text, options = {}) {
      // the editor strips whitespace around the text: the same text is our own echo
      if (!options.force && this.lastText !== null && String(text).trim() === this.lastText.trim()) return true;
      let wf;
      try {
        wf = JSON.parse(text);
      } catch (error) {
        this.block("The JSON in the editor has an error; the canvas shows the last graph it could read.");
        return false;
      }
      if (!isObject(wf) || wf.version !== 1 || !isObject(wf.nodes)) {
        this.block("The canvas shows version 1 workflow files; press Validate to see what is wrong.");
        return false;
      }
      const before = this.lastState;
      this.lastText = text;
      this.loadWorkflow(wf, options);
      const state = this.toWorkflow();
      const key = graphKey(state);
      if (before !== null && key !== this.lastKey && !options.fromUndo) {
        this.undoStack.push(before);
        if (this.undoStack.length > MAX_UNDO) this.undoStack.shift();
        this.redoStack = [];
      }
      this.lastKey = key;
      this.lastState = formatWorkflow(state);
      return true;
    }

    block(message) {
      this.blocked = true;
      this.overlay.textContent = message;
      this.overlay.hidden = false;
    }

    unblock() {
      this.blocked = false;
      this.overlay.hidden = true;
    }

    loadWorkflow(wf, options = {}) {
      this.unblock();
      const nodes = isObject(wf.nodes) ? wf.nodes : {};
      const sameIds =
        this.graph._nodes.length > 0 &&
        JSON.stringify(this.nodes().map((n) => n.properties.id).sort()) === JSON.stringify(Object.keys(nodes).sort());
      this.loading = true;
      try {
        this.graph.clear();
        this.lgcanvas.selected_nodes = {};
        const placed = autoLayout(nodes);
        const made = {};
        for (const [id, entry] of Object.entries(nodes)) made[id] = this.makeNode(id, entry, placed[id]);
        for (const [id, entry] of Object.entries(nodes)) {
          const inputs = isObject(entry) && isObject(entry.inputs) ? entry.inputs : {};
          for (const [name, value] of Object.entries(inputs)) {
            if (!isLink(value)) continue;
            if (!this.linkUp(made[value.node], value.output, made[id], name)) made[id]._studio.extras[name] = value;
          }
        }
        for (const node of this.graph._nodes) updateWidgetStates(node);
        for (const group of Array.isArray(wf.groups) ? wf.groups : []) this.makeGroup(group);
        const notes = Array.isArray(wf.notes) ? wf.notes : [];
        notes.forEach((note, i) => this.makeNote(note, i));
        this.metadata = isObject(wf.metadata) ? Object.assign({}, wf.metadata) : {};
        const view = this.metadata.canvas;
        delete this.metadata.canvas;
        if (options.keepView || (sameIds && !options.resetView)) {
          // keep the user's view while the same graph is edited in the editor
        } else if (isObject(view) && isPoint(view.offset) && typeof view.scale === "number" && view.scale > 0) {
          this.lgcanvas.ds.offset = [view.offset[0], view.offset[1]];
          this.lgcanvas.ds.scale = view.scale;
        } else {
          this.fitView();
        }
      } finally {
        this.loading = false;
      }
      this.lgcanvas.setDirty(true, true);
    }

    makeNode(id, entry, fallbackPosition) {
      const def = isObject(entry) && typeof entry.type === "string" ? this.defs[entry.type] : undefined;
      const node = def ? LiteGraph.createNode(litegraphKey(def)) : makeUnknownNode(isObject(entry) ? entry.type : "?");
      node.properties.id = id;
      const st = node._studio;
      st.baseColor = node.color;
      if (!isObject(entry)) {
        st.raw = entry;
        node.title = "not a node";
      } else {
        if (!def) st.unknownType = entry.type;
        if (entry.version !== undefined) node.properties.version = entry.version;
        if (typeof entry.title === "string") {
          node.title = entry.title;
          st.title = entry.title;
        }
        if (typeof entry.color === "string") {
          node.color = entry.color;
          st.colorGiven = true;
        }
        st.extraKeys = {};
        for (const [key, value] of Object.entries(entry)) {
          const shown =
            ["type", "version", "inputs"].includes(key) ||
            ((key === "title" || key === "color") && typeof value === "string") ||
            ((key === "position" || key === "size") && isPoint(value));
          if (!shown) st.extraKeys[key] = value;
        }
        if (entry.inputs !== undefined && !isObject(entry.inputs)) st.badInputs = entry.inputs;
        const inputs = isObject(entry.inputs) ? entry.inputs : {};
        for (const [name, value] of Object.entries(inputs)) {
          if (isLink(value)) continue;
          const widget = (node.widgets || []).find((w) => w.name === name && w.studioSpec);
          if (widget && value !== null && fitsWidget(widget.studioSpec, value)) {
            widget.value = value;
            st.explicit.add(name);
          } else {
            st.extras[name] = value;
          }
        }
      }
      const position = isObject(entry) && isPoint(entry.position) ? entry.position : fallbackPosition;
      node.pos = [position[0], position[1]];
      if (isObject(entry) && isPoint(entry.size)) {
        node.size = [entry.size[0], entry.size[1]];
        st.keepSize = true;
      }
      this.graph.add(node);
      return node;
    }

    linkUp(origin, outputName, target, inputName) {
      if (!origin || !target || !origin.outputs || !target.inputs) return false;
      const out = origin.findOutputSlot(outputName);
      const slot = target.findInputSlot(inputName);
      if (out < 0 || slot < 0) return false;
      if (!LiteGraph.isValidConnection(origin.outputs[out].type, target.inputs[slot].type)) return false;
      return Boolean(origin.connect(out, target, slot));
    }

    makeGroup(source) {
      if (!isObject(source) || !Array.isArray(source.bounds) || source.bounds.length !== 4) {
        this.extraGroups = (this.extraGroups || []).concat([source]);
        return;
      }
      const group = new LGraphGroup();
      const defaultColor = group.color;
      group.configure({
        title: typeof source.title === "string" ? source.title : "Group",
        bounding: source.bounds,
        color: typeof source.color === "string" ? source.color : defaultColor,
        font_size: 24,
      });
      group._studioColor = typeof source.color === "string";
      group._studioDefaultColor = defaultColor;
      this.graph.add(group);
    }

    makeNote(source, index) {
      const node = LiteGraph.createNode(NOTE_TYPE);
      const st = node._studio;
      if (!isObject(source)) {
        st.raw = source;
      } else {
        node.widgets[0].value = typeof source.text === "string" ? source.text : "";
        st.extraKeys = {};
        for (const [key, value] of Object.entries(source)) {
          const shown =
            (key === "text" && typeof value === "string") || ((key === "position" || key === "size") && isPoint(value));
          if (!shown) st.extraKeys[key] = value;
        }
        if (isPoint(source.size)) {
          node.size = [source.size[0], source.size[1]];
          st.keepSize = true;
        }
      }
      const position = isObject(source) && isPoint(source.position) ? source.position : [40, 60 + index * 120];
      node.pos = [position[0], position[1]];
      st.notePosition = isObject(source) && isPoint(source.position);
      this.graph.add(node);
    }

    fitView() {
      const nodes = this.graph._nodes;
      const ds = this.lgcanvas.ds;
      if (!nodes.length) {
        ds.offset = [0, 0];
        ds.scale = 1;
        return;
      }
      const titleHeight = LiteGraph.NODE_TITLE_HEIGHT;
      let minX = Infinity;
      let minY = Infinity;
      let maxX = -Infinity;
      let maxY = -Infinity;
      for (const node of nodes) {
        minX = Math.min(minX, node.pos[0]);
        minY = Math.min(minY, node.pos[1] - titleHeight);
        maxX = Math.max(maxX, node.pos[0] + node.size[0]);
        maxY = Math.max(maxY, node.pos[1] + node.size[1]);
      }
      for (const group of this.graph._groups) {
        const b = group._bounding;
        minX = Math.min(minX, b[0]);
        minY = Math.min(minY, b[1]);
        maxX = Math.max(maxX, b[0] + b[2]);
        maxY = Math.max(maxY, b[1] + b[3]);
      }
      const margin = 40;
      const width = this.canvasEl.width || 800;
      const height = this.canvasEl.height || 500;
      // litegraph hides all text below a scale of 0.6: stay readable, show the start of wide graphs
      const fit = Math.min((width - 2 * margin) / (maxX - minX), (height - 2 * margin) / (maxY - minY));
      const scale = Math.max(0.6, Math.min(1, fit));
      const spareX = width / scale - (maxX - minX);
      const spareY = height / scale - (maxY - minY);
      ds.scale = scale;
      ds.offset = [
        spareX > 0 ? spareX / 2 - minX : margin / scale - minX,
        spareY > 0 ? spareY / 2 - minY : margin / scale - minY,
      ];
    }

    // -- litegraph -> our format -------------------------------------------------------

    toWorkflow() {
      const wf = { version: 1, nodes: {} };
      const notes = [];
      // ids may be edited in litegraph's properties panel: keep them non-empty and unique
      const seen = new Set();
      for (const node of this.nodes()) {
        const id = node.properties.id;
        if (typeof id !== "string" || !id || seen.has(id)) node.properties.id = this.freshId(node);
        seen.add(node.properties.id);
      }
      for (const node of this.nodes()) {
        if (node.type === NOTE_TYPE) notes.push(this.noteEntry(node));
        else wf.nodes[node.properties.id] = this.nodeEntry(node);
      }
      const groups = this.graph._groups.map((group) => {
        const b = group._bounding;
        const out = { title: group.title, bounds: [b[0], b[1], b[2], b[3]].map(Math.round) };
        if (group._studioColor || (group.color && group.color !== (group._studioDefaultColor || LGraphCanvas.node_colors.pale_blue.groupcolor))) {
          out.color = group.color;
        }
        return out;
      });
      const allGroups = groups.concat(this.extraGroups || []);
      if (allGroups.length) wf.groups = allGroups;
      if (notes.length) wf.notes = notes;
      const ds = this.lgcanvas.ds;
      const round = (v) => Math.round(v * 100) / 100;
      wf.metadata = Object.assign({}, this.metadata, {
        canvas: { offset: [round(ds.offset[0]), round(ds.offset[1])], scale: round(ds.scale) },
      });
      return wf;
    }

    nodeEntry(node) {
      const st = node._studio;
      if ("raw" in st) return st.raw;
      const def = st.def;
      const entry = { type: def ? def.type : st.unknownType };
      if (node.properties.version !== undefined) entry.version = node.properties.version;
      const inputs = {};
      for (const spec of def ? def.inputs : []) {
        const slot = node.inputs ? node.inputs.find((s) => s.name === spec.name) : null;
        const link = slot && slot.link != null ? this.graph.links[slot.link] : null;
        if (link) {
          const origin = this.graph.getNodeById(link.origin_id);
          if (origin && origin.outputs && origin.outputs[link.origin_slot]) {
            inputs[spec.name] = { node: origin.properties.id, output: origin.outputs[link.origin_slot].name };
            continue;
          }
        }
        const widget = (node.widgets || []).find((w) => w.name === spec.name);
        if (widget && st.explicit.has(spec.name)) inputs[spec.name] = widget.value;
        else if (spec.name in st.extras) inputs[spec.name] = st.extras[spec.name];
      }
      for (const [name, value] of Object.entries(st.extras)) if (!(name in inputs)) inputs[name] = value;
      if ("badInputs" in st) entry.inputs = st.badInputs;
      else if (Object.keys(inputs).length) entry.inputs = inputs;
      const defaultTitle = def ? def.type : `${st.unknownType} (unknown type)`;
      if (node.title !== defaultTitle || st.title === node.title) entry.title = node.title;
      entry.position = roundPoint(node.pos);
      if (st.keepSize) entry.size = roundPoint(node.size);
      if (node.color && (node.color !== st.baseColor || st.colorGiven)) entry.color = node.color;
      return Object.assign(entry, st.extraKeys || {});
    }

    noteEntry(node) {
      const st = node._studio;
      if ("raw" in st) return st.raw;
      const note = { text: node.widgets[0].value, position: roundPoint(node.pos) };
      if (st.keepSize) note.size = roundPoint(node.size);
      return Object.assign(note, st.extraKeys || {});
    }

    // -- changes, undo -----------------------------------------------------------------

    /** Push the graph to the editor when it changed (not while a drag goes on). */
    checkChanged() {
      if (this.loading || this.blocked || this.pointerDown) return;
      const wf = this.toWorkflow();
      const key = graphKey(wf);
      if (key === this.lastKey) return;
      if (this.lastState !== null) {
        this.undoStack.push(this.lastState);
        if (this.undoStack.length > MAX_UNDO) this.undoStack.shift();
      }
      this.redoStack = [];
      this.emit(wf, key);
    }

    emit(wf, key) {
      const text = formatWorkflow(wf);
      this.lastKey = key;
      this.lastText = text;
      this.lastState = text;
      this.onChange(text);
    }

    restore(text) {
      this.loadText(text, { force: true, fromUndo: true, keepView: true });
      this.onChange(text);
    }

    undo() {
      if (this.blocked || !this.undoStack.length) return false;
      this.redoStack.push(this.lastState);
      this.restore(this.undoStack.pop());
      return true;
    }

    redo() {
      if (this.blocked || !this.redoStack.length) return false;
      this.undoStack.push(this.lastState);
      this.restore(this.redoStack.pop());
      return true;
    }

    // -- issues and runs ---------------------------------------------------------------

    showIssues(issues) {
      for (const node of this.graph._nodes) {
        if (node._studio.issues.length) node.bgcolor = node._studio.savedBg;
        node._studio.issues = [];
      }
      for (const issue of Array.isArray(issues) ? issues : []) {
        if (!isObject(issue) || typeof issue.node_id !== "string") continue;
        const node = this.nodeById(issue.node_id);
        if (!node) continue;
        const text = issue.input ? `${issue.input}: ${issue.message}` : String(issue.message);
        if (!node._studio.issues.length) node._studio.savedBg = node.bgcolor;
        node._studio.issues.push(text);
        node.bgcolor = ERROR_BG;
      }
      this.lgcanvas.setDirty(true, true);
    }

    nodeIssues(id) {
      const node = this.nodeById(id);
      return node ? node._studio.issues.slice() : null;
    }

    /** Colour nodes by the run's events (the studio's event log). */
    showRun(log) {
      const states = {};
      for (const entry of Array.isArray(log) ? log : []) {
        if (!isObject(entry)) continue;
        if (entry.event === "run_started") for (const id of Object.keys(states)) delete states[id];
        const id = entry.node_id;
        if (typeof id !== "string") continue;
        if (entry.event === "node_started") states[id] = "running";
        else if (entry.event === "node_finished") states[id] = "done";
        else if (entry.event === "node_cached") states[id] = "cached";
        else if (entry.event === "node_failed") states[id] = "failed";
      }
      for (const node of this.graph._nodes) node._studio.runState = states[node.properties.id] || null;
      this.lgcanvas.setDirty(true, true);
      return states;
    }

    /** Show the run's node states ({id: "running" | "done" | "cached" | "failed"}) pushed by the server. */
    showStates(states) {
      const given = isObject(states) && isObject(states.states) ? states.states : states;
      const known = isObject(given) ? given : {};
      for (const node of this.graph._nodes) {
        const state = known[node.properties.id];
        node._studio.runState = typeof state === "string" && state in RUN_COLORS ? state : null;
      }
      this.lgcanvas.setDirty(true, true);
      return this.runStates();
    }

    /** The run state each node shows now (for tests). */
    runStates() {
      const out = {};
      for (const node of this.graph._nodes) if (node._studio.runState) out[node.properties.id] = node._studio.runState;
      return out;
    }

    /**
     * New node descriptions from the server (Refresh, an upload): combo widgets get the
     * current choices (model files, input images). ``setFile`` puts a file name into the
     * path of the selected LoadImage nodes.
     */
    updateDefs(payload) {
      if (!isObject(payload)) return 0;
      const defs = Array.isArray(payload.node_defs) ? payload.node_defs : [];
      let changed = 0;
      for (const fresh of defs) {
        const def = isObject(fresh) ? this.defs[fresh.type] : null;
        if (!def || !Array.isArray(fresh.inputs)) continue;
        for (const spec of def.inputs) {
          const now = fresh.inputs.find((s) => isObject(s) && s.name === spec.name);
          if (!now || !Array.isArray(now.choices) || !Array.isArray(spec.choices)) continue;
          spec.choices = now.choices.slice();  // the node class reads the same object: new nodes see it
          changed += 1;
        }
      }
      for (const node of this.graph._nodes) {
        for (const widget of node.widgets || []) {
          const spec = widget.studioSpec;
          if (spec && Array.isArray(spec.choices) && widget.type === "combo") widget.options.values = spec.choices.slice();
        }
      }
      const file = payload.set_file;
      if (typeof file === "string" && file) {
        const selected = Object.values(this.lgcanvas.selected_nodes || {});
        for (const node of selected) {
          const def = node._studio && node._studio.def;
          const target = def && def.inputs.find((spec) => spec.file_list);
          if (target) this.setWidget(node.properties.id, target.name, file);
        }
      }
      this.lgcanvas.setDirty(true, true);
      return changed;
    }

    /** The choices a node's combo widget offers now (for tests). */
    widgetChoices(id, name) {
      const node = this.nodeById(id);
      const widget = node && (node.widgets || []).find((w) => w.name === name);
      return widget && widget.options && Array.isArray(widget.options.values) ? widget.options.values.slice() : null;
    }

    // -- scripting (tests and the console) ----------------------------------------------

    addNode(type, position) {
      const def = this.defs[type];
      if (!def) throw new Error(`unknown node type ${type}`);
      const node = LiteGraph.createNode(litegraphKey(def));
      node.pos = position ? [position[0], position[1]] : [100, 100];
      this.graph.add(node);
      this.checkChanged();
      return node.properties.id;
    }

    connect(fromId, outputName, toId, inputName) {
      const ok = this.linkUp(this.nodeById(fromId), outputName, this.nodeById(toId), inputName);
      this.checkChanged();
      return ok;
    }

    setWidget(id, name, value) {
      const node = this.nodeById(id);
      const widget = node && (node.widgets || []).find((w) => w.name === name);
      if (!widget) return false;
      widget.value = widget.studioSpec ? normalize(widget.studioSpec, value) : value;
      if (widget.callback) widget.callback(widget.value);
      this.checkChanged();
      return true;
    }

    /** Where a point of the graph is drawn on the page. */
    toScreen(point) {
      const rect = this.canvasEl.getBoundingClientRect();
      const at = this.lgcanvas.ds.convertOffsetToCanvas([point[0], point[1]]);
      return { x: rect.left + at[0], y: rect.top + at[1] };
    }

    /** Where an input's or output's socket is drawn on the page (for tests that drag links). */
    slotScreenPosition(id, name, isInput) {
      const node = this.nodeById(id);
      if (!node) return null;
      const index = isInput ? node.findInputSlot(name) : node.findOutputSlot(name);
      if (index < 0) return null;
      return this.toScreen(node.getConnectionPos(isInput, index));
    }

    /** The middle of a widget on the page (for tests that click it). */
    widgetScreenPosition(id, name) {
      const node = this.nodeById(id);
      const widget = node && (node.widgets || []).find((w) => w.name === name);
      if (!widget || widget.last_y == null) return null;
      return this.toScreen([node.pos[0] + node.size[0] / 2, node.pos[1] + widget.last_y + LiteGraph.NODE_WIDGET_HEIGHT / 2]);
    }

    /** Where a node is drawn on the page (for tests that click on it). */
    screenPosition(id) {
      const node = this.nodeById(id);
      if (!node) return null;
      const rect = this.canvasEl.getBoundingClientRect();
      const point = this.lgcanvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1]]);
      const scale = this.lgcanvas.ds.scale;
      return { x: rect.left + point[0], y: rect.top + point[1], width: node.size[0] * scale, height: node.size[1] * scale, scale };
    }
  }

  function mount(element, props, trigger, watch) {
    if (element._studioCanvas) return element._studioCanvas;
    const host = element.querySelector(".studio-canvas-mount") || element;
    const canvas = new StudioCanvas(host, props.node_defs || [], props.colors || {});
    canvas.onChange = (text) => {
      props.value = text;
      trigger("change");
    };
    watch("value", () => canvas.loadText(props.value || ""));
    canvas.loadText(props.value || "");
    element._studioCanvas = canvas;
    window.studioCanvas = canvas;
    // back on the page (after dropping model files into models/, say): fresh lists, quietly
    let lastRefresh = Date.now();
    window.addEventListener("focus", () => {
      if (Date.now() - lastRefresh < FOCUS_REFRESH_MS) return;
      lastRefresh = Date.now();
      const button = document.getElementById("studio-refresh-quiet");
      if (button) button.click();
    });
    if (window.studioPendingDefs) {
      // fresher lists sent while the canvas was being made
      canvas.updateDefs(window.studioPendingDefs);
      window.studioPendingDefs = null;
    }
    return canvas;
  }

  window.StudioCanvas = { mount, formatWorkflow, compact, graphKey, litegraphKey, idStem, normalize, StudioCanvas };
})();
