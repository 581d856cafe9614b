// <clickacall-dash-analytics>: the Analytics section. Four charts of the business's calls per
// day, ISO week or month (UTC, as the API counts them): calls, answered rate, minutes talked
// and the volume our relays carried; overall, or one line per link or per staff member with a
// legend. The numbers are the API's (GET /v1/dashboard/analytics answers what GET
// /v1/analytics does); the charts are drawn with uPlot, served from our own origin
// (/static/vendor/uplot/, copied from node_modules by make) and loaded only here.
//
// Each chart has its equivalent in text: a caption with the total, and the same numbers as a
// table (periods down, series across, totals in the footer) in a <details> below it. The
// charts follow their container's width (a ResizeObserver), so they fit a phone. Series differ
// by dash pattern as well as colour.
//
// The choices live in the page's URL (?period=day|week|month&by=none|link|staff&from=&to=,
// dates YYYY-MM-DD, whole UTC days), so a view can be bookmarked and reached with Back; empty
// dates are the API's defaults (30 days, 12 weeks or 12 months up to today). Bad input comes
// back from the server naming its field and is shown beside it.
//
// Attributes in: lang. DOM events out: none. Requests: /v1/dashboard/analytics (api.js).

import { announce, h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";
import { ApiFail, get } from "./api.js";
import { DAY, humanBytes, periodStarts, seriesOf, total, valuesOf } from "./chartdata.js";
import { clearErrors, field, form, showError } from "./ui.js";

const PERIODS = ["day", "week", "month"];
const GROUPINGS = ["none", "link", "staff"];
const FIELDS = { period: "an-period", by: "an-by", since: "an-from", until: "an-to" };
const HEIGHT = 220;
const COLOURS = 6; // --chart-1 .. --chart-6 in dashboard.css
const DASHES = [[], [8, 4], [2, 3], [12, 4, 2, 4], [4, 4], [1, 2]];

/**
 * @typedef {import("./chartdata.js").Answer} Answer
 * @typedef {import("./chartdata.js").Bucket} Bucket
 * @typedef {import("./chartdata.js").Series} Series
 * @typedef {typeof import("./chartdata.js").FIGURES[number]} Figure
 * @typedef {import("../vendor/uplot/uPlot.esm.js").default} UPlot
 */

/**
 * The API's query for the page's choices (as in the URL).
 * @param {URLSearchParams} choices
 */
export function apiQuery(choices) {
  const q = new URLSearchParams();
  for (const name of ["period", "by"]) {
    const v = (choices.get(name) || "").trim();
    if (v) q.set(name, v);
  }
  const day = (/** @type {string} */ date, /** @type {number} */ later) => {
    const [y, m, d] = date.split("-").map(Number);
    return String(Date.UTC(y, m - 1, d + later) / 1000);
  };
  const from = choices.get("from") || "";
  const to = choices.get("to") || "";
  if (/^\d{4}-\d{2}-\d{2}$/.test(from)) q.set("since", day(from, 0));
  if (/^\d{4}-\d{2}-\d{2}$/.test(to)) q.set("until", day(to, 1));
  return q;
}

/**
 * uPlot's own stylesheet, added to the page the first time the section draws (the other
 * sections do without it); resolves once it loaded or failed.
 * @returns {Promise<void>}
 */
function stylesheet() {
  const href = new URL("../vendor/uplot/uPlot.min.css", import.meta.url).pathname;
  if (document.querySelector(`link[href="${href}"]`)) return Promise.resolve();
  const link = h("link", { rel: "stylesheet", href });
  const loaded = new Promise((resolve) => {
    link.addEventListener("load", () => resolve(undefined));
    link.addEventListener("error", () => resolve(undefined));
  });
  document.head.append(link);
  return /** @type {Promise<void>} */ (loaded);
}

export class DashAnalytics extends HTMLElement {
  constructor() {
    super();
    this.t = translator("en");
    /** @type {import("../i18n.js").Lang} */
    this.language = "en";
    this.live = h("p", { class: "visually-hidden", "aria-live": "polite" });
    this.summary = h("section", { class: "dash-card", "aria-labelledby": "an-summary-title" });
    this.charts = h("div", { class: "dash-charts" });
    /** @type {HTMLFormElement | null} */
    this.choices = null;
    /** @type {UPlot[]} */
    this.plots = [];
    this.resizer = new ResizeObserver((entries) => this.resized(entries));
    /** @type {Promise<typeof import("../vendor/uplot/uPlot.esm.js").default> | null} */
    this.library = null;
    this.loads = 0; // the newest load draws; an older answer arriving late is dropped
  }

  connectedCallback() {
    this.language = pickLang(this);
    this.t = translator(this.language);
    const t = this.t;
    const now = new URLSearchParams(location.search);
    const period = this.select("an-period", "period", t("dash.analytics.period"), PERIODS.map((p) => [p, t(`dash.analytics.period.${p}`)]));
    period.input.value = PERIODS.includes(now.get("period") || "") ? String(now.get("period")) : "day";
    const by = this.select("an-by", "by", t("dash.analytics.by"), GROUPINGS.map((g) => [g, t(`dash.analytics.by.${g}`)]));
    by.input.value = GROUPINGS.includes(now.get("by") || "") ? String(now.get("by")) : "none";
    const from = field("an-from", t("dash.analytics.from"), { type: "date", name: "from", value: now.get("from") || "" });
    const to = field("an-to", t("dash.analytics.to"), { type: "date", name: "to", value: now.get("to") || "" });
    const choices = form(
      "analytics-choices",
      h("div", { class: "dash-filter-grid" }, period.wrap, by.wrap, from.wrap, to.wrap),
      h("p", { class: "dash-hint", id: "an-dates-hint", text: t("dash.analytics.dates_hint") }),
      h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "primary", text: t("dash.analytics.show") })),
    );
    for (const input of [from.input, to.input]) input.setAttribute("aria-describedby", "an-dates-hint");
    this.choices = choices;
    choices.addEventListener("submit", (e) => {
      e.preventDefault();
      this.remember();
    });
    // a new period or grouping shows at once; dates wait for the button (typing one is several steps)
    for (const select of [period.input, by.input]) select.addEventListener("change", () => this.remember());
    this.replaceChildren(
      this.live,
      h("section", { class: "dash-card", "aria-labelledby": "an-choices-title" }, h("h2", { id: "an-choices-title", text: t("dash.analytics.choices_title") }), choices),
      this.summary,
      this.charts,
    );
    this.load();
  }

  disconnectedCallback() {
    this.resizer.disconnect();
    for (const p of this.plots) p.destroy();
    this.plots = [];
  }

  /** The form's choices into the URL (so Back and bookmarks keep them), then draw them. */
  remember() {
    const choices = /** @type {HTMLFormElement} */ (this.choices);
    const q = new URLSearchParams();
    for (const [name, value] of new FormData(choices)) {
      const v = String(value).trim();
      if (v && !(name === "period" && v === "day") && !(name === "by" && v === "none")) q.set(name, v);
    }
    const url = `${location.pathname}${q.size ? `?${q}` : ""}`;
    if (url !== location.pathname + location.search) history.pushState({ section: "analytics" }, "", url);
    this.load();
  }

  /**
   * A labelled select; its errors sit beside it as for inputs.
   * @param {string} id
   * @param {string} name
   * @param {string} label
   * @param {string[][]} options [value, text]
   */
  select(id, name, label, options) {
    const input = h("select", { id, name }, ...options.map(([value, text]) => h("option", { value, text })));
    const error = h("p", { class: "error", id: `${id}-error`, hidden: true });
    return { wrap: h("div", { class: "dash-field" }, h("label", { for: id, text: label }), input, error), input };
  }

  async load() {
    const t = this.t;
    const mine = ++this.loads;
    const choices = /** @type {HTMLFormElement} */ (this.choices);
    clearErrors(choices);
    this.library ??= Promise.all([import("../vendor/uplot/uPlot.esm.js"), stylesheet()]).then(([m]) => m.default);
    this.library.catch(() => {}); // reported where it is awaited
    this.setAttribute("aria-busy", "true");
    /** @type {Answer} */
    let answer;
    try {
      answer = await get(`/v1/dashboard/analytics?${apiQuery(new URLSearchParams(location.search))}`);
    } catch (err) {
      if (mine !== this.loads) return;
      this.removeAttribute("aria-busy");
      this.clear();
      if (err instanceof ApiFail && err.status === 422) {
        showError(choices, err, FIELDS);
        this.summary.replaceChildren(h("h2", { id: "an-summary-title", text: t("dash.analytics.summary") }), h("p", { text: t("dash.analytics.fix") }));
        return;
      }
      this.summary.replaceChildren(h("h2", { id: "an-summary-title", text: t("dash.analytics.summary") }), h("p", { class: "error", text: t("dash.load_failed", { message: String(err instanceof Error ? err.message : err) }) }));
      return;
    }
    /** @type {typeof import("../vendor/uplot/uPlot.esm.js").default | null} */
    let uPlot = null;
    let broken = "";
    try {
      uPlot = await this.library;
    } catch (err) {
      this.library = null; // try again next time
      broken = String(err instanceof Error ? err.message : err);
    }
    if (mine !== this.loads) return;
    this.removeAttribute("aria-busy");
    this.clear();
    this.draw(answer, uPlot, broken);
  }

  clear() {
    this.resizer.disconnect();
    for (const p of this.plots) p.destroy();
    this.plots = [];
    this.charts.replaceChildren();
  }

  /**
   * @param {Answer} answer
   * @param {typeof import("../vendor/uplot/uPlot.esm.js").default | null} uPlot null: charts could not load
   * @param {string} broken why not
   */
  draw(answer, uPlot, broken) {
    const t = this.t;
    const lang = this.language;
    const number = new Intl.NumberFormat(lang, { maximumFractionDigits: 2 });
    const period = answer.period;
    const range = t("dash.analytics.range", { from: this.date(answer.since, "day"), to: this.date(answer.until - DAY, "day") });
    const tot = answer.totals;
    const rate = tot.answered_rate === null ? "—" : this.percent(tot.answered_rate);
    const facts = [
      [t("dash.analytics.calls"), number.format(tot.calls)],
      [t("dash.analytics.answered_rate"), tot.calls ? t("dash.analytics.answered_of", { rate, answered: number.format(tot.answered), calls: number.format(tot.calls) }) : "—"],
      [t("dash.analytics.minutes"), number.format(tot.minutes)],
      [t("dash.analytics.bytes"), humanBytes(tot.bytes, lang)],
    ];
    this.summary.replaceChildren(
      h("h2", { id: "an-summary-title", text: t("dash.analytics.summary") }),
      h("p", { class: "dash-summary", id: "an-range", text: range }),
      h("dl", { class: "dash-facts dash-totals" }, ...facts.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { text: v })))),
    );
    if (!answer.buckets.length) {
      this.charts.replaceChildren(h("p", { class: "dash-card dash-empty", text: t("dash.analytics.empty") }));
      announce(this.live, t("dash.analytics.empty"));
      return;
    }
    const starts = periodStarts(answer.since, answer.until, period);
    const series = seriesOf(answer);
    const names = series.map((s) => this.nameOf(s, answer.by));
    if (!uPlot) this.charts.append(h("p", { class: "dash-card error", text: t("dash.analytics.no_charts", { message: broken }) }));
    /** @type {[Figure, (v: number) => string][]} */
    const figures = [
      ["calls", (v) => number.format(v)],
      ["answered_rate", (v) => `${number.format(v)} %`],
      ["minutes", (v) => number.format(v)],
      ["bytes", (v) => humanBytes(v, lang)],
    ];
    for (const [figure, format] of figures) this.chartCard(answer, figure, series, names, starts, uPlot, format);
    announce(this.live, t("dash.analytics.shown", { calls: number.format(tot.calls), range }));
  }

  /**
   * One figure's card, added to the charts: heading, chart (hidden from assistive tech: the
   * table is its equivalent), caption with the total, the table.
   * @param {Answer} answer
   * @param {Figure} figure
   * @param {Series[]} series
   * @param {string[]} names
   * @param {number[]} starts
   * @param {typeof import("../vendor/uplot/uPlot.esm.js").default | null} uPlot
   * @param {(v: number) => string} format for the axis and the live legend (rates in percent)
   */
  chartCard(answer, figure, series, names, starts, uPlot, format) {
    const t = this.t;
    const id = `an-${figure.replace("_", "-")}`;
    const title = t(`dash.analytics.${figure}`);
    const per = t(`dash.analytics.per.${answer.period}`);
    const overall = answer.totals[figure];
    const cell = (/** @type {number | null} */ v) => (v === null ? "—" : figure === "answered_rate" ? this.percent(v) : format(v));
    const caption = t("dash.analytics.caption", { figure: title, per, total: cell(overall) });
    const plot = h("div", { class: "dash-chart-plot", "aria-hidden": "true" });
    const card = h(
      "section",
      { class: "dash-card dash-chart-card", "aria-labelledby": `${id}-title`, "data-figure": figure },
      h("h2", { id: `${id}-title`, text: `${title} ${per}` }),
      h("figure", { class: "dash-chart" }, plot, h("figcaption", { class: "dash-summary", text: caption })),
      h(
        "details",
        { class: "dash-chart-numbers" },
        h("summary", { text: t("dash.analytics.numbers") }),
        this.numbers(answer, figure, series, names, caption, cell),
      ),
    );
    this.charts.append(card); // first, so the chart takes its container's width
    if (uPlot) this.chart(uPlot, plot, figure, series, names, starts, answer.period, format);
  }

  /**
   * The chart's numbers as a table: a row per period with calls, a column per series (and
   * "all" when grouped), the totals in the footer. Each cell carries the API's value and its
   * series' key (`data-key`: "" for all calls or for those nobody answered, "*" for the sum).
   * @param {Answer} answer
   * @param {Figure} figure
   * @param {Series[]} series
   * @param {string[]} names
   * @param {string} caption
   * @param {(v: number | null) => string} cell
   */
  numbers(answer, figure, series, names, caption, cell) {
    const t = this.t;
    const grouped = answer.by !== "none";
    const starts = [...new Set(answer.buckets.map((b) => b.start))].sort((a, b) => a - b);
    const td = (/** @type {number | null} */ v, /** @type {string | null} */ key) =>
      h("td", { "data-value": v === null ? "" : String(v), "data-key": key === null ? "" : key, text: cell(v) });
    const head = [t(`dash.analytics.col_period.${answer.period}`), ...(grouped ? names : [t(`dash.analytics.${figure}`)])];
    if (grouped) head.push(t("dash.analytics.all"));
    const rows = starts.map((start) => {
      const here = answer.buckets.filter((b) => b.start === start);
      const cells = series.map((s) => {
        const b = s.byStart.get(start);
        if (!b) return td(figure === "answered_rate" ? null : 0, s.key);
        return td(b[figure], s.key);
      });
      if (grouped) cells.push(td(total(here, figure), "*"));
      return h("tr", { "data-start": String(start) }, h("th", { scope: "row", text: this.date(start, answer.period) }), ...cells);
    });
    const foot = series.map((s) => td(grouped ? total([...s.byStart.values()], figure) : answer.totals[figure], s.key));
    if (grouped) foot.push(td(answer.totals[figure], "*"));
    return h(
      "div",
      { class: "dash-table-wrap", role: "region", tabindex: 0, "aria-label": caption },
      h(
        "table",
        { class: "dash-table dash-numbers" },
        h("caption", { text: caption }),
        h("thead", {}, h("tr", {}, ...head.map((c, i) => h("th", { scope: "col", "data-key": i && i <= series.length ? (series[i - 1].key ?? "") : null, text: c })))),
        h("tbody", {}, ...rows),
        h("tfoot", {}, h("tr", { class: "dash-total" }, h("th", { scope: "row", text: t("dash.analytics.total") }), ...foot)),
      ),
    );
  }

  /**
   * Draw one figure with uPlot into `into`, following its width from now on.
   * @param {typeof import("../vendor/uplot/uPlot.esm.js").default} uPlot
   * @param {HTMLElement} into
   * @param {Figure} figure
   * @param {Series[]} series
   * @param {string[]} names
   * @param {number[]} starts
   * @param {import("./chartdata.js").Period} period
   * @param {(v: number) => string} format
   */
  chart(uPlot, into, figure, series, names, starts, period, format) {
    const css = getComputedStyle(this);
    const colour = (/** @type {string} */ name, /** @type {string} */ fallback) => css.getPropertyValue(name).trim() || fallback;
    const fg = colour("--muted", "#545b66");
    const grid = colour("--line", "#d5d9e0");
    const font = `12px ${css.fontFamily}`;
    const labels = starts.map((s) => this.date(s, period, true));
    const xs = starts.map((_, i) => i);
    const last = Math.max(1, xs.length - 1);
    const max = Math.max(0, ...series.flatMap((s) => valuesOf(s, starts, figure).map((v) => v ?? 0)));
    const axis = { stroke: fg, font, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const tick = (/** @type {unknown} */ _u, /** @type {number[]} */ splits) => splits.map((i) => (Number.isInteger(i) && labels[i]) || "");
    const options = {
      width: Math.max(200, Math.floor(into.clientWidth)),
      height: HEIGHT,
      legend: { show: true, live: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        // a little room around the first and last periods and above the top, so no point is cut
        x: { time: false, range: () => [-0.4, xs.length > 1 ? last + 0.4 : 0.4] },
        y: { range: () => (figure === "answered_rate" ? [0, 105] : [0, max > 0 ? max * 1.12 : 1]) },
      },
      axes: [
        { ...axis, values: tick, incrs: [1, 2, 3, 4, 5, 7, 10, 14, 15, 30, 60, 90], space: 56 },
        { ...axis, size: figure === "bytes" ? 72 : 56, values: (/** @type {unknown} */ _u, /** @type {number[]} */ splits) => splits.map(format), ...(figure === "calls" ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000] } : {}) },
      ],
      series: [
        { label: this.t(`dash.analytics.col_period.${period}`), value: (/** @type {unknown} */ _u, /** @type {number | null} */ i) => (i === null ? "—" : labels[i] ?? "—") },
        ...series.map((_, i) => ({
          label: names[i],
          stroke: colour(`--chart-${(i % COLOURS) + 1}`, "#1352c7"),
          width: 2,
          dash: DASHES[i % DASHES.length],
          spanGaps: false,
          // a dot on each period with calls (filled, so one between two gaps still shows);
          // none on the periods without, which would crowd a month of days on a phone
          points: {
            show: false,
            size: 7,
            fill: colour(`--chart-${(i % COLOURS) + 1}`, "#1352c7"),
            filter: (u, at) => xs.filter((x) => u.data[at][x] !== null && (figure === "answered_rate" || u.data[at][x] !== 0)),
          },
          value: (/** @type {unknown} */ _u, /** @type {number | null} */ v) => (v === null ? "—" : format(v)),
        })),
      ],
    };
    /** @type {import("../vendor/uplot/uPlot.esm.js").AlignedData} */
    const data = [xs, ...series.map((s) => valuesOf(s, starts, figure))];
    const plot = new uPlot(options, data, into);
    this.plots.push(plot);
    this.resizer.observe(into);
  }

  /** @param {ResizeObserverEntry[]} entries */
  resized(entries) {
    for (const entry of entries) {
      const plot = this.plots.find((p) => p.root.parentElement === entry.target);
      const width = Math.max(200, Math.floor(entry.contentRect.width));
      if (plot && Math.abs(plot.width - width) >= 1) plot.setSize({ width, height: HEIGHT });
    }
  }

  /**
   * A series' name for the legend and the table.
   * @param {Series} s
   * @param {string} by
   */
  nameOf(s, by) {
    if (by === "none") return this.t("dash.analytics.calls_all");
    if (s.key === null) return this.t("dash.analytics.unanswered");
    return s.name || this.t(by === "link" ? "dash.analytics.deleted_link" : "dash.analytics.deleted_member");
  }

  /**
   * A period's start for people, in UTC: "14 Nov 2023", "Nov 2023"; `short` for an axis.
   * @param {number} start
   * @param {string} period
   * @param {boolean} [short]
   */
  date(start, period, short = false) {
    /** @type {Intl.DateTimeFormatOptions} */
    const opts = period === "month" ? { month: "short", year: "numeric" } : short ? { day: "numeric", month: "short" } : { day: "numeric", month: "short", year: "numeric" };
    return new Intl.DateTimeFormat(this.language, { ...opts, timeZone: "UTC" }).format(new Date(start * 1000));
  }

  /** @param {number} rate 0..1 */
  percent(rate) {
    return new Intl.NumberFormat(this.language, { style: "percent", maximumFractionDigits: 1 }).format(rate);
  }
}

customElements.define("clickacall-dash-analytics", DashAnalytics);
