// Bundles the studio page (ui/web/src, ES modules and JSX) into ui/static/dist/studio.js
// and studio.css with esbuild. Run by setup.sh (`npm run build`) whenever the sources or
// package-lock.json change; `node ui/web/build.mjs --watch` rebuilds on every save.
import * as esbuild from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const options = {
  entryPoints: [path.join(here, "src", "main.jsx")],
  outfile: path.join(here, "..", "static", "dist", "studio.js"),
  bundle: true,
  format: "iife",
  target: ["chrome110", "firefox110", "safari16"],
  jsx: "automatic",
  loader: { ".js": "jsx" },
  minify: true,
  sourcemap: "linked",
  legalComments: "linked",
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
};

if (process.argv.includes("--watch")) {
  const context = await esbuild.context(options);
  await context.watch();
  console.log("watching ui/web/src for changes");
} else {
  await esbuild.build(options);
}
