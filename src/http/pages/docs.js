// The API reference page: renders this server's /openapi.json (the same document clients and
// generators read), with nothing fetched from anywhere else. Text goes in as text, never HTML.

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
};

// Descriptions mark code with backticks: `code` becomes <code>.
const rich = (tag, text) => {
  const node = el(tag);
  String(text ?? "").split("`").forEach((part, i) => node.append(i % 2 ? el("code", {}, part) : part));
  return node;
};

const refName = (ref) => ref.split("/").pop();

function resolve(doc, schema) {
  let s = schema ?? {};
  for (let i = 0; i < 10 && s.$ref; i++) s = doc.components?.schemas?.[refName(s.$ref)] ?? {};
  return s;
}

function typeOf(doc, schema) {
  if (!schema) return "";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.oneOf || schema.anyOf) return (schema.oneOf || schema.anyOf).map((s) => typeOf(doc, s)).join(" | ");
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  const types = [].concat(schema.type ?? "object").filter((t) => t !== "null");
  if (types[0] === "array") return `${typeOf(doc, schema.items)}[]`;
  return types.join(" | ") + (schema.format ? ` (${schema.format})` : "");
}

// An object schema's fields as a table (name, type, required, description).
function fields(doc, schema) {
  const s = resolve(doc, schema);
  const props = Object.entries(s.properties ?? {});
  if (!props.length) return rich("p", s.description || typeOf(doc, schema));
  const required = new Set(s.required ?? []);
  const table = el("table", {}, el("tr", {}, el("th", {}, "Field"), el("th", {}, "Type"), el("th", {}, "")));
  for (const [name, prop] of props) {
    const described = prop.description || resolve(doc, prop).description || "";
    const note = rich("td", described);
    if (required.has(name)) note.prepend(el("strong", {}, "required "));
    table.append(el("tr", {}, el("td", { class: "name" }, name), el("td", {}, typeOf(doc, prop)), note));
  }
  return table;
}

function operation(doc, path, method, op) {
  const id = op.operationId || `${method}-${path}`;
  const card = el("section", { class: "card op", id });
  card.append(el("h2", {}, el("span", { class: `method ${method}` }, method), el("span", { class: "path" }, path)));
  if (op.summary) card.append(rich("p", op.summary));
  if (op.description) card.append(rich("p", op.description));
  if (op.security?.length) {
    const schemes = op.security.flatMap((s) => Object.keys(s));
    card.append(el("p", { class: "tag" }, `Authentication: ${schemes.join(" or ")}`));
  }
  const params = (op.parameters ?? []).filter((p) => p.in !== "header" || p.name !== "X-Request-Id");
  if (params.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "Parameter"), el("th", {}, "In"), el("th", {}, "")));
    for (const p of params) table.append(el("tr", {}, el("td", { class: "name" }, p.name), el("td", {}, p.in), rich("td", p.description)));
    card.append(el("h3", {}, "Parameters"), table);
  }
  const body = op.requestBody?.content;
  if (body) {
    const [type, media] = Object.entries(body)[0];
    card.append(el("h3", {}, `Request body (${type})`), fields(doc, media.schema));
  }
  const table = el("table", {}, el("tr", {}, el("th", {}, "Status"), el("th", {}, "")));
  for (const [status, r] of Object.entries(op.responses ?? {})) {
    const media = Object.values(r.content ?? {})[0];
    const cell = rich("td", r.description);
    if (media?.schema && !String(media.schema.$ref).endsWith("/Problem")) cell.append(" → ", el("code", {}, typeOf(doc, media.schema)));
    table.append(el("tr", {}, el("td", { class: "name" }, status), cell));
  }
  card.append(el("h3", {}, "Responses"), table);
  return card;
}

async function main() {
  const error = document.getElementById("error");
  let doc;
  try {
    const r = await fetch("/openapi.json", { headers: { accept: "application/json" } });
    if (!r.ok) throw new Error(`GET /openapi.json answered ${r.status}`);
    doc = await r.json();
  } catch (e) {
    error.textContent = `The API description could not be read: ${e.message}`;
    error.hidden = false;
    return;
  }
  document.getElementById("title").textContent = `${doc.info.title} ${doc.info.version}: API reference`;
  const summary = document.getElementById("summary");
  summary.replaceWith(rich("p", doc.info.description));
  const toc = document.getElementById("toc");
  const out = document.getElementById("operations");
  const tags = (doc.tags ?? []).map((t) => t.name);
  const byTag = new Map(tags.map((t) => [t, []]));
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "post", "put", "patch", "delete"].includes(method)) continue;
      const tag = op.tags?.[0] ?? "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, op]);
    }
  }
  for (const [tag, ops] of byTag) {
    if (!ops.length) continue;
    const list = el("ul");
    toc.append(el("h2", {}, tag), list);
    for (const [path, method, op] of ops) {
      const card = operation(doc, path, method, op);
      out.append(card);
      list.append(el("li", {}, el("a", { href: `#${card.id}` }, `${method.toUpperCase()} ${path}`)));
    }
  }
}

main();
