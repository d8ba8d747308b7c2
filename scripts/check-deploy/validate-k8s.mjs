// validate-k8s.mjs - offline checks of deploy/kubernetes (run by scripts/check-deploy.sh).
//
//   node validate-k8s.mjs DEPLOY_DIR
//
// 1. Every kustomization (base, components, overlays) is rendered the way kustomize does it
//    for the fields this repository uses (resources, components, namespace, images,
//    labels), so the check needs no cluster and no kustomize binary.
// 2. Every rendered object is validated against its schema: the Kubernetes API schemas of
//    `kubernetes-models`, and the CRD schemas of `@kubernetes-models/prometheus-operator`
//    (ServiceMonitor) and `@kubernetes-models/keda` (ScaledObject, TriggerAuthentication).
//    An object whose kind has no schema here fails the check.
// 3. The rules the service relies on: probes on /livez and /readyz,
//    terminationGracePeriodSeconds above SHUTDOWN_GRACE_MS, non-root, read-only root, no
//    privilege escalation, all capabilities dropped, resource requests, secrets as files,
//    and selectors and ports that point at something that exists.
// Prints one line per problem and exits 1 if there is any.
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";

const problems = [];
const fail = (where, msg) => problems.push(`${where}: ${msg}`);

// apiVersion -> module prefix of the package holding its schemas.
function modulePath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com")
    return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  if (group === "keda.sh") return `@kubernetes-models/keda/${group}/${version}/${kind}`;
  return group ? `kubernetes-models/${group}/${version}/${kind}` : `kubernetes-models/${version}/${kind}`;
}

function readYamlDocs(file) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  const out = [];
  for (const d of docs) {
    if (d.errors.length) fail(file, `YAML: ${d.errors[0].message}`);
    const v = d.toJS();
    if (v !== null && v !== undefined) out.push(v);
  }
  return out;
}

// Renders the kustomization in `dir` (kind Kustomization or Component) into objects.
function render(dir, seen = new Set()) {
  const kfile = path.join(dir, "kustomization.yaml");
  if (!fs.existsSync(kfile)) {
    fail(dir, "no kustomization.yaml");
    return [];
  }
  if (seen.has(kfile)) {
    fail(kfile, "kustomization cycle");
    return [];
  }
  seen.add(kfile);
  const [k] = readYamlDocs(kfile);
  if (!k || !["Kustomization", "Component"].includes(k.kind)) {
    fail(kfile, "kind must be Kustomization or Component");
    return [];
  }
  const known = new Set(["apiVersion", "kind", "resources", "components", "namespace", "images", "labels"]);
  for (const key of Object.keys(k)) if (!known.has(key)) fail(kfile, `field '${key}' is not handled by this check`);
  let objs = [];
  for (const r of k.resources || []) {
    const p = path.join(dir, r);
    if (!fs.existsSync(p)) fail(kfile, `resource ${r} does not exist`);
    else if (fs.statSync(p).isDirectory()) objs.push(...render(p, seen));
    else objs.push(...readYamlDocs(p).map((o) => ({ ...o, __file: p })));
  }
  for (const c of k.components || []) {
    const p = path.join(dir, c);
    if (!fs.existsSync(p)) fail(kfile, `component ${c} does not exist`);
    else objs.push(...render(p, seen));
  }
  for (const l of k.labels || [])
    for (const o of objs) o.metadata = { ...o.metadata, labels: { ...(o.metadata?.labels || {}), ...l.pairs } };
  if (k.namespace) for (const o of objs) o.metadata = { ...o.metadata, namespace: k.namespace };
  for (const img of k.images || [])
    for (const o of objs)
      for (const c of podSpec(o)?.containers || [])
        if (c.image === img.name || c.image?.startsWith(`${img.name}:`))
          c.image = `${img.newName || img.name}:${img.newTag || "latest"}`;
  seen.delete(kfile);
  return objs;
}

function podSpec(o) {
  if (o.kind === "Deployment" || o.kind === "Job") return o.spec?.template?.spec;
  return undefined;
}

async function validateSchema(o) {
  const where = `${o.__file}: ${o.kind}/${o.metadata?.name}`;
  let mod;
  try {
    mod = await import(modulePath(o.apiVersion, o.kind));
  } catch {
    fail(where, `no schema for ${o.apiVersion} ${o.kind}`);
    return;
  }
  const { __file, ...plain } = o;
  void __file;
  try {
    new mod[o.kind](plain).validate();
  } catch (e) {
    fail(where, `schema: ${e.message}`);
  }
}

// The rules of the service (see docs/operations.md, "Kubernetes").
function checkRules(objs, label) {
  const byKind = (k) => objs.filter((o) => o.kind === k);
  const cm = byKind("ConfigMap").find((o) => o.metadata.name === "event-validator-config");
  const graceMs = Number(cm?.data?.SHUTDOWN_GRACE_MS ?? 30000);
  for (const o of [...byKind("Deployment"), ...byKind("Job")]) {
    const where = `${label}: ${o.kind}/${o.metadata.name}`;
    const spec = podSpec(o);
    if (!spec.securityContext?.runAsNonRoot) fail(where, "pod securityContext.runAsNonRoot must be true");
    if (spec.automountServiceAccountToken !== false) fail(where, "automountServiceAccountToken must be false");
    for (const c of spec.containers) {
      const sc = c.securityContext || {};
      const cw = `${where} container ${c.name}`;
      if (sc.readOnlyRootFilesystem !== true) fail(cw, "readOnlyRootFilesystem must be true");
      if (sc.allowPrivilegeEscalation !== false) fail(cw, "allowPrivilegeEscalation must be false");
      if (!(sc.capabilities?.drop || []).includes("ALL")) fail(cw, "capabilities.drop must include ALL");
      if (!c.resources?.requests?.cpu || !c.resources?.requests?.memory) fail(cw, "resources.requests cpu and memory are required");
      for (const e of c.env || [])
        if (/(_API_KEY|PASSWORD|TOKEN|SECRET|DATABASE_URL)$/.test(e.name) && e.value !== undefined)
          fail(cw, `${e.name} must not be a plain value: mount the Secret and use ${e.name}_FILE`);
      for (const m of c.volumeMounts || [])
        if (!(spec.volumes || []).some((v) => v.name === m.name)) fail(cw, `volumeMount ${m.name} has no volume`);
    }
    if (o.kind !== "Deployment") continue;
    const c = spec.containers[0];
    const grace = spec.terminationGracePeriodSeconds ?? 30;
    if (grace * 1000 <= graceMs)
      fail(where, `terminationGracePeriodSeconds ${grace} s must exceed SHUTDOWN_GRACE_MS ${graceMs} ms`);
    if (c.livenessProbe?.httpGet?.path !== "/livez") fail(where, "livenessProbe must GET /livez");
    if (c.readinessProbe?.httpGet?.path !== "/readyz") fail(where, "readinessProbe must GET /readyz");
    const tpl = o.spec.template.metadata.labels;
    for (const [k, v] of Object.entries(o.spec.selector.matchLabels))
      if (tpl[k] !== v) fail(where, `selector ${k}=${v} does not match the pod template`);
  }
  const deployments = byKind("Deployment");
  const podMatches = (sel) =>
    deployments.find((d) => Object.entries(sel || {}).every(([k, v]) => d.spec.template.metadata.labels[k] === v));
  for (const s of byKind("Service")) {
    const d = podMatches(s.spec.selector);
    if (!d) fail(`${label}: Service/${s.metadata.name}`, "selector matches no Deployment");
    const named = new Set((d?.spec.template.spec.containers || []).flatMap((c) => (c.ports || []).map((p) => p.name)));
    for (const p of s.spec.ports)
      if (typeof p.targetPort === "string" && !named.has(p.targetPort))
        fail(`${label}: Service/${s.metadata.name}`, `targetPort ${p.targetPort} is no container port`);
  }
  for (const p of byKind("PodDisruptionBudget"))
    if (!podMatches(p.spec.selector.matchLabels)) fail(`${label}: PodDisruptionBudget/${p.metadata.name}`, "selector matches no Deployment");
  for (const sm of byKind("ServiceMonitor")) {
    const svc = byKind("Service").find((s) =>
      Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => s.metadata.labels?.[k] === v));
    if (!svc) fail(`${label}: ServiceMonitor/${sm.metadata.name}`, "selector matches no Service");
    for (const e of sm.spec.endpoints)
      if (svc && !svc.spec.ports.some((p) => p.name === e.port))
        fail(`${label}: ServiceMonitor/${sm.metadata.name}`, `port ${e.port} is not a Service port`);
  }
  for (const so of byKind("ScaledObject")) {
    if (!deployments.some((d) => d.metadata.name === so.spec.scaleTargetRef.name))
      fail(`${label}: ScaledObject/${so.metadata.name}`, "scaleTargetRef names no Deployment");
    for (const t of so.spec.triggers)
      if (t.authenticationRef && !byKind("TriggerAuthentication").some((a) => a.metadata.name === t.authenticationRef.name))
        fail(`${label}: ScaledObject/${so.metadata.name}`, `TriggerAuthentication ${t.authenticationRef.name} is missing`);
  }
}

const root = process.argv[2];
if (!root) {
  console.error("usage: node validate-k8s.mjs DEPLOY_DIR");
  process.exit(2);
}
// Every directory holding a kustomization.yaml is rendered on its own: the base, each
// component and each overlay.
const dirs = [];
(function walk(d) {
  if (fs.existsSync(path.join(d, "kustomization.yaml"))) dirs.push(d);
  for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
})(root);
let count = 0;
for (const dir of dirs) {
  const objs = render(dir);
  for (const o of objs) await validateSchema(o);
  count += objs.length;
  const [k] = readYamlDocs(path.join(dir, "kustomization.yaml"));
  // Components are fragments: the cross-object rules apply to whole kustomizations.
  if (k?.kind === "Kustomization") checkRules(objs, path.relative(root, dir) || ".");
  console.log(`k8s: ${path.relative(root, dir) || "."}: ${objs.length} objects (${objs.map((o) => o.kind).join(", ")})`);
}
if (dirs.length === 0) fail(root, "no kustomization found");
for (const p of problems) console.error(`k8s: ${p}`);
if (problems.length) {
  console.error(`k8s: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`k8s: ok (${dirs.length} kustomizations, ${count} objects validated)`);
