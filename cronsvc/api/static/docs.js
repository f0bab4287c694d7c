// cronsvc /docs: renders this server's /openapi.json for people.
// Plain DOM calls only (text is never parsed as HTML); it fetches nothing but
// openapi.json from the server that served the page.
"use strict";

(function () {
  const TOKEN_KEY = "cronsvc.apiToken";
  const METHODS = ["get", "post", "put", "patch", "delete", "head", "options"];
  const MAX_DEPTH = 6;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setStatus(text, isError) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      return "";
    }
  }

  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) {
      // Storage refused (private mode): the token lives only in the field.
    }
  }

  async function load() {
    const token = document.getElementById("token").value.trim();
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    setStatus("Loading…");
    let response;
    try {
      response = await fetch("openapi.json", { headers, cache: "no-store", credentials: "omit" });
    } catch (e) {
      setStatus("The server did not answer: " + e.message, true);
      return;
    }
    if (response.status === 401) {
      clear();
      setStatus(
        token
          ? "The server did not accept this token."
          : "This server needs an API token: paste one above, then Load.",
        true
      );
      return;
    }
    if (response.status === 429) {
      const wait = response.headers.get("Retry-After") || "a few";
      setStatus("Too many requests: try again in " + wait + " seconds.", true);
      return;
    }
    if (!response.ok) {
      setStatus("The server answered " + response.status + " " + response.statusText + ".", true);
      return;
    }
    render(await response.json());
    setStatus("");
  }

  function clear() {
    document.getElementById("toc").replaceChildren();
    document.getElementById("operations").replaceChildren();
  }

  // -- the document -----------------------------------------------------------

  function render(doc) {
    clear();
    const info = doc.info || {};
    document.getElementById("version").textContent = info.version ? "v" + info.version : "";
    if (info.description) document.getElementById("description").textContent = info.description;
    const groups = new Map();
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of METHODS) {
        const operation = item[method];
        if (!operation) continue;
        const tag = (operation.tags && operation.tags[0]) || "other";
        if (!groups.has(tag)) groups.set(tag, []);
        groups.get(tag).push({ path, method, operation });
      }
    }
    const toc = document.getElementById("toc");
    const main = document.getElementById("operations");
    for (const [tag, operations] of groups) {
      const id = "tag-" + tag.replace(/[^A-Za-z0-9]+/g, "-");
      toc.append(el("a", { href: "#" + id }, tag + " (" + operations.length + ")"));
      main.append(el("h2", { id }, tag));
      for (const entry of operations) main.append(renderOperation(doc, entry));
    }
  }

  function isOpen(doc, operation) {
    const security = operation.security !== undefined ? operation.security : doc.security;
    return !security || security.length === 0;
  }

  function renderOperation(doc, { path, method, operation }) {
    const body = el("div", { class: "op-body" });
    if (operation.description) body.append(el("p", {}, operation.description));
    if (operation.parameters && operation.parameters.length) {
      body.append(el("h3", {}, "Parameters"), renderParameters(doc, operation.parameters));
    }
    if (operation.requestBody) {
      body.append(el("h3", {}, "Request body"), renderContent(doc, operation.requestBody.content));
    }
    body.append(el("h3", {}, "Responses"), renderResponses(doc, operation.responses || {}));
    return el(
      "details",
      { class: "op" },
      el(
        "summary",
        {},
        el("span", { class: "method " + method }, method),
        el("span", { class: "path" }, path),
        el("span", { class: "summary" }, operation.summary || ""),
        el("span", { class: "lock" }, isOpen(doc, operation) ? "no token" : "token")
      ),
      body
    );
  }

  function renderParameters(doc, parameters) {
    return el(
      "table",
      {},
      el("thead", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "schema"))),
      el(
        "tbody",
        {},
        parameters.map((p) =>
          el(
            "tr",
            {},
            el(
              "td",
              {},
              el("code", {}, p.name),
              p.required ? el("span", { class: "required" }, " required") : null
            ),
            el("td", {}, p.in),
            el(
              "td",
              { class: "schema" },
              renderSchema(doc, p.schema || {}, 0, new Set()),
              p.description ? el("div", { class: "note" }, p.description) : null
            )
          )
        )
      )
    );
  }

  function renderContent(doc, content, folded) {
    const parts = [];
    for (const [mediaType, media] of Object.entries(content || {})) {
      const seen = new Set(folded ? ["#folded"] : []);
      parts.push(
        el("div", { class: "note" }, mediaType),
        el("div", { class: "schema" }, renderSchema(doc, media.schema || {}, 0, seen))
      );
    }
    return el("div", {}, parts);
  }

  function renderResponses(doc, responses) {
    return el(
      "table",
      {},
      el("tbody", {}, Object.entries(responses).map(([status, response]) => {
        const headers = Object.entries(response.headers || {}).map(([name, header]) =>
          el("div", { class: "note" }, "header ", el("code", {}, name),
             header.description ? ": " + header.description : "")
        );
        return el(
          "tr",
          {},
          el("td", { class: "status-code" }, status),
          el("td", {}, response.description || "", headers,
             response.content ? renderContent(doc, response.content, Number(status) >= 400) : null)
        );
      }))
    );
  }

  // -- schemas ------------------------------------------------------------------

  function resolve(doc, ref) {
    const name = ref.split("/").pop();
    const schemas = (doc.components && doc.components.schemas) || {};
    return { name, schema: schemas[name] };
  }

  function describe(schema) {
    const notes = [];
    const limits = [
      ["minLength", "min length"], ["maxLength", "max length"], ["minimum", "≥"],
      ["maximum", "≤"], ["exclusiveMinimum", ">"], ["exclusiveMaximum", "<"],
      ["minItems", "min items"], ["maxItems", "max items"], ["maxProperties", "max entries"],
      ["pattern", "pattern"],
      ["format", "format"],
    ];
    for (const [key, label] of limits) {
      if (schema[key] !== undefined) notes.push(label + " " + schema[key]);
    }
    if (schema.enum) notes.push("one of " + schema.enum.map((v) => JSON.stringify(v)).join(", "));
    if (schema.const !== undefined) notes.push("always " + JSON.stringify(schema.const));
    if (schema.default !== undefined) notes.push("default " + JSON.stringify(schema.default));
    return notes.join("; ");
  }

  function typeName(doc, schema) {
    if (schema.$ref) return resolve(doc, schema.$ref).name;
    const variants = schema.anyOf || schema.oneOf;
    if (variants) return variants.map((s) => typeName(doc, s)).join(" | ");
    if (schema.type === "array") return "array of " + typeName(doc, schema.items || {});
    if (Array.isArray(schema.type)) return schema.type.join(" | ");
    if (schema.type) return schema.type;
    if (schema.enum) return "enum";
    return "any";
  }

  // A schema as a nested list: one line per field with its type and limits.
  function renderSchema(doc, schema, depth, seen) {
    const line = el(
      "span",
      {},
      el("span", { class: "type" }, typeName(doc, schema)),
      describe(schema) ? el("span", { class: "note" }, " (" + describe(schema) + ")") : null,
      schema.description ? el("span", { class: "note" }, " — " + schema.description) : null
    );
    const inner = children(doc, schema, depth, seen);
    return inner ? el("div", {}, line, inner) : line;
  }

  function children(doc, schema, depth, seen) {
    if (depth >= MAX_DEPTH) return null;
    if (schema.$ref) {
      const { name, schema: target } = resolve(doc, schema.$ref);
      if (!target || seen.has(name)) return null;
      const next = new Set(seen).add(name);
      const inner = children(doc, target, depth, next);
      const text = [describe(target), target.description].filter(Boolean).join(" — ");
      const note = text ? el("div", { class: "note" }, text) : null;
      if (!inner) return note;
      // Models fold: open at the top of a request or success response only.
      return el(
        "details",
        { open: depth === 0 && !seen.has("#folded") ? "" : null },
        el("summary", { class: "note" }, "fields of " + name),
        note,
        inner
      );
    }
    const variants = schema.anyOf || schema.oneOf;
    if (variants) {
      const expandable = variants.filter((s) => s.$ref || s.properties || s.items);
      if (expandable.length === 1) return children(doc, expandable[0], depth, seen);
      return null;
    }
    if (schema.type === "array" && schema.items) return children(doc, schema.items, depth, seen);
    if (schema.properties) {
      const required = new Set(schema.required || []);
      return el(
        "ul",
        {},
        Object.entries(schema.properties).map(([name, property]) =>
          el(
            "li",
            {},
            el("span", { class: "field" }, name),
            required.has(name) ? el("span", { class: "required" }, " required") : null,
            ": ",
            renderSchema(doc, property, depth + 1, seen)
          )
        )
      );
    }
    if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
      return el(
        "ul",
        {},
        el("li", {}, el("span", { class: "field" }, "{name}"), ": ",
           renderSchema(doc, schema.additionalProperties, depth + 1, seen))
      );
    }
    return null;
  }

  // -- start --------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    const field = document.getElementById("token");
    field.value = storedToken();
    document.getElementById("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      storeToken(field.value.trim());
      load();
    });
    document.getElementById("forget").addEventListener("click", () => {
      field.value = "";
      storeToken("");
      load();
    });
    load();
  });
})();
