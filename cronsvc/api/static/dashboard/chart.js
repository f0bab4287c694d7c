// A small inline SVG chart of duration and lag over time, one point per run.

import { duration, inZone, lagMs } from "./format.js";

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 720;
const HEIGHT = 180;
const MARGIN = { left: 64, right: 16, top: 12, bottom: 26 };
const SERIES = [
  { key: "duration", label: "duration", value: (e) => e.durationMs },
  { key: "lag", label: "lag", value: lagMs },
];

function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  for (const child of children) element.append(child);
  return element;
}

// Rounds up to 1, 2 or 5 times a power of ten, so the scale reads easily.
function niceCeiling(value) {
  if (value <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const factor of [1, 2, 5, 10]) if (value <= factor * power) return factor * power;
  return 10 * power;
}

// `executions` in any order; `zone` names the time axis's zone. Answers an
// <svg>, or null when no run has started yet.
export function chart(executions, zone) {
  const runs = executions
    .filter((e) => e.executedAt)
    .map((e) => ({ e, t: Date.parse(e.scheduledAt) }))
    .sort((a, b) => a.t - b.t);
  if (runs.length === 0) return null;
  const t0 = runs[0].t;
  const t1 = runs[runs.length - 1].t;
  const values = runs.flatMap(({ e }) => SERIES.map((s) => s.value(e)).filter((v) => v != null));
  const top = niceCeiling(Math.max(1, ...values));
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (t) => MARGIN.left + (t1 === t0 ? plotWidth / 2 : ((t - t0) / (t1 - t0)) * plotWidth);
  const y = (v) => MARGIN.top + plotHeight - (Math.max(0, v) / top) * plotHeight;

  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart",
    role: "img",
    "aria-label": `Duration and lag of the last ${runs.length} runs`,
  });
  for (const fraction of [0, 0.5, 1]) {
    const level = y(top * fraction);
    root.append(
      svg("line", { class: "grid", x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: level, y2: level }),
      svg("text", { class: "axis", x: MARGIN.left - 6, y: level + 4, "text-anchor": "end" },
        duration(top * fraction)),
    );
  }
  const ends = t1 === t0 ? [[t0, "middle"]] : [[t0, "start"], [t1, "end"]];
  for (const [t, anchor] of ends) {
    root.append(svg("text", { class: "axis", x: x(t), y: HEIGHT - 6, "text-anchor": anchor },
      inZone(new Date(t).toISOString(), zone)));
  }
  for (const series of SERIES) {
    const points = runs
      .map(({ e, t }) => ({ e, t, v: series.value(e) }))
      .filter((p) => p.v != null);
    if (points.length === 0) continue;
    root.append(svg("polyline", {
      class: `series series-${series.key}`,
      points: points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" "),
    }));
    for (const p of points) {
      root.append(svg("circle", { class: `point series-${series.key}`, cx: x(p.t), cy: y(p.v), r: 2.5 },
        svg("title", {}, `${inZone(p.e.scheduledAt, zone)}: ${series.label} ${duration(p.v)}`)));
    }
  }
  return root;
}
