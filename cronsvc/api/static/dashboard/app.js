// The cronsvc dashboard: a hash-routed page that talks to the API only.
//
//   #/                 jobs: search, tag and state filters, pages, active toggles
//   #/jobs/new         create form with a live schedule preview
//   #/jobs/{id}        one job: actions, next fires, chart, tick ledger, execution history
//   #/jobs/{id}/edit   edit form
//   #/cluster          instances, heartbeats, leader
//
// Every view is built with DOM calls (never innerHTML), so names, bodies and
// errors from the API are shown as text. A view returns a function that stops
// its refresh timers and in-flight requests when the route changes.

import { ApiError, api, onTokenNeeded, setToken, token } from "./api.js";
import { chart } from "./chart.js";
import { describe } from "./describe.js";
import {
  duration, fromWallTime, inZone, lagMs, offsetAt, relative, splitLocal, utc, wallTime,
} from "./format.js";

// How each concurrencyPolicy reads on a job's page.
const OVERLAP = {
  allow: "allowed",
  forbid: "skip a tick while a run is going",
  replace: "cancel the running one, start the new one",
};

const PAGE_SIZE = 20;
const HISTORY_PAGE_SIZE = 50;
const REFRESH_MS = { jobs: 10000, job: 3000, ledger: 10000, cluster: 5000 };
const PREVIEW_DELAY_MS = 300;
const FLASH_MS = 5000;
const JOB_ID = "[0-9a-f]{24}";
const STATUSES = ["RUNNING", "SUCCESS", "FAILURE", "SKIPPED", "MISSED", "LOST"];
const ALARMING = new Set(["MISSED", "FAILURE", "LOST"]);

// -- small DOM helpers ---------------------------------------------------------

function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (typeof value !== "string" && key in element) element[key] = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const $ = (selector) => document.querySelector(selector);

function option(value, label, selected) {
  return h("option", { value, selected: selected === value }, label);
}

// A relative time that the page ticker keeps current ("in 5 s").
function since(iso) {
  return h("span", { class: "rel", dataset: { at: iso }, title: utc(iso) }, relative(iso));
}

function when(iso, zone) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("span", { class: "when" }, since(iso), h("span", { class: "abs" }, inZone(iso, zone)));
}

function badge(status) {
  if (!status) return h("span", { class: "muted" }, "—");
  return h("span", { class: `badge status-${status.toLowerCase()}` }, status);
}

function schedule(expression) {
  const words = describe(expression);
  return h("span", { class: "schedule" },
    words ? h("span", { class: "words" }, words) : null,
    h("code", {}, expression));
}

function errorText(error) {
  if (error instanceof ApiError) {
    const fields = error.fieldErrors.map((e) => `${e.field}: ${e.message}`);
    return fields.length ? fields.join("; ") : error.message;
  }
  return error?.message ?? String(error);
}

function isAbort(error) {
  return error?.name === "AbortError";
}

function flash(message, kind = "ok") {
  const note = h("p", { class: `flash flash-${kind}` }, message);
  $("#flash").append(note);
  setTimeout(() => note.remove(), FLASH_MS);
}

// Shows why a view could not load, with a way forward.
function failure(container, error, retry) {
  if (error instanceof ApiError && error.status === 401) {
    container.replaceChildren(h("div", { class: "panel error" },
      h("p", {}, "This service needs an API token to show this."),
      h("button", { type: "button", class: "primary", onclick: () => askToken(null).then(retry) },
        "Enter a token")));
    return;
  }
  container.replaceChildren(h("div", { class: "panel error" },
    h("p", {}, errorText(error)),
    retry ? h("button", { type: "button", onclick: retry }, "Try again") : null));
}

// Timers and requests that live as long as one view.
function lifecycle() {
  const controller = new AbortController();
  const timers = [];
  return {
    signal: controller.signal,
    get alive() {
      return !controller.signal.aborted;
    },
    every(ms, task) {
      let busy = false;
      timers.push(setInterval(async () => {
        if (busy || document.hidden || controller.signal.aborted) return;
        busy = true;
        try {
          await task();
        } finally {
          busy = false;
        }
      }, ms));
    },
    stop() {
      controller.abort();
      timers.forEach(clearInterval);
    },
  };
}

// -- dialogs -------------------------------------------------------------------

let tokenQuestion = null;

// Resolves to the token entered (stored), or null (nothing stored or forgotten).
function askToken(reason) {
  if (tokenQuestion) return tokenQuestion;
  const dialog = $("#token-dialog");
  const input = $("#token-input");
  $("#token-reason").textContent = reason ?? (token()
    ? "A token is set for this tab. Enter another one, or forget it."
    : "Enter an API token for this service.");
  $("#token-forget").hidden = !token();
  input.value = "";
  dialog.returnValue = "";
  tokenQuestion = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      tokenQuestion = null;
      const entered = input.value.trim();
      input.value = "";
      if (dialog.returnValue === "forget") {
        setToken(null);
        resolve(null);
      } else if (dialog.returnValue === "ok" && entered) {
        setToken(entered);
        resolve(entered);
      } else {
        resolve(null);
      }
    }, { once: true });
  });
  dialog.showModal();
  input.focus();
  return tokenQuestion;
}

function confirmDialog(title, text, action) {
  const dialog = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = action;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

function showExecution(execution, zone) {
  const lag = lagMs(execution);
  const rows = [
    ["Status", badge(execution.status)],
    ["Trigger", execution.trigger],
    ["Tick", inZone(execution.scheduledAt, zone)],
    ["Started", execution.executedAt ? inZone(execution.executedAt, zone) : "—"],
    ["HTTP status", execution.responseStatus ?? "—"],
    ["Duration", duration(execution.durationMs)],
    ["Lag", duration(lag)],
    ["Attempts", execution.attempts],
    ["Instance", execution.instanceId],
    ["Execution id", h("code", {}, execution.id)],
  ];
  const body = execution.responseBody;
  $("#execution-title").textContent = `${execution.jobName}: ${execution.status}`;
  $("#execution-content").replaceChildren(h("div", {},
    h("dl", { class: "facts" }, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    execution.error ? h("div", { class: "panel error" },
      h("strong", {}, execution.error.type), ": ", execution.error.message) : null,
    h("h3", {}, "Response body"),
    body ? h("pre", { class: "response-body", id: "response-body" }, body)
      : h("p", { class: "muted", id: "response-body" }, body === "" ? "(empty)" : "(none recorded)"),
    execution.responseTruncated ? h("p", { class: "muted small" },
      "Cut at webhook.max_response_bytes.") : null,
  ));
  $("#execution-dialog").showModal();
}

// -- the next fires of a schedule, with DST transitions marked -----------------

// `data`: a ScheduleOut (cronExpression, timezone, after, instants[{utc, local}]).
// An instant whose UTC offset differs from the one before it (for the first:
// from the offset at `after`) falls across a DST transition.
function instants(data) {
  let previous = offsetAt(data.after, data.timezone);
  const items = data.instants.map((instant) => {
    const local = splitLocal(instant.local);
    const changed = previous !== null && local.offset !== null && local.offset !== previous;
    const item = h("li", { class: changed ? "instant dst" : "instant" },
      h("div", {},
        h("span", { class: "local" }, local.text),
        h("span", { class: "offset" }, local.offset ? `UTC${local.offset}` : ""),
        changed ? h("span", {
          class: "badge dst-badge",
          title: `The UTC offset changes from ${previous} to ${local.offset} before this fire`,
        }, `DST ${previous} → ${local.offset}`) : null),
      h("div", { class: "muted small" }, utc(instant.utc), " · ", since(instant.utc)));
    previous = local.offset ?? previous;
    return item;
  });
  if (items.length === 0) return h("p", { class: "muted" }, "No fires ahead.");
  return h("ol", { class: "instants" }, items);
}

// A dry run's answer (`?dryRun=true`): the fields the write changes (a secret
// only as changed) and the next fires before and after, side by side, each
// marked moved, new or gone, and DST where the zone's offset changed.
function dryRunView(data) {
  const changes = data.changes.map((change) => h("li", { class: "change" },
    h("code", {}, change.field), ": ",
    change.redacted ? "changes (not shown)"
      : "before" in change
        ? [h("span", { class: "before" }, shown(change.before)), " → ", h("span", { class: "after" }, shown(change.after))]
        : h("span", { class: "after" }, shown(change.after))));
  const { fires } = data;
  const marks = (moved, single, word) => {
    const found = new Map(single.map((instant) => [instant, word]));
    moved.forEach((instant) => found.set(instant, "moved"));
    return found;
  };
  const beforeMarks = marks(fires.moved.map((m) => m.before), fires.disappeared, "gone");
  const afterMarks = marks(fires.moved.map((m) => m.after), fires.appeared, "new");
  const cells = (fire, found) => {
    if (!fire) return [h("td", { class: "muted" }, "–"), h("td", {})];
    const local = splitLocal(fire.local);
    const mark = found.get(fire.utc);
    return [
      h("td", { class: fire.dstChange ? "fire dst" : "fire" },
        h("span", { class: "local" }, local.text),
        h("span", { class: "offset muted" }, local.offset ? ` UTC${local.offset}` : ""),
        fire.dstChange ? h("span", { class: "badge dst-badge" }, "DST") : null,
        h("div", { class: "muted small" }, utc(fire.utc))),
      h("td", {}, mark ? h("span", { class: `badge fire-${mark}` }, mark) : ""),
    ];
  };
  const rows = [];
  for (let i = 0; i < Math.max(fires.before.length, fires.after.length); i++) {
    rows.push(h("tr", {}, cells(fires.before[i], beforeMarks), cells(fires.after[i], afterMarks)));
  }
  const summary = `${fires.moved.length} moved, ${fires.appeared.length} new, ${fires.disappeared.length} gone`;
  return [
    h("h2", {}, "What saving would change"),
    changes.length ? h("ul", { id: "dry-run-changes" }, changes) : h("p", { class: "muted", id: "dry-run-changes" }, "No field changes."),
    h("table", { class: "grid", id: "dry-run-fires" },
      h("thead", {}, h("tr", {}, h("th", {}, "Fires now"), h("th", {}), h("th", {}, "Fires after saving"), h("th", {}))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { class: "empty", colspan: "4" }, "No fires either way.")))),
    h("p", { class: "muted small", id: "dry-run-summary" }, `${summary}. Nothing is saved until you press Save.`),
  ];
}

function shown(value) {
  if (value === null || value === undefined || value === "") return "–";
  return typeof value === "string" ? value : JSON.stringify(value);
}

// -- jobs ----------------------------------------------------------------------

const jobsFilter = { name: "", tag: "", active: "", pages: [] };

function jobsView(view) {
  const life = lifecycle();
  const state = jobsFilter;
  const search = h("input", {
    type: "search", id: "job-search", placeholder: "Name starts with…",
    "aria-label": "Search jobs by name", value: state.name,
  });
  const tag = h("input", {
    type: "search", id: "tag-filter", placeholder: "Tag", "aria-label": "Filter by tag",
    value: state.tag,
  });
  const active = h("select", { id: "active-filter", "aria-label": "Filter by state" },
    option("", "Active and paused", state.active), option("true", "Active only", state.active),
    option("false", "Paused only", state.active));
  const rows = h("tbody");
  const status = h("div", { class: "view-status" });
  const previous = h("button", { type: "button", id: "page-previous" }, "‹ Previous");
  const next = h("button", { type: "button", id: "page-next" }, "Next ›");
  const pageInfo = h("span", { class: "muted", id: "page-number" });

  view.append(
    h("div", { class: "toolbar" },
      h("h1", {}, "Jobs"), search, tag, active,
      h("span", { class: "spacer" }),
      h("a", { class: "button primary", href: "#/jobs/new" }, "New job")),
    status,
    h("table", { class: "grid jobs", id: "jobs-table" },
      h("thead", {}, h("tr", {}, ["Name", "Schedule", "Time zone", "Next run", "Last status",
        "Active"].map((title) => h("th", { scope: "col" }, title)))),
      rows),
    h("nav", { class: "pager", "aria-label": "Pages" }, previous, pageInfo, next),
  );

  function firstPage() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.name) query.set("name", state.name);
    if (state.tag) query.set("tag", state.tag);
    if (state.active) query.set("isActive", state.active);
    return `/api/cron?${query}`;
  }

  let loads = 0;
  async function load() {
    const url = state.pages.at(-1) ?? firstPage();
    const mine = ++loads; // a filter changed or a timer fired: only the latest answer counts
    try {
      const { data, next: nextPage } = await api.get(url, { signal: life.signal });
      if (!life.alive || mine !== loads) return;
      state.next = nextPage;
      render(data);
      status.replaceChildren();
    } catch (error) {
      if (life.alive && mine === loads && !isAbort(error)) failure(status, error, load);
    }
  }

  function render(jobs) {
    rows.replaceChildren(...jobs.map(row));
    if (jobs.length === 0) {
      const filtered = state.name || state.tag || state.active;
      rows.append(h("tr", {}, h("td", { colspan: 6, class: "empty" },
        filtered ? "No job matches these filters." : "No jobs yet. ",
        filtered ? null : h("a", { href: "#/jobs/new" }, "Create the first one."))));
    }
    previous.disabled = state.pages.length === 0;
    next.disabled = !state.next;
    pageInfo.textContent = `Page ${state.pages.length + 1}`;
  }

  function row(job) {
    const toggle = h("input", {
      type: "checkbox", role: "switch", class: "switch", checked: job.isActive,
      "aria-label": `Active: ${job.name}`,
      onchange: () => setActive(job, toggle),
    });
    return h("tr", { dataset: { jobId: job.id } },
      h("td", {},
        h("a", { href: `#/jobs/${job.id}`, class: "job-name" }, job.name),
        job.tags.length ? h("div", { class: "tags" }, job.tags.map((name) =>
          h("button", { type: "button", class: "tag", title: `Show jobs tagged ${name}`,
            onclick: () => { tag.value = name; apply(); } }, name))) : null),
      h("td", {}, schedule(job.cronExpression)),
      h("td", {}, job.timezone),
      h("td", {}, job.isActive ? when(job.nextRunAt, job.timezone)
        : h("span", { class: "muted" }, "paused")),
      h("td", {}, badge(job.lastStatus),
        job.lastRunAt ? h("div", { class: "muted small" }, since(job.lastRunAt)) : null),
      h("td", {}, toggle));
  }

  async function setActive(job, toggle) {
    const wanted = toggle.checked;
    toggle.disabled = true;
    try {
      await api.post(`/api/cron/${job.id}/${wanted ? "resume" : "pause"}`);
      flash(`${job.name}: ${wanted ? "resumed" : "paused"}`);
      await load();
    } catch (error) {
      toggle.checked = !wanted;
      flash(`${job.name}: ${errorText(error)}`, "error");
    } finally {
      toggle.disabled = false;
    }
  }

  function apply() {
    state.name = search.value.trim();
    state.tag = tag.value.trim();
    state.active = active.value;
    state.pages = [];
    load();
  }

  let typing = null;
  const later = () => {
    clearTimeout(typing);
    typing = setTimeout(apply, PREVIEW_DELAY_MS);
  };
  search.addEventListener("input", later);
  tag.addEventListener("input", later);
  active.addEventListener("change", apply);
  next.addEventListener("click", () => {
    if (!state.next) return;
    state.pages.push(state.next);
    load();
  });
  previous.addEventListener("click", () => {
    state.pages.pop();
    load();
  });

  load();
  life.every(REFRESH_MS.jobs, load);
  return () => {
    clearTimeout(typing);
    life.stop();
  };
}

// -- one job -------------------------------------------------------------------

// A job's alert state in words: failing (since when), or fine, or no alerts.
function alertState(state) {
  if (!state) return h("span", { class: "muted" }, "no alerts");
  const runs = state.consecutiveFailures;
  if (state.alerting) {
    return h("span", {}, badge("FAILURE"), ` alerting: ${runs} failed run${runs === 1 ? "" : "s"} in a row`,
      state.since ? h("span", { class: "muted" }, " · since ", since(state.since)) : "");
  }
  const streak = runs ? ` (${runs} failed run${runs === 1 ? "" : "s"} in a row)` : "";
  return h("span", {}, `not alerting${streak}`,
    state.since ? h("span", { class: "muted" }, " · recovered ", since(state.since)) : "");
}

function jobView(view, id) {
  const life = lifecycle();
  let job = null;
  let upcoming = null;
  let executions = [];
  let older = null;
  let pages = 1;
  let statusFilter = "";

  const head = h("div", { class: "job-head" });
  const facts = h("section", { class: "panel", id: "job-facts" });
  const chartBox = h("figure", { class: "panel chart-box", id: "job-chart" });
  const historyRows = h("tbody");
  const historyStatus = h("div", { class: "view-status" });
  const more = h("button", { type: "button", id: "history-more", hidden: true }, "Load older runs");
  const filter = h("select", { id: "history-status", "aria-label": "Show runs with status" },
    option("", "All statuses", ""), STATUSES.map((s) => option(s, s, "")));
  const ledger = ledgerPanel(id, life);

  view.append(
    h("p", {}, h("a", { href: "#/" }, "‹ Jobs")),
    head,
    h("div", { class: "columns" }, facts, chartBox),
    ledger.element,
    h("section", { id: "history" },
      h("div", { class: "toolbar" }, h("h2", {}, "Execution history"), filter,
        h("span", { class: "spacer" }),
        h("button", { type: "button", onclick: () => refresh() }, "Refresh")),
      historyStatus,
      h("table", { class: "grid history", id: "history-table" },
        h("thead", {}, h("tr", {}, ["Tick", "Trigger", "Status", "HTTP", "Duration", "Lag",
          "Attempts", "Error", ""].map((title) => h("th", { scope: "col" }, title)))),
        historyRows),
      more),
  );

  function logsUrl() {
    const query = new URLSearchParams({ limit: String(HISTORY_PAGE_SIZE) });
    if (statusFilter) query.set("status", statusFilter);
    return `/api/execution-logs/job/${id}?${query}`;
  }

  async function loadJob() {
    const { data } = await api.get(`/api/cron/${id}`, { signal: life.signal });
    const changed = !job || job.version !== data.version;
    job = data;
    const stale = !upcoming || upcoming.instants.length === 0
      || Date.parse(upcoming.instants[0].utc) <= Date.now();
    if (job.isActive && (changed || stale)) {
      upcoming = (await api.get(`/api/cron/${id}/next?count=5`, { signal: life.signal })).data;
    } else if (!job.isActive) {
      upcoming = null;
    }
  }

  // The newest page; once older pages are loaded, it is merged into them.
  async function loadNewest() {
    const { data, next } = await api.get(logsUrl(), { signal: life.signal });
    if (pages === 1) {
      executions = data;
      older = next;
      return;
    }
    const byId = new Map(executions.map((e) => [e.id, e]));
    for (const execution of data) byId.set(execution.id, execution);
    executions = [...byId.values()].sort(newestFirst);
  }

  async function loadOlder() {
    if (!older) return;
    more.disabled = true;
    try {
      const { data, next } = await api.get(older, { signal: life.signal });
      const known = new Set(executions.map((e) => e.id));
      executions = [...executions, ...data.filter((e) => !known.has(e.id))].sort(newestFirst);
      older = next;
      pages += 1;
      renderHistory();
    } catch (error) {
      if (life.alive && !isAbort(error)) flash(errorText(error), "error");
    } finally {
      more.disabled = false;
    }
  }

  let refreshes = 0;
  async function refresh() {
    const mine = ++refreshes;
    try {
      await Promise.all([loadJob(), loadNewest()]);
      if (!life.alive || mine !== refreshes) return;
      renderJob();
      renderHistory();
      ledger.follow(job);
      historyStatus.replaceChildren();
    } catch (error) {
      if (!life.alive || mine !== refreshes || isAbort(error)) return;
      if (error instanceof ApiError && error.status === 404) {
        life.stop();
        view.replaceChildren(h("div", { class: "panel error" },
          h("p", {}, "This job does not exist (any more)."), h("a", { href: "#/" }, "Back to the jobs")));
        return;
      }
      failure(historyStatus, error, refresh);
    }
  }

  function renderJob() {
    const pauseOrResume = job.isActive
      ? h("button", { type: "button", id: "job-pause", onclick: () => act("pause") }, "Pause")
      : h("button", { type: "button", id: "job-resume", onclick: () => act("resume") }, "Resume");
    head.replaceChildren(
      h("h1", {}, job.name, " ",
        h("span", { class: `badge ${job.isActive ? "state-active" : "state-paused"}`, id: "job-state" },
          job.isActive ? "active" : "paused")),
      h("div", { class: "actions" },
        pauseOrResume,
        h("button", { type: "button", id: "job-run", onclick: runNow }, "Run now"),
        h("a", { class: "button", href: `#/jobs/${id}/edit`, id: "job-edit" }, "Edit"),
        h("button", { type: "button", class: "danger", id: "job-delete", onclick: remove }, "Delete")),
    );
    const retry = job.retry;
    const rows = [
      ["Schedule", schedule(job.cronExpression)],
      ["Time zone", job.timezone],
      ["Next runs", job.isActive && upcoming ? instants(upcoming) : h("span", { class: "muted" }, "paused")],
      ["Webhook", h("span", {}, h("code", {}, job.httpMethod), " ", h("span", { class: "url" }, job.webhookUrl))],
      ["Last run", job.lastRunAt ? h("span", {}, badge(job.lastStatus), " ", when(job.lastRunAt, job.timezone)) : "never"],
      ["Tags", job.tags.length ? job.tags.join(", ") : "—"],
      ["Timeout", `${job.timeoutSeconds} s`],
      ["Retries", retry.maxAttempts > 1
        ? `up to ${retry.maxAttempts} attempts, backoff ${retry.backoffSeconds} s (at most ${retry.maxBackoffSeconds} s)`
        : "none"],
      ["Overlap", OVERLAP[job.concurrencyPolicy] ?? job.concurrencyPolicy],
      ["Missed ticks", `${job.misfirePolicy} within ${job.misfireGraceSeconds} s`],
      ["Signed", job.hasSecret ? "yes" : "no"],
      // The policy, then where the job stands under it (alerting or not).
      ["Alerts", h("span", {}, h("span", { id: "job-alerts" }, alertPolicy(job.alerts)), " · ",
        h("span", { id: "job-alert-state" }, alertState(job.alertState)))],
      ["Changed", h("span", {}, since(job.updatedAt), ` (version ${job.version})`)],
    ];
    // What the webhook's target asked for: a 410 paused it, a Retry-After holds it back.
    if (job.pausedReason) {
      rows.unshift(["Paused by its target", h("span", { id: "job-paused-reason" }, job.pausedReason)]);
    }
    if (job.deferredUntil && Date.parse(job.deferredUntil) > Date.now()) {
      rows.unshift(["Held back until", when(job.deferredUntil, job.timezone)]);
    }
    facts.replaceChildren(h("dl", { class: "facts" },
      rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])));
  }

  function renderHistory() {
    historyRows.replaceChildren(...executions.map((execution) => {
      const open = () => showExecution(execution, job.timezone);
      return h("tr", { class: "clickable", dataset: { executionId: execution.id }, onclick: open },
        h("td", {}, when(execution.scheduledAt, job.timezone)),
        h("td", {}, execution.trigger),
        h("td", {}, badge(execution.status)),
        h("td", {}, execution.responseStatus ?? "—"),
        h("td", { class: "number" }, duration(execution.durationMs)),
        h("td", { class: "number" }, duration(lagMs(execution))),
        h("td", { class: "number" }, execution.attempts),
        h("td", { class: "error-cell" }, execution.error
          ? h("span", { title: execution.error.message }, execution.error.type) : ""),
        h("td", {}, h("button", { type: "button", class: "quiet", onclick: (event) => {
          event.stopPropagation();
          open();
        } }, "Details")));
    }));
    if (executions.length === 0) {
      historyRows.append(h("tr", {}, h("td", { colspan: 9, class: "empty" },
        statusFilter ? `No ${statusFilter} runs.` : "No runs yet.")));
    }
    more.hidden = !older;
    const picture = chart(executions, job.timezone);
    chartBox.replaceChildren(
      h("figcaption", {}, "Duration and lag",
        h("span", { class: "legend" },
          h("span", { class: "key series-duration" }, "duration"),
          h("span", { class: "key series-lag" }, "lag (start − tick)"))),
      picture ?? h("p", { class: "muted" }, "No runs to chart yet."),
    );
  }

  async function act(action) {
    try {
      await api.post(`/api/cron/${id}/${action}`);
      flash(`${job.name}: ${action === "pause" ? "paused" : "resumed"}`);
      await refresh();
    } catch (error) {
      flash(errorText(error), "error");
    }
  }

  async function runNow() {
    try {
      const { data } = await api.post(`/api/cron/${id}/trigger`);
      flash(`${job.name}: started a run (${data.executionId})`);
      await refresh();
    } catch (error) {
      flash(errorText(error), "error");
    }
  }

  async function remove() {
    const sure = await confirmDialog(`Delete ${job.name}?`,
      "The job stops firing and is gone for good. Its execution logs stay.", "Delete");
    if (!sure) return;
    try {
      await api.delete(`/api/cron/${id}`);
      flash(`${job.name}: deleted`);
      location.hash = "#/";
    } catch (error) {
      flash(errorText(error), "error");
    }
  }

  filter.addEventListener("change", () => {
    statusFilter = filter.value;
    executions = [];
    older = null;
    pages = 1;
    refresh();
  });
  more.addEventListener("click", loadOlder);

  head.append(h("p", { class: "muted" }, "Loading…"));
  refresh();
  life.every(REFRESH_MS.job, refresh);
  return () => life.stop();
}

function newestFirst(a, b) {
  return b.scheduledAt.localeCompare(a.scheduledAt) || b.id.localeCompare(a.id);
}

// -- the tick ledger of one job ------------------------------------------------

const LEDGER_RANGES = [
  { key: "15m", label: "Last 15 min", ms: 15 * 60_000 },
  { key: "1h", label: "Last 1 h", ms: 3_600_000 },
  { key: "6h", label: "Last 6 h", ms: 6 * 3_600_000 },
  { key: "24h", label: "Last 24 h", ms: 24 * 3_600_000 },
];
const LEDGER_KINDS = {
  tick: { label: "tick", title: "A tick the schedule owed, and the record that settled it" },
  gap: { label: "gap", title: "A tick the schedule owed that has no record: it never ran, or its record was deleted" },
  manual: { label: "manual run", title: "A run started by hand: no schedule owed it" },
  unscheduled: { label: "unscheduled", title: "A record at an instant no schedule in force owed (one changed since, or a tick claimed just before a pause)" },
  unknown: { label: "before history", title: "A record from before the kept schedule history: whether it was owed is not known" },
};
// The newest owed tick, this close to the range's end, may lack a record only
// because its claim has not landed yet (the API says so too).
const JUST_DUE_MS = 5000;

// Every tick a job owed in a range and what settled it (GET /api/cron/{id}/ledger).
// `follow(job)` gives it the job (its zone) and starts it; it refreshes itself
// while the range is one the API accepts.
function ledgerPanel(id, life) {
  let zone = "UTC";
  let range = "1h"; // the range loaded: a key of LEDGER_RANGES, or "custom"
  let picking = false; // the custom range's form is open
  let custom = { since: null, until: null }; // UTC ISO, or null for the API's default
  let shown = null; // the last answer
  let refused = false; // the API refused this range: asking again will not change that
  let started = false;

  const rangeButtons = [...LEDGER_RANGES, { key: "custom", label: "Custom…" }].map((choice) =>
    h("button", { type: "button", dataset: { range: choice.key }, onclick: () => choose(choice.key) },
      choice.label));
  const since = h("input", { type: "datetime-local", step: "1", id: "ledger-since" });
  const until = h("input", { type: "datetime-local", step: "1", id: "ledger-until" });
  const sinceLabel = h("label", { for: "ledger-since" });
  const untilLabel = h("label", { for: "ledger-until" });
  const customError = h("p", { class: "field-error", id: "ledger-custom-error", hidden: true });
  const customForm = h("form", { class: "ledger-custom", id: "ledger-custom", hidden: true, novalidate: true },
    h("div", { class: "field" }, sinceLabel, since),
    h("div", { class: "field" }, untilLabel, until),
    h("button", { type: "submit", class: "primary", id: "ledger-show" }, "Show"),
    h("span", { class: "muted small" }, "An empty since is an hour before until; an empty until is now."),
    customError);
  const status = h("div", { class: "view-status", id: "ledger-error" });
  const incomplete = h("p", { class: "note", id: "ledger-incomplete", hidden: true });
  const summary = h("div", { class: "ledger-summary", id: "ledger-summary" });
  const strip = h("div", { class: "ledger-strip", id: "ledger-strip", "aria-hidden": "true" });
  const rows = h("tbody");
  const table = h("div", { class: "ledger-scroll" },
    h("table", { class: "grid ledger", id: "ledger-table" },
      h("caption", { class: "muted small" }, "Newest first. A run with a record opens on click."),
      h("thead", {}, h("tr", {}, ["Tick", "Entry", "Status", "Trigger", ""]
        .map((title) => h("th", { scope: "col" }, title)))),
      rows));
  const element = h("section", { class: "panel ledger-panel", id: "ledger", "aria-labelledby": "ledger-title" },
    h("div", { class: "toolbar" },
      h("h2", { id: "ledger-title" }, "Tick ledger"),
      h("div", { class: "segmented", role: "group", "aria-label": "Ledger range" }, rangeButtons),
      h("span", { class: "spacer" }),
      h("button", { type: "button", id: "ledger-refresh", onclick: () => load() }, "Refresh")),
    h("p", { class: "muted small" },
      "Every tick the schedule owed in the range, with the record that settled it; "
      + "a tick with no record is a gap."),
    customForm, status, incomplete, summary, strip, table);

  function pressed() {
    const current = picking ? "custom" : range;
    for (const button of rangeButtons) {
      button.setAttribute("aria-pressed", String(button.dataset.range === current));
    }
    customForm.hidden = !picking;
  }

  // A preset loads at once; "Custom…" opens the form, and what is shown stays
  // (and refreshes) until the form's range is submitted.
  function choose(key) {
    picking = key === "custom";
    if (!picking) range = key;
    pressed();
    if (!picking) {
      load();
      return;
    }
    // Start from the range shown, as the job's clocks read it; an empty until is now.
    if (!since.value && shown) since.value = wallTime(shown.since, zone);
    since.focus();
  }

  customForm.addEventListener("submit", (event) => {
    event.preventDefault();
    customError.hidden = true;
    const read = (input, name) => {
      if (!input.value) return { value: null };
      const value = fromWallTime(input.value, zone);
      return value ? { value } : { error: `${name}: cannot be read as a time in ${zone}` };
    };
    const from = read(since, "since");
    const to = read(until, "until");
    const problem = from.error ?? to.error;
    if (problem) {
      customError.textContent = problem;
      customError.hidden = false;
      return;
    }
    range = "custom";
    custom = { since: from.value, until: to.value };
    load();
  });

  function url() {
    const query = new URLSearchParams();
    if (range === "custom") {
      if (custom.since) query.set("since", custom.since);
      if (custom.until) query.set("until", custom.until);
    } else {
      // `until` is left to the service's clock, so a browser clock that is
      // a little behind still sees the newest ticks.
      const span = LEDGER_RANGES.find((choice) => choice.key === range).ms;
      query.set("since", new Date(Date.now() - span).toISOString());
    }
    const text = query.toString();
    return `/api/cron/${id}/ledger${text ? `?${text}` : ""}`;
  }

  let loads = 0;
  async function load() {
    const mine = ++loads; // a range chosen or a timer fired: only the latest answer counts
    element.setAttribute("aria-busy", "true");
    try {
      const { data } = await api.get(url(), { signal: life.signal });
      if (!life.alive || mine !== loads) return;
      refused = false;
      shown = data;
      status.replaceChildren();
      render(data);
    } catch (error) {
      if (!life.alive || mine !== loads || isAbort(error)) return;
      shown = null;
      clear();
      refused = error instanceof ApiError && error.status === 400;
      if (refused) {
        status.replaceChildren(h("div", { class: "panel error", role: "alert" },
          h("p", {}, errorText(error)),
          h("p", { class: "small" }, "Narrow the range: choose a shorter one, or bring since and "
            + "until closer (one answer covers at most 31 days and 1000 owed ticks).")));
      } else {
        failure(status, error, load);
      }
    } finally {
      if (mine === loads) element.removeAttribute("aria-busy");
    }
  }

  function clear() {
    incomplete.hidden = true;
    summary.replaceChildren();
    strip.replaceChildren();
    rows.replaceChildren();
    table.hidden = true;
  }

  function render(data) {
    const counts = data.summary;
    const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
    const count = (key, ...content) => h("li", { dataset: { count: key } }, content);
    summary.replaceChildren(
      h("p", { class: "small" }, "From ", h("span", { title: utc(data.since) }, inZone(data.since, zone)),
        " to ", h("span", { title: utc(data.until) }, inZone(data.until, zone))),
      h("ul", { class: "ledger-counts" },
        count("ticks", h("strong", {}, plural(counts.ticks, "tick")), " owed"),
        STATUSES.filter((s) => counts.byStatus[s]).map((s) =>
          count(s, badge(s), ` ${counts.byStatus[s]}`)),
        h("li", { class: counts.gaps ? "gaps has-gaps" : "gaps", dataset: { count: "gaps" } },
          counts.gaps ? plural(counts.gaps, "gap") : "no gaps"),
        counts.manual ? count("manual", plural(counts.manual, "manual run")) : null,
        counts.unscheduled ? count("unscheduled", `${counts.unscheduled} unscheduled`) : null,
        counts.unknown ? count("unknown", `${counts.unknown} before history`) : null));
    incomplete.hidden = data.complete;
    incomplete.textContent = data.complete ? "" : `Incomplete: the schedule history kept starts at `
      + `${inZone(data.knownFrom, zone)}. What was owed before then is not known, so no gaps are `
      + "listed there, and records from then are marked “before history”.";
    strip.replaceChildren(...data.entries.map((entry) => h("span", {
      class: `cell cell-${entry.kind === "tick" ? (entry.status ?? "").toLowerCase() : entry.kind}`,
      title: `${inZone(entry.scheduledAt, zone)}: ${describeEntry(entry)}`,
    })));
    const newest = data.entries.findLast((entry) => entry.kind === "tick" || entry.kind === "gap");
    const fresh = newest && Date.parse(data.until) - Date.parse(newest.scheduledAt) < JUST_DUE_MS;
    const justDue = newest?.kind === "gap" && fresh ? newest : null;
    rows.replaceChildren(...[...data.entries].reverse().map((entry) => entryRow(entry, entry === justDue)));
    if (data.entries.length === 0) {
      rows.append(h("tr", {}, h("td", { colspan: 5, class: "empty" },
        "Nothing owed and no records in this range.")));
    }
    table.hidden = false;
  }

  function describeEntry(entry) {
    const kind = LEDGER_KINDS[entry.kind]?.label ?? entry.kind;
    if (entry.kind === "gap") return "gap, no record";
    return entry.kind === "tick" ? entry.status : `${kind}, ${entry.status}`;
  }

  function entryRow(entry, justDue) {
    const kind = LEDGER_KINDS[entry.kind] ?? { label: entry.kind, title: "" };
    const classes = ["ledger-entry", `kind-${entry.kind}`];
    if (ALARMING.has(entry.status)) classes.push("alarming");
    const data = { kind: entry.kind, status: entry.status ?? "none", scheduledAt: entry.scheduledAt };
    let open = null;
    if (entry.executionId) {
      classes.push("clickable");
      data.executionId = entry.executionId;
      open = () => openExecution(entry.executionId);
    }
    return h("tr", { class: classes.join(" "), dataset: data, onclick: open },
      h("td", { class: "tick-time", title: utc(entry.scheduledAt) }, inZone(entry.scheduledAt, zone)),
      h("td", {}, entry.kind === "tick"
        ? h("span", { class: "muted", title: kind.title }, kind.label)
        : h("span", { class: `badge kind-badge kind-${entry.kind}`, title: kind.title }, kind.label)),
      h("td", {}, entry.kind === "gap"
        ? h("span", { class: "gap-text" }, "no record",
          justDue ? h("span", { class: "muted small" }, " (just due: its run may not be claimed yet)") : null)
        : badge(entry.status)),
      h("td", {}, entry.trigger ?? "—"),
      h("td", {}, open ? h("button", { type: "button", class: "quiet", onclick: (event) => {
        event.stopPropagation();
        open();
      } }, "Details") : ""));
  }

  async function openExecution(executionId) {
    try {
      const { data } = await api.get(`/api/execution-logs/${executionId}`, { signal: life.signal });
      if (life.alive) showExecution(data, zone);
    } catch (error) {
      if (life.alive && !isAbort(error)) flash(errorText(error), "error");
    }
  }

  pressed();
  clear();
  life.every(REFRESH_MS.ledger, async () => {
    if (started && !refused) await load();
  });
  return {
    element,
    follow(job) {
      zone = job.timezone;
      sinceLabel.textContent = `Since (${zone})`;
      untilLabel.textContent = `Until (${zone})`;
      if (!started) {
        started = true;
        load();
      }
    },
  };
}

// A job's own alert policy in words; null: the service's default applies.
function alertPolicy(alerts) {
  if (!alerts) return "service default";
  if (!alerts.enabled) return "off for this job";
  const runs = alerts.after === 1 ? "a run ends" : `${alerts.after} runs in a row end`;
  return h("span", {},
    `${alerts.format} alert to `, h("span", { class: "url" }, alerts.url),
    ` when ${runs} FAILURE, MISSED or LOST`,
    alerts.onRecovery ? ", and on recovery" : "",
    alerts.hasSecret ? " (signed with its own secret)" : "");
}

// -- create and edit -----------------------------------------------------------

// Wire field -> the form control that edits it (nested fields too: "retry.maxAttempts").
const FIELDS = {
  name: "f-name",
  cronExpression: "f-expression",
  timezone: "f-timezone",
  webhookUrl: "f-url",
  httpMethod: "f-method",
  tags: "f-tags",
  isActive: "f-active",
  headers: "f-headers",
  body: "f-body",
  timeoutSeconds: "f-timeout",
  "retry.maxAttempts": "f-attempts",
  "retry.backoffSeconds": "f-backoff",
  "retry.maxBackoffSeconds": "f-max-backoff",
  concurrencyPolicy: "f-concurrency",
  misfirePolicy: "f-misfire",
  misfireGraceSeconds: "f-grace",
  secret: "f-secret",
  alerts: "f-alerts",
  "alerts.enabled": "f-alerts",
  "alerts.url": "f-alerts-url",
  "alerts.after": "f-alerts-after",
  "alerts.onRecovery": "f-alerts-recovery",
  "alerts.format": "f-alerts-format",
  "alerts.secret": "f-alerts-secret",
};

function control(field) {
  let best = null;
  for (const key of Object.keys(FIELDS)) {
    if ((field === key || field.startsWith(`${key}.`)) && (!best || key.length > best.length)) best = key;
  }
  return best;
}

function formView(view, id) {
  const life = lifecycle();
  if (!id) {
    buildForm(view, life, null);
    return () => life.stop();
  }
  view.append(h("p", { class: "muted" }, "Loading…"));
  api.get(`/api/cron/${id}`, { signal: life.signal }).then(
    ({ data }) => {
      if (!life.alive) return;
      view.replaceChildren();
      buildForm(view, life, data);
    },
    (error) => {
      if (life.alive && !isAbort(error)) failure(view, error, () => route());
    },
  );
  return () => life.stop();
}

function field(label, input, { hint, wide } = {}) {
  const error = h("p", { class: "field-error", id: `${input.id}-error`, hidden: true });
  input.setAttribute("aria-describedby", error.id);
  return h("div", { class: wide ? "field wide" : "field" },
    h("label", { for: input.id }, label), input,
    hint ? h("p", { class: "hint muted small" }, hint) : null, error);
}

function check(label, input) {
  const error = h("p", { class: "field-error", id: `${input.id}-error`, hidden: true });
  input.setAttribute("aria-describedby", error.id);
  return h("div", { class: "field check" }, input, h("label", { for: input.id }, label), error);
}

function zoneNames() {
  try {
    return ["UTC", ...Intl.supportedValuesOf("timeZone").filter((zone) => zone !== "UTC")];
  } catch {
    return ["UTC"];
  }
}

// The form's Alerts fieldset: the service's default, the job's own policy, or
// none. `collect` writes what it says as JobIn's `alerts`; the secret, as the
// job's own, is write-only: left empty, the stored one is kept.
function alertFields(input, alerts) {
  const mode = h("select", { id: "f-alerts" },
    option("default", "Use the service default", !alerts ? "default" : ""),
    option("own", "Alert as set here", alerts?.enabled ? "own" : ""),
    option("off", "No alerts for this job", alerts && !alerts.enabled ? "off" : ""));
  const url = input("f-alerts-url", { type: "url", value: alerts?.url ?? "",
    placeholder: "https://hooks.slack.com/services/…" });
  const after = input("f-alerts-after", { type: "number", min: "1", max: "1000",
    value: String(alerts?.after ?? 1) });
  const recovery = input("f-alerts-recovery", { type: "checkbox", checked: alerts?.onRecovery ?? true });
  const format = h("select", { id: "f-alerts-format" },
    option("standard", "standard: cronsvc's JSON document", alerts?.format ?? "standard"),
    option("slack", "slack: {\"text\": …}, for Slack-style incoming webhooks", alerts?.format ?? "standard"));
  const secret = input("f-alerts-secret", { type: "password", autocomplete: "new-password",
    placeholder: alerts?.hasSecret ? "unchanged" : "none: the job's secret signs them" });
  const removeSecret = input("f-alerts-remove-secret", { type: "checkbox" });
  const own = h("div", { class: "fields", id: "f-alerts-own" },
    field("Alert URL", url),
    field("Alert after failed runs", after, { hint: "runs in a row ending FAILURE, MISSED or LOST" }),
    check("Alert on recovery", recovery),
    field("Alert format", format),
    field("Alert secret", secret, { hint: "write-only; whsec_…; signs the alerts" }),
    alerts?.hasSecret ? check("Remove the alert secret", removeSecret) : null);
  const show = () => {
    own.hidden = mode.value !== "own";
  };
  mode.addEventListener("change", show);
  show();
  const fieldset = h("fieldset", { class: "alerts", id: "f-alerts-fieldset" },
    h("legend", {}, "Alerts"),
    field("Alerts", mode, { hint: "tell someone when runs keep failing, and when they succeed again" }),
    own);

  function collect(given, number) {
    if (mode.value === "default") return null;
    if (mode.value === "off") return { enabled: false };
    const wire = {
      enabled: true,
      url: given(url.value.trim()),
      onRecovery: recovery.checked,
      format: format.value,
    };
    const runs = number(after);
    if (runs !== undefined) wire.after = runs;
    if (secret.value) wire.secret = secret.value;
    else if (removeSecret.checked) wire.secret = null;
    return wire;
  }
  return { fieldset, collect };
}

function buildForm(view, life, job) {
  const editing = job !== null;
  const spec = job ?? {
    name: "", cronExpression: "", timezone: "UTC", webhookUrl: "", httpMethod: "POST",
    headers: {}, body: null, timeoutSeconds: null, tags: [], isActive: true,
    retry: { maxAttempts: 1, backoffSeconds: 1, maxBackoffSeconds: 60 },
    concurrencyPolicy: "allow", misfirePolicy: "fire_once", misfireGraceSeconds: 60,
  };
  const input = (id, props) => h("input", { id, name: id, ...props });
  const name = input("f-name", { value: spec.name, required: true, maxlength: "200", autocomplete: "off" });
  const expression = input("f-expression", {
    value: spec.cronExpression, required: true, autocomplete: "off", spellcheck: "false",
    placeholder: "*/5 * * * *",
  });
  const timezone = input("f-timezone", { value: spec.timezone, list: "zones", autocomplete: "off" });
  const url = input("f-url", { type: "url", value: spec.webhookUrl, required: true, placeholder: "https://example.org/hook" });
  const method = h("select", { id: "f-method" },
    ["POST", "GET", "PUT", "PATCH", "DELETE"].map((m) => option(m, m, spec.httpMethod)));
  const tags = input("f-tags", { value: spec.tags.join(", "), placeholder: "billing, nightly" });
  const active = input("f-active", { type: "checkbox", checked: spec.isActive });
  const headers = h("textarea", { id: "f-headers", rows: "3", spellcheck: "false", placeholder: "X-Token: abc" },
    Object.entries(spec.headers).map(([k, v]) => `${k}: ${v}`).join("\n"));
  const bodyMode = h("select", { id: "f-body-mode", "aria-label": "Kind of body" },
    option("default", "Default: JSON naming the job and the tick", ""),
    option("json", "JSON", ""), option("text", "Text", ""));
  const body = h("textarea", { id: "f-body", rows: "4", spellcheck: "false" });
  if (spec.body === null || spec.body === undefined) bodyMode.value = "default";
  else if (typeof spec.body === "string") {
    bodyMode.value = "text";
    body.value = spec.body;
  } else {
    bodyMode.value = "json";
    body.value = JSON.stringify(spec.body, null, 2);
  }
  const timeout = input("f-timeout", { type: "number", min: "0.1", max: "300", step: "any",
    value: job ? String(spec.timeoutSeconds) : "", placeholder: "service default" });
  const attempts = input("f-attempts", { type: "number", min: "1", max: "10", value: String(spec.retry.maxAttempts) });
  const backoff = input("f-backoff", { type: "number", min: "0", step: "any", value: String(spec.retry.backoffSeconds) });
  const maxBackoff = input("f-max-backoff", { type: "number", min: "0", step: "any", value: String(spec.retry.maxBackoffSeconds) });
  const concurrency = h("select", { id: "f-concurrency" },
    option("allow", "allow: runs may overlap", spec.concurrencyPolicy),
    option("forbid", "forbid: skip a tick while a run is going", spec.concurrencyPolicy),
    option("replace", "replace: cancel the running one, start the new one", spec.concurrencyPolicy));
  const misfire = h("select", { id: "f-misfire" },
    option("fire_once", "fire_once: fire the latest missed tick", spec.misfirePolicy),
    option("fire_all", "fire_all: fire every missed tick", spec.misfirePolicy),
    option("skip", "skip: fire none", spec.misfirePolicy));
  const grace = input("f-grace", { type: "number", min: "0", max: "86400", value: String(spec.misfireGraceSeconds) });
  const secret = input("f-secret", { type: "password", autocomplete: "new-password",
    placeholder: editing && job.hasSecret ? "unchanged" : "none" });
  const removeSecret = input("f-remove-secret", { type: "checkbox" });
  const alerts = alertFields(input, editing ? job.alerts : null);
  const words = h("p", { class: "words", id: "expression-words" });
  const preview = h("div", { class: "preview", id: "preview", "aria-live": "polite" });
  const formError = h("div", { class: "form-error", id: "form-error", hidden: true });
  const save = h("button", { type: "submit", class: "primary", id: "job-save" }, editing ? "Save" : "Create job");
  const previewChanges = h("button", { type: "button", id: "job-dry-run" }, "Preview changes");
  const dryRun = h("section", { class: "panel dry-run", id: "dry-run", "aria-live": "polite", hidden: true });

  const form = h("form", { id: "job-form", novalidate: true },
    h("div", { class: "form-grid" },
      h("div", { class: "fields" },
        field("Name", name),
        field("Cron expression", expression, {
          hint: "5 fields (min hour day month weekday), 6 with seconds first, or @daily, @hourly, …",
        }),
        words,
        field("Time zone", timezone, { hint: "IANA name; the expression is read in this zone" }),
        h("datalist", { id: "zones" }, zoneNames().map((zone) => h("option", { value: zone }))),
        field("Webhook URL", url),
        field("HTTP method", method),
        field("Tags", tags, { hint: "comma-separated" }),
        check("Active", active),
        h("details", { class: "more" },
          h("summary", {}, "Request, retries and policies"),
          field("Headers", headers, { hint: "one Name: value per line", wide: true }),
          field("Body", bodyMode),
          field("Body text", body, { wide: true }),
          field("Timeout (s)", timeout),
          field("Attempts", attempts),
          field("Backoff (s)", backoff),
          field("Longest backoff (s)", maxBackoff),
          field("Overlapping runs", concurrency),
          field("Missed ticks", misfire),
          field("Missed tick grace (s)", grace),
          field("Signing secret", secret, { hint: "write-only; when set, requests are signed" }),
          editing && job.hasSecret
            ? check("Remove the secret", removeSecret)
            : null),
        alerts.fieldset),
      h("aside", { class: "panel" }, h("h2", {}, "Next five fires"), preview)),
    formError,
    dryRun,
    h("div", { class: "actions" }, previewChanges, save,
      h("a", { class: "button", href: editing ? `#/jobs/${job.id}` : "#/" }, "Cancel")),
  );
  view.append(h("h1", {}, editing ? `Edit ${job.name}` : "New job"), form);

  function showFieldError(wireField, message) {
    const key = control(wireField);
    const element = key && document.getElementById(FIELDS[key]);
    if (!element) return false;
    const slot = document.getElementById(`${element.id}-error`);
    slot.textContent = slot.hidden ? message : `${slot.textContent} ${message}`;
    slot.hidden = false;
    element.setAttribute("aria-invalid", "true");
    return true;
  }

  function clearFieldError(wireField) {
    const element = document.getElementById(FIELDS[wireField]);
    const slot = document.getElementById(`${element.id}-error`);
    slot.hidden = true;
    slot.textContent = "";
    element.removeAttribute("aria-invalid");
  }

  function clearErrors() {
    Object.keys(FIELDS).forEach(clearFieldError);
    formError.hidden = true;
    formError.replaceChildren();
  }

  function showErrors(errors, fallback) {
    const loose = errors.filter((e) => !showFieldError(e.field, e.message));
    const lines = loose.map((e) => e.field === "version"
      ? "Someone changed this job meanwhile: reload it to see their change, then edit again."
      : `${e.field}: ${e.message}`);
    if (!errors.length && fallback) lines.push(fallback);
    if (lines.length) {
      formError.replaceChildren(...lines.map((line) => h("p", {}, line)));
      formError.hidden = false;
    }
    form.querySelector("[aria-invalid=true]")?.focus();
  }

  // -- live preview: the API checks the expression as it is typed
  let sequence = 0;
  let pending = null;
  let inFlight = null;
  function previewSoon() {
    clearTimeout(pending);
    pending = setTimeout(previewNow, PREVIEW_DELAY_MS);
  }
  async function previewNow() {
    const text = expression.value.trim();
    const zone = timezone.value.trim() || "UTC";
    words.textContent = describe(text) ?? "";
    const mine = ++sequence;
    inFlight?.abort();
    if (!text) {
      clearFieldError("cronExpression");
      preview.replaceChildren(h("p", { class: "muted" }, "Type an expression to see when it fires."));
      return;
    }
    inFlight = new AbortController();
    preview.setAttribute("aria-busy", "true");
    try {
      const { data } = await api.post("/api/schedule/preview",
        { cronExpression: text, timezone: zone, count: 5 }, { signal: inFlight.signal });
      if (mine !== sequence) return;
      clearFieldError("cronExpression");
      clearFieldError("timezone");
      preview.replaceChildren(instants(data));
    } catch (error) {
      if (mine !== sequence || isAbort(error)) return;
      clearFieldError("cronExpression");
      clearFieldError("timezone");
      if (error instanceof ApiError && error.fieldErrors.length) {
        error.fieldErrors.forEach((e) => showFieldError(e.field, e.message));
        preview.replaceChildren(h("p", { class: "muted" }, "No fires to show until the schedule is valid."));
      } else {
        preview.replaceChildren(h("p", { class: "error" }, errorText(error)));
      }
    } finally {
      if (mine === sequence) preview.removeAttribute("aria-busy");
    }
  }
  life.signal.addEventListener("abort", () => {
    clearTimeout(pending);
    inFlight?.abort();
  });
  expression.addEventListener("input", previewSoon);
  timezone.addEventListener("input", previewSoon);
  timezone.addEventListener("change", previewSoon);
  previewNow();

  const bodyField = body.closest(".field");
  const showBody = () => {
    bodyField.hidden = bodyMode.value === "default";
  };
  bodyMode.addEventListener("change", showBody);
  showBody();

  // -- what the form says, as the API's JobIn
  function collect() {
    const errors = [];
    // A required field left empty is left out, so the API says "is required".
    const given = (value) => (value === "" ? undefined : value);
    const wire = {
      name: given(name.value),
      cronExpression: given(expression.value.trim()),
      timezone: timezone.value.trim() || "UTC",
      webhookUrl: given(url.value.trim()),
      httpMethod: method.value,
      tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean),
      isActive: active.checked,
      headers: {},
      retry: {},
      concurrencyPolicy: concurrency.value,
      misfirePolicy: misfire.value,
    };
    headers.value.split("\n").forEach((line, index) => {
      if (!line.trim()) return;
      const at = line.indexOf(":");
      if (at < 1) {
        errors.push({ field: "headers", message: `line ${index + 1}: write it as Name: value` });
        return;
      }
      wire.headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    });
    if (bodyMode.value === "json") {
      try {
        wire.body = JSON.parse(body.value);
      } catch (error) {
        errors.push({ field: "body", message: `is not valid JSON: ${error.message}` });
      }
    } else if (bodyMode.value === "text") {
      wire.body = body.value;
    }
    const number = (element) => (element.value.trim() === "" ? undefined : Number(element.value));
    const set = (target, key, value) => {
      if (value !== undefined) target[key] = value;
    };
    set(wire, "timeoutSeconds", number(timeout));
    set(wire, "misfireGraceSeconds", number(grace));
    set(wire.retry, "maxAttempts", number(attempts));
    set(wire.retry, "backoffSeconds", number(backoff));
    set(wire.retry, "maxBackoffSeconds", number(maxBackoff));
    if (secret.value) wire.secret = secret.value;
    else if (removeSecret.checked) wire.secret = null;
    wire.alerts = alerts.collect(given, number);
    return { wire, errors };
  }

  // -- dry run: what saving would change, asked of the API, nothing written
  let dryRunCall = null;
  previewChanges.addEventListener("click", async () => {
    clearErrors();
    const { wire, errors } = collect();
    if (errors.length) {
      showErrors(errors);
      return;
    }
    dryRunCall?.abort();
    dryRunCall = new AbortController();
    const signal = dryRunCall.signal;
    previewChanges.disabled = true;
    try {
      const { data } = editing
        ? await api.put(`/api/cron/${job.id}?dryRun=true`, { ...wire, version: job.version }, { signal })
        : await api.post("/api/cron?dryRun=true", wire, { signal });
      if (!life.alive) return;
      dryRun.replaceChildren(...dryRunView(data));
      dryRun.hidden = false;
    } catch (error) {
      if (!life.alive || isAbort(error)) return;
      dryRun.hidden = true;
      showErrors(error instanceof ApiError ? error.fieldErrors : [], errorText(error));
    } finally {
      previewChanges.disabled = false;
    }
  });
  // A preview of other values than the form's would mislead: drop it on any edit.
  form.addEventListener("input", () => {
    dryRunCall?.abort();
    dryRun.hidden = true;
    dryRun.replaceChildren();
  });
  life.signal.addEventListener("abort", () => dryRunCall?.abort());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const { wire, errors } = collect();
    if (errors.length) {
      showErrors(errors);
      return;
    }
    save.disabled = true;
    try {
      const { data } = editing
        ? await api.put(`/api/cron/${job.id}`, { ...wire, version: job.version })
        : await api.post("/api/cron", wire);
      flash(editing ? `${data.name}: saved` : `${data.name}: created`);
      location.hash = `#/jobs/${data.id}`;
    } catch (error) {
      if (!life.alive || isAbort(error)) return;
      showErrors(error instanceof ApiError ? error.fieldErrors : [], errorText(error));
    } finally {
      save.disabled = false;
    }
  });
  name.focus();
}

// -- cluster -------------------------------------------------------------------

function clusterView(view) {
  const life = lifecycle();
  const summary = h("p", { id: "cluster-leader" }, "Loading…");
  const rows = h("tbody");
  const status = h("div", { class: "view-status" });
  view.append(
    h("h1", {}, "Cluster"), summary, status,
    h("table", { class: "grid", id: "cluster-table" },
      h("thead", {}, h("tr", {}, ["Instance", "Host", "Version", "Started", "Last heartbeat", "Jobs owned", "Fired (last min)", "Role"]
        .map((title) => h("th", { scope: "col" }, title)))),
      rows),
  );

  async function load() {
    try {
      const { data } = await api.get("/api/cluster", { signal: life.signal });
      if (!life.alive) return;
      status.replaceChildren();
      summary.replaceChildren(data.leader
        ? h("span", {}, "Leader: ", h("code", {}, data.leader),
          ` · ${data.instances.length} live instance${data.instances.length === 1 ? "" : "s"}`)
        : h("span", { class: "error" }, "No leader right now: retention and reaping wait until one is elected."));
      rows.replaceChildren(...data.instances.map((instance) => h("tr", { dataset: { instanceId: instance.id } },
        h("td", {}, h("code", {}, instance.id)),
        h("td", {}, instance.host),
        h("td", {}, instance.version),
        h("td", {}, when(instance.startedAt, "UTC")),
        h("td", {}, since(instance.lastHeartbeat)),
        h("td", {}, instance.jobsOwned != null ? String(instance.jobsOwned)
          : instance.loading ? "loading"
          : h("span", { title: "no share: stopping, loading past its wait, or an earlier version" }, "none")),
        h("td", {}, String(instance.ticksFiredLastMinute ?? 0)),
        h("td", {}, instance.isLeader ? h("span", { class: "badge leader" }, "leader") : "member"))));
    } catch (error) {
      if (life.alive && !isAbort(error)) failure(status, error, load);
    }
  }
  load();
  life.every(REFRESH_MS.cluster, load);
  return () => life.stop();
}

// -- routing -------------------------------------------------------------------

let leave = null;

function route() {
  leave?.();
  leave = null;
  const path = location.hash.replace(/^#/, "") || "/";
  const view = $("#view");
  view.replaceChildren();
  const section = path.startsWith("/cluster") ? "cluster" : "jobs";
  for (const link of document.querySelectorAll("[data-section]")) {
    link.classList.toggle("current", link.dataset.section === section);
  }
  let match;
  if (path === "/") leave = jobsView(view);
  else if (path === "/jobs/new") leave = formView(view, null);
  else if ((match = path.match(new RegExp(`^/jobs/(${JOB_ID})/edit$`)))) leave = formView(view, match[1]);
  else if ((match = path.match(new RegExp(`^/jobs/(${JOB_ID})$`)))) leave = jobView(view, match[1]);
  else if (path === "/cluster") leave = clusterView(view);
  else view.append(h("p", {}, "Nothing here. ", h("a", { href: "#/" }, "Back to the jobs")));
  document.title = `cronsvc · ${section === "cluster" ? "cluster" : "jobs"}`;
}

onTokenNeeded(askToken);
$("#token-button").addEventListener("click", async () => {
  await askToken(null);
  route();
});
window.addEventListener("hashchange", route);
setInterval(() => {
  for (const element of document.querySelectorAll(".rel[data-at]")) {
    element.textContent = relative(element.dataset.at);
  }
}, 1000);
route();
