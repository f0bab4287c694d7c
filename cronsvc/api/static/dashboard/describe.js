// Cron expressions in words, for the common shapes only.
//
// `describe(expression)` answers a phrase ("every 5 minutes", "on weekdays at
// 09:00") or null when the expression is not one of the shapes below; the
// dashboard then shows the expression alone. It never decides what is valid:
// the API does (see /api/schedule/preview). Fields follow cronsvc: five
// (min hour dom mon dow) or six with seconds first; day 0 and 7 are Sunday.

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = [
  "January", "February", "March", "April", "May", "June",
  "July", "August", "September", "October", "November", "December",
];
const DAY_NAMES = { sun: 0, mon: 1, tue: 2, wed: 3, thu: 4, fri: 5, sat: 6 };
const MONTH_NAMES = Object.fromEntries(
  MONTHS.map((name, i) => [name.slice(0, 3).toLowerCase(), i + 1]),
);
const MACROS = {
  "@yearly": "every year on 1 January at 00:00",
  "@annually": "every year on 1 January at 00:00",
  "@monthly": "on the 1st of every month at 00:00",
  "@weekly": "every Sunday at 00:00",
  "@daily": "every day at 00:00",
  "@midnight": "every day at 00:00",
  "@hourly": "every hour, on the hour",
};
const MAX_TIMES = 4;

export function describe(expression) {
  const text = String(expression ?? "").trim().toLowerCase();
  if (!text) return null;
  if (text.startsWith("@")) return MACROS[text] ?? null;
  const fields = text.split(/\s+/);
  if (fields.length === 6) return withSeconds(fields);
  if (fields.length === 5) return withMinutes(fields, 0);
  return null;
}

function withSeconds([second, ...rest]) {
  const everyMinuteAndAbove = rest.every((field) => field === "*");
  if (everyMinuteAndAbove) {
    if (second === "*") return "every second";
    const n = step(second, 59);
    if (n) return n === 1 ? "every second" : `every ${n} seconds`;
  }
  const at = single(second, 0, 59);
  if (at === null) return null;
  return withMinutes(rest, at);
}

function withMinutes([minute, hour, dom, month, dow], second) {
  const days = dayPhrase(dom, month, dow);
  if (days === null) return null;
  if (second === 0) {
    if (minute === "*" && hour === "*") return `every minute${days.suffix}`;
    const n = step(minute, 59);
    if (n && hour === "*") return `${n === 1 ? "every minute" : `every ${n} minutes`}${days.suffix}`;
  } else if (minute === "*" && hour === "*" && days.suffix === "") {
    return `every minute at second ${second}`;
  }
  const m = single(minute, 0, 59);
  if (m === null) return null;
  if (hour === "*") {
    if (second !== 0) return null;
    return `${m === 0 ? "every hour, on the hour" : `every hour at minute ${m}`}${days.suffix}`;
  }
  const n = step(hour, 23);
  if (n) {
    const each = n === 1 ? "every hour" : `every ${n} hours`;
    if (second !== 0) return null;
    return `${each}${m === 0 ? ", on the hour" : ` at minute ${m}`}${days.suffix}`;
  }
  const span = hour.match(/^(\d+)-(\d+)$/);
  if (span && second === 0) {
    const [from, to] = [Number(span[1]), Number(span[2])];
    if (from < to && to <= 23) {
      return `every hour from ${clock(from, m, 0)} to ${clock(to, m, 0)}${days.suffix}`;
    }
  }
  const hours = values(hour, {}, 0, 23);
  if (hours === null || hours.length > MAX_TIMES) return null;
  return `${days.lead} at ${conjoin(hours.map((h) => clock(h, m, second)))}`;
}

// The days a schedule fires on: `lead` begins a sentence ("every Monday"),
// `suffix` ends one (" on Mondays"; empty for every day).
function dayPhrase(dom, month, dow) {
  if (dom !== "*" && dow !== "*") return null; // either may match: too subtle for a phrase
  const months = month === "*" ? null : values(month, MONTH_NAMES, 1, 12);
  if (month !== "*" && months === null) return null;
  const monthText = months && conjoin(months.map((m) => MONTHS[m - 1]));
  if (dom !== "*") {
    const days = values(dom, {}, 1, 31);
    if (days === null || days.length > MAX_TIMES) return null;
    const dayText = conjoin(days.map(ordinal));
    if (months && months.length === 1 && days.length === 1) {
      const text = `${days[0]} ${monthText}`;
      return { lead: `every year on ${text}`, suffix: ` on ${text}` };
    }
    const text = `the ${dayText} of ${months ? monthText : "every month"}`;
    return { lead: `on ${text}`, suffix: ` on ${text}` };
  }
  if (dow !== "*") {
    if (months) return null;
    const days = values(dow, DAY_NAMES, 0, 7);
    if (days === null) return null;
    const set = [...new Set(days.map((d) => d % 7))].sort((a, b) => a - b);
    const key = set.join(",");
    if (key === "0,1,2,3,4,5,6") return { lead: "every day", suffix: "" };
    if (key === "1,2,3,4,5") return { lead: "on weekdays", suffix: " on weekdays" };
    if (key === "0,6") return { lead: "every Saturday and Sunday", suffix: " at weekends" };
    const names = set.map((d) => DAYS[d]);
    return {
      lead: `every ${conjoin(names)}`,
      suffix: ` on ${conjoin(names.map((name) => `${name}s`))}`,
    };
  }
  if (months) return { lead: `every day in ${monthText}`, suffix: ` in ${monthText}` };
  return { lead: "every day", suffix: "" };
}

function step(field, max) {
  const match = field.match(/^\*\/(\d+)$/);
  if (!match) return null;
  const n = Number(match[1]);
  return n >= 1 && n <= max ? n : null;
}

function single(field, min, max) {
  if (!/^\d+$/.test(field)) return null;
  const n = Number(field);
  return n >= min && n <= max ? n : null;
}

// A list of numbers, names and ranges ("1-5", "mon,wed,fri"), sorted; null
// for anything else (steps, L, W, #, out of range).
function values(field, names, min, max) {
  const result = new Set();
  for (const part of field.split(",")) {
    const range = part.split("-");
    if (range.length > 2) return null;
    const [from, to] = range.map((item) =>
      Object.hasOwn(names, item) ? names[item] : single(item, min, max),
    );
    if (from === null || from === undefined || (range.length === 2 && (to === null || to < from))) {
      return null;
    }
    for (let n = from; n <= (range.length === 2 ? to : from); n++) result.add(n);
  }
  return [...result].sort((a, b) => a - b);
}

function clock(hour, minute, second) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(hour)}:${pad(minute)}${second ? `:${pad(second)}` : ""}`;
}

export function ordinal(n) {
  const tens = n % 100;
  if (tens >= 11 && tens <= 13) return `${n}th`;
  return `${n}${{ 1: "st", 2: "nd", 3: "rd" }[n % 10] ?? "th"}`;
}

function conjoin(items) {
  if (items.length <= 1) return items.join("");
  return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}
