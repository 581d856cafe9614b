// <clickacall-dash-call call="ID">: one call's detail page (/dashboard/calls/{id}): what
// happened when (clicked, the visitor's connection check per transport, whom it rang, who
// declined, who answered, how it ended, a callback request), the facts of the call (link,
// media chosen and relayed, relay region, visitor's browser and region), the quality our
// relay measured per direction (loss, jitter, MOS) and per relay allocation, and the date the
// tenant's retention deletes the record.
//
// Attributes in: call (the call's id), lang. DOM events out: none.
// Requests: /v1/dashboard/calls/{id} (api.js).

import { h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";
import { get } from "./api.js";
import { length, mosCell } from "./calls.js";
import { table, when } from "./ui.js";

/**
 * @typedef {{loss_pct: number | null, jitter_ms: number | null, mos: number | null}} Leg
 * @typedef {{packets: number, bytes: number, lost: number, loss_pct: number | null,
 *   jitter_ms: number, mos: number | null}} Flow
 * @typedef {{node_id: string, allocation: string, role: string, final: boolean,
 *   to_peer: Flow | null, to_client: Flow | null}} Allocation
 * @typedef {{kind: string, at: number | null, staff: string[], detail: Record<string, any>}} Step
 * @typedef {{id: string, created_at: number, duration: number | null, outcome: string,
 *   link_name: string | null, staff_name: string | null, media: string[], relay_region: string | null,
 *   bytes: number, from_visitor: Leg, to_visitor: Leg, mos: number | null, quality_final: boolean,
 *   visitor: {browser: string | null, os: string | null, region: string | null},
 *   allocations: Allocation[], call_ref: string | null, chosen_media: string | null,
 *   end_reason: string | null, timeline: Step[], retention_months: number, kept_until: number}} Detail
 */

/**
 * "1.5 %", "12 ms", or a dash.
 * @param {number | null | undefined} v
 * @param {string} unit
 */
function figure(v, unit) {
  return v === null || v === undefined ? "—" : `${Number(v.toFixed(2))} ${unit}`;
}

/** @param {number} n */
function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export class DashCall extends HTMLElement {
  constructor() {
    super();
    this.t = translator("en");
    /** @type {import("../i18n.js").Lang} */
    this.language = "en";
  }

  connectedCallback() {
    this.language = pickLang(this);
    this.t = translator(this.language);
    this.replaceChildren(h("p", { class: "dash-card", text: this.t("dash.loading") }));
    this.load();
  }

  async load() {
    const t = this.t;
    const id = this.getAttribute("call") || "";
    let d;
    try {
      d = /** @type {Detail} */ (await get(`/v1/dashboard/calls/${encodeURIComponent(id)}`));
    } catch (err) {
      this.replaceChildren(this.back(), h("p", { class: "dash-card error", text: t("dash.load_failed", { message: String(err instanceof Error ? err.message : err) }) }));
      return;
    }
    const ref = d.call_ref || d.id;
    document.title = `${t("dash.call.title", { ref })} · ${t("dash.title")}`;
    this.replaceChildren(
      this.back(),
      h("h2", { class: "dash-call-title", text: t("dash.call.title", { ref }) }),
      this.facts(d),
      this.timeline(d),
      this.quality(d),
    );
  }

  back() {
    return h("p", { class: "dash-back" }, h("a", { href: "/dashboard/calls", text: this.t("dash.call.back") }));
  }

  /** @param {Detail} d */
  facts(d) {
    const t = this.t;
    const lang = this.language;
    const visitor = [d.visitor.browser, d.visitor.os].filter(Boolean).join(", ") || "—";
    /** @type {Array<[string, Node | string]>} */
    const items = [
      [t("dash.call.started"), when(lang, d.created_at)],
      [t("dash.calls.col_outcome"), h("span", { class: `dash-outcome dash-outcome-${d.outcome}`, text: t(`dash.calls.outcome.${d.outcome}`) })],
      [t("dash.calls.col_link"), d.link_name || t("dash.calls.deleted_link")],
      [t("dash.call.answered_by"), d.staff_name || "—"],
      [t("dash.calls.col_duration"), length(d.duration)],
      [t("dash.call.chosen"), d.chosen_media ? t(`dash.call.chosen.${d.chosen_media}`) : "—"],
      [t("dash.call.relayed"), d.media.length ? d.media.map((m) => t(`dash.calls.kind.${m}`)).join(", ") : t("dash.call.none")],
      [t("dash.call.region"), d.relay_region || "—"],
      [t("dash.call.volume"), bytes(d.bytes)],
      [t("dash.call.visitor"), d.visitor.region ? `${visitor} · ${d.visitor.region}` : visitor],
      [t("dash.call.kept"), t("dash.call.kept_until", { date: new Intl.DateTimeFormat(lang, { dateStyle: "long" }).format(new Date(d.kept_until * 1000)), n: d.retention_months })],
    ];
    const dl = h("dl", { class: "dash-facts" });
    for (const [term, value] of items) dl.append(h("div", {}, h("dt", { text: term }), h("dd", {}, value)));
    return h("section", { class: "dash-card", "aria-labelledby": "call-facts-title" }, h("h3", { id: "call-facts-title", text: t("dash.call.facts") }), dl);
  }

  /** @param {Detail} d */
  timeline(d) {
    const t = this.t;
    const ol = h("ol", { class: "dash-timeline" });
    for (const s of d.timeline) {
      const at = s.at === null ? "" : new Intl.DateTimeFormat(this.language, { timeStyle: "medium" }).format(new Date(s.at * 1000));
      ol.append(h("li", { class: `dash-step dash-step-${s.kind}` }, h("span", { class: "dash-step-time", text: at }), h("span", { class: "dash-step-text" }, ...this.step(s))));
    }
    return h("section", { class: "dash-card", "aria-labelledby": "call-timeline-title" }, h("h3", { id: "call-timeline-title", text: t("dash.call.timeline") }), ol);
  }

  /**
   * @param {Step} s
   * @returns {Array<Node | string>}
   */
  step(s) {
    const t = this.t;
    const names = s.staff.join(", ");
    switch (s.kind) {
      case "clicked":
        return [s.detail.media ? t("dash.call.step.clicked_media", { media: t(`dash.call.chosen.${s.detail.media}`) }) : t("dash.call.step.clicked")];
      case "check": {
        const parts = Object.entries(s.detail.transports || {}).map(([name, v]) => `${name.toUpperCase()} ${t(`dash.call.transport.${v}`)}`);
        const text = t("dash.call.step.check", { verdict: t(`dash.call.verdict.${s.detail.verdict}`), ms: ((s.detail.ms || 0) / 1000).toFixed(1) });
        return [text, parts.length ? h("span", { class: "dash-muted", text: ` (${parts.join(", ")})` }) : ""];
      }
      case "rang":
        if (s.detail.now) return [names ? t("dash.call.step.rang_now", { names }) : t("dash.call.step.rang_nobody_now")];
        return [names ? t("dash.call.step.rang", { names }) : t("dash.call.step.rang_nobody")];
      case "declined":
      case "answered":
        return [t(`dash.call.step.${s.kind}`, { names })];
      case "callback":
        return [t("dash.call.step.callback", { state: t(`dash.call.callback.${s.detail.state}`) })];
      default: {
        const out = t(`dash.calls.outcome.${s.kind}`);
        return [s.detail.reason ? t("dash.call.step.end_reason", { outcome: out, reason: s.detail.reason }) : out];
      }
    }
  }

  /** @param {Detail} d */
  quality(d) {
    const t = this.t;
    const card = h("section", { class: "dash-card", "aria-labelledby": "call-quality-title" }, h("h3", { id: "call-quality-title", text: t("dash.call.quality") }));
    if (!d.allocations.length) {
      card.append(h("p", { text: t("dash.call.no_quality") }));
      return card;
    }
    const cols = [t("dash.call.direction"), t("dash.call.loss"), t("dash.call.jitter"), t("dash.calls.col_mos")];
    const leg = (/** @type {string} */ name, /** @type {Leg} */ l) => [name, figure(l.loss_pct, "%"), figure(l.jitter_ms, "ms"), mosCell(l.mos, t)];
    card.append(
      h("p", { class: "dash-hint", text: d.quality_final ? t("dash.call.quality_final") : t("dash.call.quality_partial") }),
      table(t("dash.call.quality"), cols, [leg(t("dash.call.from_visitor"), d.from_visitor), leg(t("dash.call.to_visitor"), d.to_visitor)]),
    );
    const rows = [];
    for (const a of d.allocations) {
      for (const [dir, f] of /** @type {const} */ ([["to_peer", a.to_peer], ["to_client", a.to_client]])) {
        if (!f) continue;
        rows.push([t(`dash.call.role.${a.role}`), t(`dash.call.dir.${dir}`), a.node_id, String(f.packets), String(f.lost), figure(f.loss_pct, "%"), figure(f.packets ? f.jitter_ms : null, "ms"), mosCell(f.mos, t)]);
      }
    }
    const acols = ["party", "flow", "node", "packets", "lost", "loss", "jitter"].map((c) => t(`dash.call.${c}`));
    card.append(h("h4", { text: t("dash.call.allocations") }), table(t("dash.call.allocations"), [...acols, t("dash.calls.col_mos")], rows));
    return card;
  }
}

customElements.define("clickacall-dash-call", DashCall);
