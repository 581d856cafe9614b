// <clickacall-console>: the staff console, on `/console` once signed in (the cookie session).
// It renders a Desk (desk.js: who, presence, ringing calls, callbacks, over one socket) and,
// once a call is answered, a StaffCall (staffcall.js); the ring is ring.js.
//
// Attributes in:
//   lang   "en" | "de" (else the page's or the browser's language)
//
// DOM events out (bubbling):
//   clickacall-console-state  detail: {state}: loading | ready | in-call | offline | signed-out
//   clickacall-answered       detail: {callId}
//   clickacall-ended          detail: {callId, duration}
//
// What it shows: a presence toggle (a real button named "Available", aria-pressed), the
// "Turn on call alerts" click that unlocks sound, the ringing calls (link, waiting time,
// browser, OS, region — never an address) with Answer and Decline, the wrap-up countdown
// with Ready, the open callback requests with Mark done, and the in-call view (the visitor's
// video large, their shared screen larger still, the own preview, Mute, Camera, Share
// screen, Hang up, timer, quality, reconnecting).

import { announce, h, icon, setPressed } from "../dom.js";
import { clock, pickLang, translator } from "../i18n.js";
import * as devices from "../call/devices.js";
import { Desk } from "./desk.js";
import { Ringer } from "./ring.js";
import { StaffCall } from "./staffcall.js";

export class ClickacallConsole extends HTMLElement {
  constructor() {
    super();
    this.t = translator("en");
    this.desk = new Desk();
    this.ringer = new Ringer();
    /** @type {StaffCall | null} */
    this.call = null;
    /** @type {{callId: string, linkName: string} | null} */
    this.callInfo = null;
    /** @type {Record<string, any>} */
    this.ui = {};
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.ticker = undefined;
    /** @type {Set<string>} */
    this.notified = new Set();
    this.built = false;
  }

  connectedCallback() {
    if (this.built) return;
    this.built = true;
    this.t = translator(pickLang(this));
    this.build();
    this.desk.addEventListener("change", () => this.render());
    this.desk.addEventListener("gone", (e) => {
      const { status } = /** @type {CustomEvent} */ (e).detail;
      announce(this.ui.live, this.t(status === "answered" ? "console.answered_elsewhere" : "console.call_gone"));
    });
    this.desk.addEventListener("signed-out", () => this.ringer.stop());
    this.ticker = setInterval(() => this.tick(), 1000);
    this.render();
    this.desk.start();
  }

  disconnectedCallback() {
    clearInterval(this.ticker);
    this.ringer.stop();
    this.desk.stop();
    this.call?.finish("me");
  }

  build() {
    const t = this.t;
    const ui = this.ui;
    ui.live = h("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
    ui.heading = h("h1", { class: "cs-heading", tabindex: "-1" });
    ui.who = h("p", { class: "muted cs-who" });
    ui.presence = h("button", { type: "button", class: "cs-presence", "aria-pressed": "false", "aria-describedby": "cs-presence-text" }, h("span", { class: "cs-dot", "aria-hidden": "true" }), h("span", { text: t("console.available") }));
    ui.presenceText = h("p", { class: "cs-presence-text", id: "cs-presence-text" });
    ui.arm = h("button", { type: "button", class: "primary", text: t("console.arm") });
    ui.armBox = h("section", { class: "cs-arm" }, h("p", { text: t("console.arm_help") }), ui.arm);
    ui.offline = h("p", { class: "cs-banner", role: "alert", hidden: true });
    ui.wrapText = h("p", {});
    ui.ready = h("button", { type: "button", class: "primary", text: t("console.ready") });
    ui.wrapup = h("section", { class: "cs-wrapup", hidden: true }, ui.wrapText, ui.ready);
    ui.ringList = h("ul", { class: "cs-list" });
    ui.noCalls = h("p", { class: "muted", text: t("console.no_calls") });
    ui.ringing = h("section", { class: "cs-ringing", "aria-labelledby": "cs-ringing-h" }, h("h2", { id: "cs-ringing-h", text: t("console.ringing") }), ui.ringList, ui.noCalls);
    ui.cbList = h("ul", { class: "cs-list" });
    ui.noCallbacks = h("p", { class: "muted", text: t("console.no_callbacks") });
    ui.callbacks = h("section", { class: "cs-callbacks", "aria-labelledby": "cs-cb-h" }, h("h2", { id: "cs-cb-h", text: t("console.callbacks") }), ui.cbList, ui.noCallbacks);

    // the call
    ui.callTitle = h("h2", { class: "cs-call-title", tabindex: "-1" });
    ui.timer = h("span", { class: "cs-timer", role: "timer", "aria-label": t("call.timer") });
    ui.quality = h("span", { class: "cs-quality", "data-level": "unknown" });
    ui.remoteVideo = h("video", { class: "cs-remote-video", autoplay: true, playsinline: true, "aria-label": t("console.visitor_video") });
    ui.remoteScreen = h("video", { class: "cs-remote-screen", autoplay: true, playsinline: true, hidden: true, "aria-label": t("console.visitor_screen") });
    ui.remoteAudio = h("audio", { autoplay: true, class: "visually-hidden" });
    ui.preview = h("video", { class: "cs-preview", autoplay: true, playsinline: true, "aria-label": t("console.own_preview") });
    ui.preview.muted = true;
    ui.peerBanner = h("p", { class: "cs-banner cs-over", hidden: true });
    ui.selfBanner = h("p", { class: "cs-banner cs-over", hidden: true, text: t("call.reconnecting") });
    // both banners can show at once (each side lost the path): stacked, never on top of each other
    const banners = h("div", { class: "cs-overs" }, ui.selfBanner, ui.peerBanner);
    ui.stage = h("div", { class: "cs-stage" }, ui.remoteScreen, ui.remoteVideo, ui.remoteAudio, ui.preview, banners);
    ui.mute = this.control("mic", t("call.mute"));
    ui.camera = this.control("video", t("call.camera"));
    ui.share = this.control("screen", t("call.share"));
    ui.share.hidden = !devices.canShareScreen();
    ui.hangup = h("button", { type: "button", class: "danger cc-control" }, icon("hangup"), h("span", { text: t("call.hangup") }));
    ui.callView = h(
      "section",
      { class: "cs-call", hidden: true },
      h("div", { class: "cs-call-top" }, ui.callTitle, h("p", { class: "cs-meta" }, ui.timer, ui.quality)),
      ui.stage,
      h("div", { class: "cc-controls", role: "group", "aria-label": t("call.in_call_anon") }, ui.mute, ui.camera, ui.share, ui.hangup),
    );

    ui.desk = h("div", { class: "cs-desk" }, ui.ringing, ui.callbacks);
    ui.root = h(
      "div",
      { class: "cs", "data-state": "loading" },
      ui.live,
      h("header", { class: "cs-top" }, h("div", {}, ui.heading, ui.who), h("div", { class: "cs-presence-box" }, ui.presence, ui.presenceText)),
      ui.offline,
      ui.armBox,
      ui.wrapup,
      ui.callView,
      ui.desk,
    );
    this.replaceChildren(ui.root);

    ui.presence.addEventListener("click", () => {
      const on = ui.presence.getAttribute("aria-pressed") !== "true";
      this.desk.setPresence(on ? "available" : "away");
    });
    ui.arm.addEventListener("click", async () => {
      await this.ringer.arm();
      this.render();
      announce(ui.live, t("console.armed"));
      ui.heading.focus();
    });
    ui.ready.addEventListener("click", () => this.desk.ready());
    ui.mute.addEventListener("click", () => {
      const muted = ui.mute.getAttribute("aria-pressed") !== "true";
      this.call?.setMuted(muted);
      setPressed(ui.mute, muted);
      ui.mute.replaceChild(icon(muted ? "mic-off" : "mic"), ui.mute.firstChild);
      announce(ui.live, t(muted ? "call.muted" : "call.unmuted"));
    });
    ui.camera.addEventListener("click", async () => {
      const on = ui.camera.getAttribute("aria-pressed") !== "true";
      const now = Boolean(await this.call?.setCamera(on));
      setPressed(ui.camera, now);
      ui.camera.replaceChild(icon(now ? "video" : "video-off"), ui.camera.firstChild);
      ui.preview.hidden = !now;
      announce(ui.live, t(now ? "call.camera_on" : "call.camera_off"));
    });
    ui.share.addEventListener("click", async () => {
      const on = ui.share.getAttribute("aria-pressed") !== "true";
      const sharing = Boolean(await this.call?.setScreen(on));
      setPressed(ui.share, sharing);
      announce(ui.live, t(sharing ? "call.sharing" : "call.sharing_stopped"));
    });
    ui.hangup.addEventListener("click", () => this.call?.hangup());
  }

  /**
   * @param {import("../dom.js").IconName} iconName
   * @param {string} label
   */
  control(iconName, label) {
    return h("button", { type: "button", class: "cc-control", "aria-pressed": "false" }, icon(iconName), h("span", { text: label }));
  }

  get state() {
    if (this.call) return "in-call";
    return this.desk.state;
  }

  render() {
    const ui = this.ui;
    const t = this.t;
    const desk = this.desk;
    const state = this.state;
    const before = ui.root.getAttribute("data-state");
    ui.root.setAttribute("data-state", state);
    if (before !== state) this.dispatchEvent(new CustomEvent("clickacall-console-state", { bubbles: true, detail: { state } }));
    const me = desk.me;
    ui.heading.textContent = me ? t("console.heading", { tenant: me.tenant.name }) : t("call.loading");
    ui.who.textContent = me ? t("console.signed_in", { name: me.staff.name }) : "";
    ui.offline.hidden = !(state === "offline" || state === "signed-out");
    ui.offline.replaceChildren(state === "signed-out" ? h("a", { href: "/console/signin", text: t("console.signed_out") }) : t("console.offline"));
    const available = desk.presence.status === "available";
    setPressed(ui.presence, available);
    ui.presence.disabled = state === "signed-out";
    ui.presenceText.textContent = available ? t("console.status_available") : desk.presence.reason === "missed" ? t("console.status_away_missed") : t("console.status_away");
    ui.armBox.hidden = this.ringer.armed || state === "signed-out";
    ui.callView.hidden = !this.call;
    ui.desk.hidden = Boolean(this.call) || state === "signed-out" || state === "loading";
    this.renderRinging();
    this.renderCallbacks();
    this.tick();
  }

  renderRinging() {
    const ui = this.ui;
    const t = this.t;
    const desk = this.desk;
    const items = [...desk.ringing.values()].sort((a, b) => a.call.created_at - b.call.created_at);
    const known = new Map([...ui.ringList.children].map((li) => [li.getAttribute("data-call"), li]));
    const keep = [];
    for (const r of items) {
      let li = known.get(r.call.id);
      if (!li) {
        const answer = h("button", { type: "button", class: "primary" }, icon("phone"), h("span", { text: t("console.answer") }));
        const decline = h("button", { type: "button", class: "danger", text: t("console.decline") });
        answer.addEventListener("click", () => this.answer(r.call.id, r.link_name, r.call.media || r.media));
        decline.addEventListener("click", () => desk.decline(r.call.id).catch(() => {}));
        const unknown = t("console.unknown");
        const media = r.call.media || (r.media.includes("video") ? "video" : "voice");
        li = h(
          "li",
          { "data-call": r.call.id, "data-created": String(r.call.created_at) },
          h("p", { class: "cs-item-title" }, h("span", { class: "cs-media", text: t(`console.media_${media === "voice" ? "voice" : "video"}`) }), " ", t("console.call_from", { link: r.link_name, browser: r.call.visitor_browser || unknown, os: r.call.visitor_os || unknown })),
          // the visitor's region as the operator's region map places them; without a map,
          // the region of the relay chosen nearest them among those the business allows
          h("p", { class: "muted cs-waiting", "data-region": r.visitor_region || r.call.relay_region || "" }),
          h("div", { class: "cs-buttons" }, answer, decline),
        );
      }
      keep.push(li);
    }
    ui.ringList.replaceChildren(...keep);
    ui.noCalls.hidden = keep.length > 0;
    const ringing = keep.length > 0 && !this.call && desk.state !== "signed-out";
    if (ringing) {
      const first = items[0];
      this.ringer.start(t("console.title_ringing", { link: first.link_name }), t("console.notify_title"), t("console.notify_body", { link: first.link_name }));
      for (const r of items) {
        if (!this.notified.has(r.call.id)) {
          this.notified.add(r.call.id);
          announce(ui.live, t("console.title_ringing", { link: r.link_name }));
        }
      }
    } else {
      this.ringer.stop();
    }
  }

  renderCallbacks() {
    const ui = this.ui;
    const t = this.t;
    const fmt = new Intl.DateTimeFormat(pickLang(this), { dateStyle: "short", timeStyle: "short" });
    ui.cbList.replaceChildren(
      ...this.desk.callbacks.map((c) => {
        const done = h("button", { type: "button", text: t("console.mark_done") });
        done.addEventListener("click", async () => {
          await this.desk.markDone(c.call.id).catch(() => {});
          announce(ui.live, t("console.marked_done"));
        });
        return h(
          "li",
          { "data-call": c.call.id },
          h("p", { text: t("console.callback_item", { name_contact: c.name_contact, link: c.link_name, when: fmt.format(new Date(c.requested_at * 1000)) }) }),
          h("div", { class: "cs-buttons" }, done),
        );
      }),
    );
    ui.noCallbacks.hidden = this.desk.callbacks.length > 0;
  }

  tick() {
    const ui = this.ui;
    const t = this.t;
    const now = Date.now() / 1000;
    for (const li of ui.ringList.children) {
      const created = Number(li.getAttribute("data-created"));
      const p = li.querySelector(".cs-waiting");
      if (p) p.textContent = t("console.call_details", { time: clock(now - created), region: p.getAttribute("data-region") || t("console.region_unknown") });
    }
    const wrap = this.desk.presence.wrapup_until;
    const inWrap = wrap !== null && wrap > now && !this.call;
    ui.wrapup.hidden = !inWrap;
    if (inWrap && wrap !== null) ui.wrapText.textContent = t("console.wrapup", { time: clock(wrap - now) });
    if (this.call) ui.timer.textContent = this.call.startedAt === null ? "0:00" : clock((Date.now() - this.call.startedAt) / 1000);
  }

  /**
   * @param {string} callId
   * @param {string} linkName
   * @param {string | string[]} media
   */
  async answer(callId, linkName, media) {
    const t = this.t;
    this.ringer.stop();
    let got;
    try {
      got = await this.desk.answer(callId);
    } catch (e) {
      const code = /** @type {any} */ (e).code || "";
      announce(this.ui.live, code === "already_answered" ? t("console.answered_elsewhere") : t("console.error", { message: String(/** @type {any} */ (e).message || e) }));
      this.desk.ringing.delete(callId);
      this.render();
      return;
    }
    const video = Array.isArray(media) ? media.includes("video") : media !== "voice";
    const call = new StaffCall({ callId, token: got.token, signal: got.signal, iceServers: got.iceServers, relayOnly: /** @type {any} */ (got).relay_only, video, linkName });
    this.call = call;
    this.callInfo = { callId, linkName };
    this.wireCall(call);
    this.ui.callTitle.textContent = t("console.in_call", { link: linkName });
    this.render();
    this.ui.callTitle.focus();
    announce(this.ui.live, t("console.in_call", { link: linkName }));
    this.dispatchEvent(new CustomEvent("clickacall-answered", { bubbles: true, detail: { callId } }));
    await call.start();
  }

  /** @param {StaffCall} call */
  wireCall(call) {
    const ui = this.ui;
    const t = this.t;
    setPressed(ui.mute, false);
    setPressed(ui.share, false);
    ui.remoteScreen.hidden = true;
    ui.stage.classList.remove("has-screen");
    call.addEventListener("local", () => {
      ui.preview.srcObject = call.stream;
      ui.preview.hidden = !call.cameraOn;
      setPressed(ui.camera, call.cameraOn);
      ui.camera.replaceChild(icon(call.cameraOn ? "video" : "video-off"), ui.camera.firstChild);
    });
    call.addEventListener("remote", (e) => {
      const { kind, track } = /** @type {CustomEvent} */ (e).detail;
      const el = kind === "audio" ? ui.remoteAudio : kind === "screen" ? ui.remoteScreen : ui.remoteVideo;
      el.srcObject = new MediaStream([track]);
      el.play?.().catch(() => {});
    });
    call.addEventListener("remote-media", (e) => {
      const m = /** @type {CustomEvent} */ (e).detail;
      ui.remoteScreen.hidden = !m.screen;
      ui.remoteVideo.hidden = !m.camera;
      ui.stage.classList.toggle("has-screen", Boolean(m.screen));
    });
    call.addEventListener("change", (e) => {
      const d = /** @type {CustomEvent} */ (e).detail;
      ui.root.setAttribute("data-call", d.state);
      ui.selfBanner.hidden = d.state !== "reconnecting";
      ui.peerBanner.hidden = !d.peerReconnecting;
      ui.peerBanner.textContent = t("console.visitor_reconnecting");
      if (d.state === "reconnecting") announce(ui.live, t("call.reconnecting"));
      if (d.state === "in-call") announce(ui.live, t("call.in_call_anon"));
    });
    call.addEventListener("quality", (e) => {
      const level = /** @type {CustomEvent} */ (e).detail.level;
      ui.quality.setAttribute("data-level", level);
      ui.quality.textContent = t("call.quality", { level: t("call.quality_" + (["good", "fair", "poor"].includes(level) ? level : "unknown")) });
    });
    call.addEventListener("screen-ended", () => setPressed(ui.share, false));
    call.addEventListener("ended", (e) => {
      const d = /** @type {CustomEvent} */ (e).detail;
      const callId = this.callInfo?.callId;
      this.call = null;
      this.callInfo = null;
      for (const v of [ui.remoteVideo, ui.remoteScreen, ui.remoteAudio, ui.preview]) v.srcObject = null;
      ui.root.removeAttribute("data-call");
      announce(ui.live, t("call.ended"));
      this.render();
      ui.heading.focus();
      this.dispatchEvent(new CustomEvent("clickacall-ended", { bubbles: true, detail: { callId, duration: d.duration } }));
    });
  }
}

if (!customElements.get("clickacall-console")) customElements.define("clickacall-console", ClickacallConsole);
