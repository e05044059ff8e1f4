// Validates rendered Kubernetes manifests offline against the API schemas of a current Kubernetes
// release, as the npm packages kubernetes-models (the OpenAPI schemas of Kubernetes 1.34, compiled to
// validators) and @kubernetes-models/prometheus-operator (ServiceMonitor, PrometheusRule) carry them:
// types, formats, enums and required fields of every object. Unknown fields (a typo such as
// `resource:` for `resources:`) are refused too, from the property names the packages declare.
//
// Usage: node deploy/validate_schemas.mjs NODE_MODULES_DIR MANIFEST.yaml...
// Prints one line per object; exits 1 if any is invalid.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [modulesDir, ...files] = process.argv.slice(2);
const load = (spec) => import(pathToFileURL(path.join(modulesDir, spec)).href);
const { parseAllDocuments } = await load("yaml/dist/index.js");

// apiVersion -> the package folder holding its models.
function modelPath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}.js`;
  }
  return `kubernetes-models/${group === "" ? "" : group + "/"}${version}/${kind}.js`;
}

// The property names of each declared interface, and the interface each property's type names, from
// the packages' TypeScript declarations (the compiled validators check types, not unknown names).
// A model file declares `interface IDeploymentSpec {...}` and exports it under its full name
// (`export type { IDeploymentSpec as IIoK8sApiAppsV1DeploymentSpec }`), the name other files use.
const interfaces = new Map();  // full or file-local name -> Map(property -> type text)
function interfacesOf(file) {
  const text = fs.readFileSync(file, "utf8");
  const local = new Map();
  for (const m of text.matchAll(/export interface (\w+)[^{]*\{\n([\s\S]*?)\n\}/g)) {
    const props = new Map();
    // Top-level properties only (4 spaces in); an inline object type (a map) is not walked.
    for (const pm of m[2].matchAll(/^    "([^"]+)"\??: (.+?);?$/gm)) props.set(pm[1], pm[2]);
    local.set(m[1], props);
  }
  for (const m of text.matchAll(/export type \{([^}]*)\}/g)) {
    for (const pair of m[1].matchAll(/(\w+) as (\w+)/g)) {
      if (local.has(pair[1])) interfaces.set(pair[2], local.get(pair[1]));
    }
  }
  return local;
}
function declarations(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory() && entry.name !== "node_modules" && entry.name !== "_schemas") declarations(p);
    else if (entry.name.endsWith(".d.ts")) interfacesOf(p);
  }
}
for (const d of ["kubernetes-models", "@kubernetes-models/apimachinery",
                 "@kubernetes-models/prometheus-operator"]) {
  if (fs.existsSync(path.join(modulesDir, d))) declarations(path.join(modulesDir, d));
}

// Walks `value` against interface `name`: every key must be declared (metadata's free-form maps
// and untyped fields are not walked).
function unknownFields(value, name, where, out) {
  const props = interfaces.get(name);
  if (!props || value === null || typeof value !== "object") return;
  if (Array.isArray(value)) return;
  for (const [key, child] of Object.entries(value)) {
    if (!props.has(key)) {
      out.push(`${where}/${key}: no such field`);
      continue;
    }
    const type = props.get(key);
    const ref = type.match(/^(?:Array<)?(I\w+)>?(?: \| null)?$/);
    if (!ref) continue;
    for (const [i, item] of (Array.isArray(child) ? child.entries() : [[null, child]])) {
      unknownFields(item, ref[1], i === null ? `${where}/${key}` : `${where}/${key}/${i}`, out);
    }
  }
}

let bad = 0, checked = 0;
for (const file of files) {
  for (const doc of parseAllDocuments(fs.readFileSync(file, "utf8"))) {
    const obj = doc.toJS();
    if (!obj) continue;
    const what = `${file}: ${obj.kind} ${obj.metadata?.name ?? "?"}`;
    let Model, root;
    try {
      const spec = modelPath(obj.apiVersion, obj.kind);
      Model = (await load(spec))[obj.kind];
      root = interfacesOf(path.join(modulesDir, spec.replace(/\.js$/, ".d.ts"))).get(`I${obj.kind}`);
    } catch {
      console.log(`${what}: no schema for ${obj.apiVersion} ${obj.kind}`);
      bad++;
      continue;
    }
    const problems = [];
    try {
      new Model(obj).validate();
    } catch (e) {
      problems.push(...(e.errors ?? [e]).map((x) => `${x.instancePath ?? ""} ${x.message}`));
    }
    interfaces.set(`root ${obj.kind}`, root);
    unknownFields(obj, `root ${obj.kind}`, "", problems);
    checked++;
    if (problems.length) {
      bad++;
      console.log(`${what}: INVALID\n  ${problems.join("\n  ")}`);
    } else {
      console.log(`${what}: valid`);
    }
  }
}
console.log(`${checked} objects checked, ${bad} invalid`);
process.exit(bad ? 1 : 0);
