// Instants and durations for people. The API speaks UTC (RFC 3339 with a Z);
// the dashboard shows each job's instants in the job's own time zone, with
// the UTC offset, so a reader sees what the schedule sees.

const DAY_MS = 86_400_000;
const MAX_DATE_MS = 8.64e15; // the latest instant a Date holds
const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const formatters = new Map();

function formatter(zone) {
  if (!formatters.has(zone)) {
    formatters.set(
      zone,
      new Intl.DateTimeFormat("en-GB", {
        timeZone: zone,
        hourCycle: "h23",
        year: "numeric",
        month: "2-digit",
        day: "2-digit",
        hour: "2-digit",
        minute: "2-digit",
        second: "2-digit",
        weekday: "short",
        timeZoneName: "longOffset",
      }),
    );
  }
  return formatters.get(zone);
}

function parts(iso, zone) {
  try {
    const found = {};
    for (const part of formatter(zone).formatToParts(new Date(iso))) found[part.type] = part.value;
    return found;
  } catch {
    return null; // a zone this browser does not know
  }
}

function offsetText(name) {
  // "GMT+02:00" -> "+02:00"; "GMT" -> "+00:00"
  const offset = (name || "").replace(/^GMT|^UTC/, "");
  return offset === "" ? "+00:00" : offset;
}

// The UTC offset of `zone` at instant `iso`, as "+02:00", or null.
export function offsetAt(iso, zone) {
  const found = parts(iso, zone);
  return found ? offsetText(found.timeZoneName) : null;
}

// "Sun 2026-03-29 03:00:00 +02:00": `iso` in `zone`, falling back to UTC.
export function inZone(iso, zone) {
  if (!iso) return "";
  const found = parts(iso, zone || "UTC");
  if (!found) return utc(iso);
  const date = `${found.year}-${found.month}-${found.day}`;
  const time = `${found.hour}:${found.minute}:${found.second}`;
  return `${found.weekday} ${date} ${time} ${offsetText(found.timeZoneName)}`;
}

// `iso` as `zone`'s clocks read it, in the form a datetime-local input takes
// ("2026-03-29T03:00:00"), or "" for a zone this browser does not know.
export function wallTime(iso, zone) {
  const found = parts(iso, zone || "UTC");
  if (!found) return "";
  return `${found.year}-${found.month}-${found.day}T${found.hour}:${found.minute}:${found.second}`;
}

function offsetMs(offset) {
  const match = offset.match(/^([+-])(\d{2}):?(\d{2})?(?::?(\d{2}))?$/);
  if (!match) return null;
  const [, sign, hours, minutes, seconds] = match;
  const ms = ((+hours * 60 + +(minutes ?? 0)) * 60 + +(seconds ?? 0)) * 1000;
  return sign === "-" ? -ms : ms;
}

// The instant (UTC ISO) at which `zone`'s clocks read `wall`
// ("2026-03-29T03:00" or with seconds), or null. A wall time that a DST
// change repeats is its earlier instant; one that it skips is read with the
// offset before the change (02:30 on a night that jumps from 02:00 to 03:00
// is 03:30 after it).
export function fromWallTime(wall, zone) {
  const match = String(wall).match(/^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?$/);
  if (!match) return null;
  const [, year, month, day, hour, minute, second] = match;
  const asUtc = Date.UTC(+year, +month - 1, +day, +hour, +minute, +(second ?? 0));
  if (!(Math.abs(asUtc) < MAX_DATE_MS - 2 * DAY_MS)) return null;
  const offset = (t) => {
    const text = offsetAt(new Date(t).toISOString(), zone || "UTC");
    return text === null ? null : offsetMs(text);
  };
  // Offsets are within a day of UTC and change at most once around a wall time.
  const before = offset(asUtc - DAY_MS);
  const after = offset(asUtc + DAY_MS);
  if (before === null || after === null) return null;
  const readings = [asUtc - before, asUtc - after].filter((t) => offset(t) === asUtc - t);
  return new Date(readings.length ? Math.min(...readings) : asUtc - before).toISOString();
}

// The pieces of a local ISO instant as the API sends it
// ("2026-03-29T03:00:00+02:00"); its offset is the one the server computed.
export function splitLocal(local) {
  const match = String(local).match(
    /^(\d{4})-(\d{2})-(\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z|[+-]\d{2}:\d{2}(?::\d{2})?)$/,
  );
  if (!match) return { text: String(local), offset: null };
  const [, year, month, day, time, zoneOffset] = match;
  const weekday = WEEKDAYS[new Date(Date.UTC(+year, +month - 1, +day)).getUTCDay()];
  const offset = zoneOffset === "Z" ? "+00:00" : zoneOffset;
  return { text: `${weekday} ${year}-${month}-${day} ${time}`, offset };
}

// "2026-03-29 01:00:00 UTC"
export function utc(iso) {
  if (!iso) return "";
  return `${String(iso).replace("T", " ").replace(/\.\d+Z$|Z$/, "")} UTC`;
}

// "in 5 s", "3 min ago", "now"
export function relative(iso, now = Date.now()) {
  const ms = Date.parse(iso) - now;
  if (Number.isNaN(ms)) return "";
  const seconds = Math.round(Math.abs(ms) / 1000);
  if (seconds < 1) return "now";
  let text;
  if (seconds < 60) text = `${seconds} s`;
  else if (seconds < 3600) text = `${Math.round(seconds / 60)} min`;
  else if (seconds < 2 * 86400) text = `${Math.round(seconds / 3600)} h`;
  else text = `${Math.round(seconds / 86400)} days`;
  return ms > 0 ? `in ${text}` : `${text} ago`;
}

// "250 ms", "1.25 s", "2 min 5 s"
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (Math.abs(ms) < 1000) return `${Math.round(ms)} ms`;
  if (Math.abs(ms) < 60000) return `${(ms / 1000).toFixed(2)} s`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

// An execution's lag: how late its first attempt started after its tick.
export function lagMs(execution) {
  if (!execution.executedAt || !execution.scheduledAt) return null;
  return Date.parse(execution.executedAt) - Date.parse(execution.scheduledAt);
}
