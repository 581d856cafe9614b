// <clickacall-call>: the visitor's call UI, on the link's page `/c/{public_id}` and inside the
// embed button's overlay (`?embed=1`). It renders the call's state (machine.js, driven by
// session.js) and nothing else decides anything here.
//
// Attributes in:
//   link       the link's public id (required)
//   lang       "en" | "de" (else the page's or the browser's language)
//   media      what the link allows, space-separated, preferred first: "video voice"
//   business   the business's name, link-name: the link's name (shown before the status
//              request answers; the server renders both)
//   embed      present inside the widget's iframe: the overlay's close button (a message from
//              the parent) and Escape close it, hanging up first
//
// DOM events out (bubbling, composed):
//   clickacall-state  detail: {state}  on every state change ("idle", "ringing", "in-call", ...)
//   clickacall-close  the visitor asked to close (embedded); the page also posts
//                     {type: "clickacall:close"} to the parent window
//
// Screens: pre-call (camera preview, microphone level, device pickers, Video call / Voice
// call), starting, ringing (connection check, Cancel), connecting, in call (Mute, Camera,
// Share screen, Hang up, timer, quality, the staff member's name; reconnecting banners),
// callback form, ended (duration, call reference), failed. State changes are announced in an
// aria-live region and focus moves to each new screen's heading.

import { announce, h, icon, setPressed, showOnly } from "../dom.js";
import { clock, duration as humanDuration, pickLang, translator, when } from "../i18n.js";
import * as api from "./api.js";
import * as devices from "./devices.js";
import { duration, formatRef, LIVE } from "./machine.js";
import { CallSession } from "./session.js";

/** @typedef {import("./machine.js").State} State */
/** @typedef {import("./machine.js").CallMedia} CallMedia */

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
const PHONE = /^\+?[0-9 ()./-]{5,30}$/;

export class ClickacallCall extends HTMLElement {
  constructor() {
    super();
    /** @type {import("../i18n.js").Lang} */
    this.language = "en";
    this.t = translator("en");
    /** @type {CallSession | null} */
    this.session = null;
    /** @type {import("./api.js").LinkStatus | null} */
    this.status = null;
    /** @type {Record<string, any>} */
    this.ui = {};
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.ticker = undefined;
    /** @type {(() => void) | null} */
    this.stopMeter = null;
    /** @type {unknown} why the status request failed, if it did */
    this.statusError = null;
  }

  connectedCallback() {
    if (this.session) return;
    this.language = pickLang(this);
    this.t = translator(this.language);
    const media = /** @type {CallMedia[]} */ (
      (this.getAttribute("media") || "video voice").split(/\s+/).filter((m) => m === "video" || m === "voice")
    );
    this.session = new CallSession({ link: this.getAttribute("link") || "", lang: this.language, media });
    this.build();
    this.wire(this.session);
    this.render(this.session.state);
    this.boot();
  }

  disconnectedCallback() {
    clearInterval(this.ticker);
    this.stopMeter?.();
    this.session?.teardown(true);
  }

  async boot() {
    const session = /** @type {CallSession} */ (this.session);
    const statusP = api.linkStatus(session.link).then(
      (s) => {
        this.status = s;
        if (s.media && s.media.length) session.allowed = s.media;
        this.renderStatus();
      },
      (e) => {
        this.status = null;
        this.statusError = e;
        this.renderStatus(e);
      },
    );
    await session.openDevices();
    session.resume();
    await statusP;
  }

  // --- building the DOM once --------------------------------------------------------------

  build() {
    const t = this.t;
    const business = this.getAttribute("business") || "";
    const ui = this.ui;
    ui.live = h("p", { class: "visually-hidden", role: "status", "aria-live": "polite" });
    ui.title = h("h1", { class: "cc-title", tabindex: "-1", text: t("call.heading", { business }) });
    ui.sub = h("p", { class: "cc-sub", text: this.getAttribute("link-name") || "" });
    // inside the widget's overlay, the overlay's own close button (top right) closes it
    const header = h("header", { class: "cc-head" }, h("div", { class: "cc-head-text" }, ui.title, ui.sub));

    // media stage: the other side large, our own preview small
    ui.remoteVideo = h("video", { class: "cc-remote-video", autoplay: true, playsinline: true, hidden: true });
    ui.remoteScreen = h("video", { class: "cc-remote-screen", autoplay: true, playsinline: true, hidden: true });
    ui.remoteAudio = h("audio", { autoplay: true, class: "visually-hidden" });
    ui.avatar = h("div", { class: "cc-avatar", "aria-hidden": "true" });
    ui.peerBanner = h("p", { class: "cc-banner", hidden: true });
    ui.remote = h("div", { class: "cc-remote", hidden: true }, ui.remoteScreen, ui.remoteVideo, ui.avatar, ui.remoteAudio, ui.peerBanner);
    ui.preview = h("video", { class: "cc-preview", autoplay: true, playsinline: true });
    ui.preview.muted = true;
    ui.previewOff = h("p", { class: "cc-preview-off", hidden: true }, icon("video-off"), h("span", { text: t("call.preview_off") }));
    ui.self = h("figure", { class: "cc-self" }, ui.preview, ui.previewOff, h("figcaption", { class: "visually-hidden", text: t("call.preview") }));
    ui.stage = h("section", { class: "cc-stage", "aria-label": t("call.preview") }, ui.remote, ui.self);

    // pre-call
    ui.statusLine = h("p", { class: "cc-status", text: t("call.loading") });
    ui.problem = h("p", { class: "error cc-problem", hidden: true });
    ui.problemHelp = h("p", { class: "cc-help", hidden: true });
    ui.retry = h("button", { type: "button", class: "quiet", hidden: true, text: t("call.retry_devices") });
    ui.meter = h("meter", { id: "cc-meter", min: "0", max: "1", low: "0.05", value: "0" });
    const meterRow = h("div", { class: "cc-level" }, h("label", { for: "cc-meter", text: t("call.mic_level") }), ui.meter);
    ui.cameraSelect = h("select", { id: "cc-camera" });
    ui.micSelect = h("select", { id: "cc-mic" });
    ui.cameraPick = h("div", { class: "cc-pick" }, h("label", { for: "cc-camera", text: t("call.camera_select") }), ui.cameraSelect);
    ui.micPick = h("div", { class: "cc-pick" }, h("label", { for: "cc-mic", text: t("call.mic_select") }), ui.micSelect);
    ui.video = h("button", { type: "button", class: "primary cc-choice", "data-media": "video" }, icon("video"), h("span", { text: t("button.video") }));
    ui.voice = h("button", { type: "button", class: "cc-choice", "data-media": "voice" }, icon("phone"), h("span", { text: t("button.voice") }));
    ui.askFromIdle = h("button", { type: "button", class: "quiet", hidden: true, text: t("call.callback_send") });
    const idle = h(
      "section",
      { class: "cc-panel cc-idle", "data-screen": "idle" },
      ui.statusLine,
      ui.problem,
      ui.problemHelp,
      ui.retry,
      meterRow,
      h("div", { class: "cc-pickers" }, ui.cameraPick, ui.micPick),
      h("div", { class: "cc-choices" }, ui.video, ui.voice),
      ui.askFromIdle,
      h("p", { class: "muted cc-privacy", text: t("call.privacy") }),
    );

    const checking = h("section", { class: "cc-panel", "data-screen": "checking" }, h("h2", { tabindex: "-1", class: "cc-screen-title", text: t("call.starting") }));

    ui.ringTitle = h("h2", { tabindex: "-1", class: "cc-screen-title cc-pulse", text: t("call.ringing", { business }) });
    ui.waiting = h("p", { class: "cc-waiting" });
    ui.checkLine = h("p", { class: "cc-check", "data-check": "running" });
    ui.cancel = h("button", { type: "button", class: "danger", text: t("call.cancel") });
    ui.askBlocked = h("button", { type: "button", class: "quiet", hidden: true, text: t("call.callback_send") });
    const ringing = h("section", { class: "cc-panel", "data-screen": "ringing" }, ui.ringTitle, ui.waiting, ui.checkLine, h("div", { class: "cc-actions" }, ui.cancel, ui.askBlocked));

    ui.connectingTitle = h("h2", { tabindex: "-1", class: "cc-screen-title" });
    ui.hangupEarly = h("button", { type: "button", class: "danger", text: t("call.hangup") });
    const connecting = h("section", { class: "cc-panel", "data-screen": "connecting" }, ui.connectingTitle, h("div", { class: "cc-actions" }, ui.hangupEarly));

    // in call
    ui.withName = h("h2", { class: "cc-with", tabindex: "-1" });
    ui.timer = h("span", { class: "cc-timer", role: "timer", "aria-label": t("call.timer") });
    ui.quality = h("span", { class: "cc-quality", "data-level": "unknown" });
    ui.reconnecting = h("p", { class: "cc-banner cc-self-reconnecting", hidden: true, text: t("call.reconnecting") });
    ui.mute = this.control("mic", t("call.mute"));
    ui.camera = this.control("video", t("call.camera"));
    ui.share = this.control("screen", t("call.share"));
    ui.share.hidden = !devices.canShareScreen();
    ui.hangup = h("button", { type: "button", class: "danger cc-control cc-hangup" }, icon("hangup"), h("span", { text: t("call.hangup") }));
    const incall = h(
      "section",
      { class: "cc-incall", "data-screen": "in-call" },
      h("div", { class: "cc-incall-top" }, ui.withName, h("p", { class: "cc-meta" }, ui.timer, ui.quality)),
      ui.reconnecting,
      h("div", { class: "cc-controls", role: "group", "aria-label": t("call.in_call_anon") }, ui.mute, ui.camera, ui.share, ui.hangup),
    );

    // callback
    ui.cbTitle = h("h2", { tabindex: "-1", class: "cc-screen-title" });
    ui.cbText = h("p", {});
    ui.cbName = h("input", { id: "cc-cb-name", name: "name", type: "text", autocomplete: "name", required: true, maxlength: "100" });
    ui.cbContact = h("input", { id: "cc-cb-contact", name: "contact", type: "text", inputmode: "email", autocomplete: "email", required: true, maxlength: "200" });
    ui.cbError = h("p", { class: "error", id: "cc-cb-error", role: "alert", hidden: true });
    ui.cbSend = h("button", { type: "submit", class: "primary", text: t("call.callback_send") });
    ui.cbForm = h(
      "form",
      { class: "form cc-cb-form", novalidate: true },
      h("label", { for: "cc-cb-name", text: t("call.callback_name") }),
      ui.cbName,
      h("label", { for: "cc-cb-contact", text: t("call.callback_contact") }),
      ui.cbContact,
      h("p", { class: "muted cc-notice", id: "cc-cb-notice", text: t("call.callback_notice", { business }) }),
      ui.cbError,
      ui.cbSend,
    );
    ui.cbContact.setAttribute("aria-describedby", "cc-cb-notice");
    ui.cbAgain = h("button", { type: "button", class: "quiet", text: t("call.try_again") });
    const callback = h("section", { class: "cc-panel", "data-screen": "callback" }, ui.cbTitle, ui.cbText, ui.cbForm, ui.cbAgain);

    // ended and failed
    ui.endTitle = h("h2", { tabindex: "-1", class: "cc-screen-title" });
    ui.endText = h("p", {});
    ui.refValue = h("dd", { class: "cc-ref" });
    ui.refBlock = h("dl", { class: "cc-refblock" }, h("dt", { text: t("call.reference") }), ui.refValue);
    ui.refHelp = h("p", { class: "muted", text: t("call.reference_help", { business }) });
    ui.again = h("button", { type: "button", class: "primary", text: t("call.again") });
    const ended = h("section", { class: "cc-panel", "data-screen": "ended" }, ui.endTitle, ui.endText, ui.refBlock, ui.refHelp, h("div", { class: "cc-actions" }, ui.again));
    ui.failText = h("p", {});
    ui.failAgain = h("button", { type: "button", class: "primary", text: t("call.try_again") });
    const failed = h(
      "section",
      { class: "cc-panel", "data-screen": "failed" },
      h("h2", { tabindex: "-1", class: "cc-screen-title", text: t("call.failed") }),
      ui.failText,
      h("div", { class: "cc-actions" }, ui.failAgain),
    );

    ui.screens = [idle, checking, ringing, connecting, incall, callback, ended, failed];
    ui.root = h("div", { class: "cc", "data-state": "idle" }, header, ui.live, ui.stage, ...ui.screens);
    this.replaceChildren(ui.root);
  }

  /**
   * A toggle button of the in-call bar: a real button with aria-pressed and a visible name.
   * @param {import("../dom.js").IconName} iconName
   * @param {string} label
   */
  control(iconName, label) {
    const b = h("button", { type: "button", class: "cc-control", "aria-pressed": "false" }, icon(iconName), h("span", { text: label }));
    return b;
  }

  /** @param {CallSession} session */
  wire(session) {
    const ui = this.ui;
    session.addEventListener("change", (e) => this.render(/** @type {CustomEvent} */ (e).detail));
    session.addEventListener("local", () => this.renderLocal());
    session.addEventListener("remote", (e) => this.onRemoteTrack(/** @type {CustomEvent} */ (e).detail));
    session.addEventListener("remote-media", (e) => this.onRemoteMedia(/** @type {CustomEvent} */ (e).detail));
    session.addEventListener("quality", (e) => this.renderQuality(/** @type {CustomEvent} */ (e).detail.level));
    session.addEventListener("screen-ended", () => {
      setPressed(ui.share, false);
      announce(ui.live, this.t("call.sharing_stopped"));
    });
    ui.video.addEventListener("click", () => session.start("video"));
    ui.voice.addEventListener("click", () => session.start("voice"));
    ui.cancel.addEventListener("click", () => session.cancel());
    ui.askBlocked.addEventListener("click", () => session.askCallback());
    ui.askFromIdle.addEventListener("click", () => session.askCallback(this.status?.state === "closed" ? "closed" : "unavailable"));
    ui.hangup.addEventListener("click", () => session.hangup());
    ui.hangupEarly.addEventListener("click", () => session.hangup());
    ui.again.addEventListener("click", () => this.again());
    ui.failAgain.addEventListener("click", () => this.again());
    ui.cbAgain.addEventListener("click", () => this.again());
    ui.retry.addEventListener("click", () => session.openDevices({ video: true }));
    ui.cameraSelect.addEventListener("change", () => session.openDevices({ video: true, cameraId: ui.cameraSelect.value, micId: ui.micSelect.value }));
    ui.micSelect.addEventListener("change", () => session.openDevices({ cameraId: ui.cameraSelect.value || undefined, micId: ui.micSelect.value }));
    ui.mute.addEventListener("click", () => {
      const muted = ui.mute.getAttribute("aria-pressed") !== "true";
      session.setMuted(muted);
      setPressed(ui.mute, muted);
      ui.mute.replaceChild(icon(muted ? "mic-off" : "mic"), ui.mute.firstChild);
      announce(ui.live, this.t(muted ? "call.muted" : "call.unmuted"));
    });
    ui.camera.addEventListener("click", async () => {
      const on = ui.camera.getAttribute("aria-pressed") !== "true";
      await session.setCamera(on);
      announce(ui.live, this.t(on ? "call.camera_on" : "call.camera_off"));
    });
    ui.share.addEventListener("click", async () => {
      const on = ui.share.getAttribute("aria-pressed") !== "true";
      const sharing = await session.setScreen(on);
      setPressed(ui.share, sharing);
      announce(ui.live, this.t(sharing ? "call.sharing" : "call.sharing_stopped"));
    });
    ui.cbForm.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submitCallback();
    });
    if (this.hasAttribute("embed")) {
      // the embed button's close (or Escape on its page) asks first, so we hang up cleanly
      window.addEventListener("message", (e) => {
        if (e.source === window.parent && e.data && e.data.type === "clickacall:close-request") this.close();
      });
      document.addEventListener("keydown", (e) => {
        if (e.key === "Escape" && !LIVE.has(session.state.name)) this.close();
      });
    }
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.renderPickers());
  }

  async again() {
    const session = /** @type {CallSession} */ (this.session);
    session.reset();
    await session.openDevices();
  }

  async close() {
    const session = /** @type {CallSession} */ (this.session);
    if (LIVE.has(session.state.name)) await session.hangup();
    session.teardown(true);
    this.dispatchEvent(new CustomEvent("clickacall-close", { bubbles: true, composed: true }));
    if (window.parent !== window) window.parent.postMessage({ type: "clickacall:close" }, "*");
  }

  // --- rendering ----------------------------------------------------------------------------

  /** @param {State} s */
  render(s) {
    const ui = this.ui;
    const t = this.t;
    const prev = ui.root.getAttribute("data-state");
    ui.root.setAttribute("data-state", s.name);
    ui.root.setAttribute("data-media", s.media);
    const screenName = s.name === "reconnecting" ? "in-call" : s.name;
    const screen = ui.screens.find((/** @type {HTMLElement} */ el) => el.getAttribute("data-screen") === screenName) || null;
    showOnly(ui.screens, screen);
    const inCall = s.name === "in-call" || s.name === "reconnecting" || s.name === "connecting";
    ui.remote.hidden = !inCall;
    ui.self.hidden = s.name === "ended" || s.name === "failed" || s.name === "callback";
    const name = s.staffName || t("call.staff");
    ui.avatar.textContent = (s.staffName || "?").trim().charAt(0).toUpperCase();
    ui.connectingTitle.textContent = s.staffName ? t("call.connecting", { name }) : t("call.connecting_anon");
    ui.withName.textContent = s.staffName ? t("call.with", { name }) : t("call.in_call_anon");
    ui.remoteVideo.setAttribute("aria-label", t("call.remote_video", { name }));
    ui.remoteScreen.setAttribute("aria-label", t("call.remote_screen", { name }));
    ui.reconnecting.hidden = s.name !== "reconnecting";
    ui.peerBanner.hidden = !s.peerReconnecting;
    ui.peerBanner.textContent = t("call.peer_reconnecting", { name });
    ui.camera.hidden = s.media !== "video";
    if (s.name === "ringing") this.renderCheck(s);
    if (s.name === "callback") this.renderCallback(s);
    if (s.name === "ended") this.renderEnded(s);
    if (s.name === "failed") {
      const busy = /^busy:(\d+)$/.exec(s.error || "");
      const message = s.reason === "inactive" ? t("call.state_inactive") : s.error === "network" ? t("call.network_error") : busy ? t("call.busy", { seconds: busy[1] }) : t("call.failed_text", { message: s.error || "" });
      ui.failText.textContent = message;
    }
    this.tick();
    clearInterval(this.ticker);
    if (LIVE.has(s.name)) this.ticker = setInterval(() => this.tick(), 1000);
    if (prev !== s.name) {
      this.announceState(s);
      const heading = s.name === "idle" ? ui.title : screen?.querySelector("[tabindex='-1']");
      if (heading && prev !== null && !(prev === "in-call" && s.name === "reconnecting") && !(prev === "reconnecting" && s.name === "in-call")) heading.focus();
      this.dispatchEvent(new CustomEvent("clickacall-state", { bubbles: true, composed: true, detail: { state: s.name } }));
    }
    if (s.name === "idle") this.renderStatus();
  }

  /** @param {State} s */
  announceState(s) {
    const t = this.t;
    const business = this.business();
    const name = s.staffName || t("call.staff");
    const text = {
      idle: "",
      checking: t("call.starting"),
      ringing: t("call.ringing", { business }),
      connecting: s.staffName ? t("call.connecting", { name }) : t("call.connecting_anon"),
      "in-call": s.staffName ? t("call.in_call", { name }) : t("call.in_call_anon"),
      reconnecting: t("call.reconnecting"),
      ended: t("call.ended"),
      callback: this.ui.cbTitle.textContent,
      failed: t("call.failed"),
    }[s.name];
    if (text) announce(this.ui.live, text);
  }

  business() {
    return this.status?.business || this.getAttribute("business") || "";
  }

  tick() {
    const s = this.session?.state;
    if (!s) return;
    const now = Date.now();
    if (s.name === "ringing" && s.ringingAt !== null) {
      this.ui.waiting.textContent = this.t("call.waiting", { time: clock((now - s.ringingAt) / 1000) });
    }
    const d = duration(s, now);
    this.ui.timer.textContent = d === null ? "0:00" : clock(d);
  }

  /** @param {unknown} [error] */
  renderStatus(error) {
    const ui = this.ui;
    const t = this.t;
    const st = this.status;
    const allowed = this.session?.allowed || [];
    const local = this.session?.localMedia;
    ui.video.hidden = !allowed.includes("video");
    ui.voice.hidden = !allowed.includes("voice");
    // without a camera the voice call is the one to press
    const videoFirst = Boolean(local?.video) && allowed.includes("video");
    ui.video.classList.toggle("primary", videoFirst);
    ui.voice.classList.toggle("primary", !videoFirst);
    if (error || !st) {
      // No status (yet, or it failed): stay usable; the click itself says if the link is
      // closed or nobody is there, and a network failure shows there.
      const failure = error || this.statusError;
      const offline = failure instanceof api.ApiError && failure.status === 0;
      ui.statusLine.textContent = t("call.network_error");
      ui.statusLine.hidden = !offline;
      ui.video.disabled = !local?.video;
      ui.voice.disabled = !local?.stream;
      return;
    }
    ui.statusLine.hidden = false;
    const business = st.business || this.getAttribute("business") || "";
    ui.title.textContent = t("call.heading", { business });
    ui.sub.textContent = st.name || this.getAttribute("link-name") || "";
    ui.ringTitle.textContent = t("call.ringing", { business });
    const now = Date.now() / 1000;
    ui.statusLine.setAttribute("data-link-state", st.state);
    ui.statusLine.textContent = {
      open: t("call.state_open"),
      closed: st.next_open ? t("call.state_closed", { when: when(this.language, st.next_open, now) }) : t("call.state_closed_unknown"),
      unavailable: t("call.state_unavailable"),
      inactive: t("call.state_inactive"),
    }[st.state] || "";
    const callable = st.state === "open";
    ui.video.disabled = !callable || !local?.video;
    ui.voice.disabled = !callable || !local?.stream;
    ui.askFromIdle.hidden = !(st.state === "closed" || st.state === "unavailable");
  }

  renderLocal() {
    const ui = this.ui;
    const t = this.t;
    const session = /** @type {CallSession} */ (this.session);
    const local = session.localMedia;
    const stream = local.stream;
    const showVideo = Boolean(stream && local.video && session.cameraOn && session.state.media !== "voice") || Boolean(stream && local.video && session.state.name === "idle");
    if (ui.preview.srcObject !== stream) ui.preview.srcObject = stream;
    ui.preview.hidden = !showVideo;
    ui.previewOff.hidden = showVideo;
    setPressed(ui.camera, Boolean(local.video && session.cameraOn));
    ui.camera.replaceChild(icon(local.video && session.cameraOn ? "video" : "video-off"), ui.camera.firstChild);
    if (local.problem) {
      ui.problem.hidden = false;
      ui.problem.textContent = t(devices.problemKey(local.problem));
      const needsHelp = local.problem === "denied" || local.problem === "denied-camera";
      ui.problemHelp.hidden = !needsHelp;
      ui.problemHelp.textContent = needsHelp ? t(devices.helpKey()) + (stream ? " " + t("call.voice_instead") : "") : "";
      ui.retry.hidden = !stream || local.problem === "no-mic";
    } else {
      ui.problem.hidden = ui.problemHelp.hidden = ui.retry.hidden = true;
    }
    this.stopMeter?.();
    this.stopMeter = stream ? devices.meter(stream, (v) => (ui.meter.value = v)) : null;
    ui.cameraPick.hidden = !local.video;
    this.renderPickers();
    this.renderStatus();
  }

  async renderPickers() {
    const ui = this.ui;
    const t = this.t;
    const { cameras, mics } = await devices.list();
    const stream = this.session?.localMedia.stream;
    const current = {
      cam: stream?.getVideoTracks()[0]?.getSettings().deviceId || "",
      mic: stream?.getAudioTracks()[0]?.getSettings().deviceId || "",
    };
    /**
     * @param {HTMLSelectElement} select
     * @param {MediaDeviceInfo[]} list
     * @param {string} chosen
     */
    const fill = (select, list, chosen) => {
      select.replaceChildren(
        ...list.map((d, i) => h("option", { value: d.deviceId, selected: d.deviceId === chosen, text: d.label || `${t("call.device_default")} ${i + 1}` })),
      );
      select.disabled = list.length < 2;
    };
    fill(ui.cameraSelect, cameras, current.cam);
    fill(ui.micSelect, mics, current.mic);
  }

  /**
   * @param {{kind: "audio" | "camera" | "screen", track: MediaStreamTrack}} detail
   */
  onRemoteTrack(detail) {
    const ui = this.ui;
    const el = detail.kind === "audio" ? ui.remoteAudio : detail.kind === "screen" ? ui.remoteScreen : ui.remoteVideo;
    el.srcObject = new MediaStream([detail.track]);
    el.play?.().catch(() => {});
  }

  /** @param {{camera: boolean, screen: boolean, mic: boolean}} m */
  onRemoteMedia(m) {
    const ui = this.ui;
    ui.remoteVideo.hidden = !m.camera;
    ui.remoteScreen.hidden = !m.screen;
    ui.avatar.hidden = m.camera || m.screen;
    ui.remote.classList.toggle("has-screen", m.screen);
  }

  /** @param {string} level */
  renderQuality(level) {
    const ui = this.ui;
    const word = this.t("call.quality_" + (["good", "fair", "poor"].includes(level) ? level : "unknown"));
    ui.quality.setAttribute("data-level", level);
    ui.quality.textContent = this.t("call.quality", { level: word });
  }

  /** @param {State} s */
  renderCheck(s) {
    const ui = this.ui;
    const t = this.t;
    const check = s.check || "running";
    ui.checkLine.setAttribute("data-check", check);
    ui.checkLine.textContent = t(`call.check_${check}`);
    ui.askBlocked.hidden = check !== "blocked";
    if (check === "blocked") announce(ui.live, t("call.check_blocked"));
  }

  /** @param {State} s */
  renderCallback(s) {
    const ui = this.ui;
    const t = this.t;
    const now = Date.now() / 1000;
    const title = {
      closed: t("call.callback_closed"),
      unavailable: t("call.callback_unavailable"),
      noanswer: t("call.callback_noanswer"),
      blocked: t("call.callback_blocked"),
    }[s.reason || "unavailable"] || t("call.callback_unavailable");
    ui.cbTitle.textContent = title;
    ui.cbText.textContent = s.reason === "closed" && s.nextOpen ? t("call.callback_closed_when", { when: when(this.language, s.nextOpen, now) }) : t("call.callback_text");
    ui.cbError.hidden = true;
    ui.cbSend.disabled = false;
  }

  async submitCallback() {
    const ui = this.ui;
    const t = this.t;
    const name = ui.cbName.value.trim();
    const contact = ui.cbContact.value.trim();
    ui.cbName.removeAttribute("aria-invalid");
    ui.cbContact.removeAttribute("aria-invalid");
    let bad = null;
    if (!name) bad = [ui.cbName, t("call.callback_error_name")];
    else if (!(EMAIL.test(contact) || PHONE.test(contact))) bad = [ui.cbContact, t("call.callback_error_contact")];
    if (bad) {
      ui.cbError.hidden = false;
      ui.cbError.textContent = bad[1];
      bad[0].setAttribute("aria-invalid", "true");
      bad[0].setAttribute("aria-describedby", "cc-cb-error");
      bad[0].focus();
      return;
    }
    ui.cbSend.disabled = true;
    try {
      await /** @type {CallSession} */ (this.session).sendCallback({ name, contact });
    } catch (e) {
      ui.cbSend.disabled = false;
      ui.cbError.hidden = false;
      ui.cbError.textContent = e instanceof api.ApiError && e.status === 0 ? t("call.network_error") : t("call.failed_text", { message: e instanceof Error ? e.message : String(e) });
    }
  }

  /** @param {State} s */
  renderEnded(s) {
    const ui = this.ui;
    const t = this.t;
    const d = duration(s, Date.now());
    ui.endTitle.textContent = s.reason === "callback" ? t("call.callback_sent") : t("call.ended");
    ui.endText.textContent =
      s.reason === "callback" ? "" : d !== null ? t("call.duration", { duration: humanDuration(d) }) : s.reason === "cancelled" ? t("call.cancelled") : t("call.not_answered");
    ui.endText.hidden = !ui.endText.textContent;
    const ref = formatRef(s.callRef);
    ui.refBlock.hidden = ui.refHelp.hidden = !ref;
    ui.refValue.textContent = ref || "";
    ui.refHelp.textContent = t("call.reference_help", { business: this.business() });
  }
}

if (!customElements.get("clickacall-call")) customElements.define("clickacall-call", ClickacallCall);
