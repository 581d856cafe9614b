// How the console gets a staff member's attention while calls ring: a ring generated with
// WebAudio (no sound file), a desktop notification, and a changed page title; while the tab is
// in the background the alert repeats, at most once every REPEAT_MS.
//
// Browsers play sound only after a user gesture, so the ring is "armed" by one click
// (`arm()`, from the console's "Turn on call alerts" button), which also asks for the
// notification permission. Nothing here knows about calls: `start(label)` / `stop()`.

export const REPEAT_MS = 15000;
const RING_EVERY_MS = 3000;

export class Ringer {
  constructor() {
    /** @type {AudioContext | null} */
    this.ctx = null;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;
    this.label = "";
    this.baseTitle = typeof document !== "undefined" ? document.title : "";
    this.lastAlert = 0;
    /** @type {Notification | null} */
    this.note = null;
    this.notifyTitle = "";
    this.notifyBody = "";
  }

  get armed() {
    return this.ctx !== null && this.ctx.state === "running";
  }

  /** The unlocking click: creates (or resumes) the audio context; asks to notify. */
  async arm() {
    const Ctx = window.AudioContext || /** @type {any} */ (window).webkitAudioContext;
    if (Ctx && !this.ctx) this.ctx = new Ctx();
    if (this.ctx && this.ctx.state !== "running") await this.ctx.resume().catch(() => {});
    if ("Notification" in window && Notification.permission === "default") {
      await Notification.requestPermission().catch(() => "denied");
    }
    return this.armed;
  }

  /**
   * Ring until stop(): sound every 3 s, the title, and (in the background) a notification.
   * @param {string} title the page title while ringing
   * @param {string} notifyTitle
   * @param {string} notifyBody
   */
  start(title, notifyTitle, notifyBody) {
    this.label = title;
    this.notifyTitle = notifyTitle;
    this.notifyBody = notifyBody;
    if (this.timer !== undefined) return;
    this.baseTitle = document.title;
    this.lastAlert = 0;
    this.tick();
    this.timer = setInterval(() => this.tick(), RING_EVERY_MS);
  }

  stop() {
    if (this.timer === undefined) return;
    clearInterval(this.timer);
    this.timer = undefined;
    document.title = this.baseTitle;
    this.note?.close();
    this.note = null;
  }

  get ringing() {
    return this.timer !== undefined;
  }

  tick() {
    this.tone();
    document.title = document.title === this.label ? this.baseTitle : this.label;
    const now = Date.now();
    if (document.hidden && now - this.lastAlert >= REPEAT_MS) {
      this.lastAlert = now;
      this.notify();
    }
  }

  notify() {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    try {
      this.note?.close();
      this.note = new Notification(this.notifyTitle, { body: this.notifyBody, tag: "clickacall-ring", requireInteraction: true });
      this.note.onclick = () => {
        window.focus();
        this.note?.close();
      };
    } catch {
      /* some browsers allow notifications only from a service worker */
    }
  }

  /** One ring: two short two-tone bursts (440 + 480 Hz, like a phone line). */
  tone() {
    const ctx = this.ctx;
    if (!ctx || ctx.state !== "running") return;
    const t0 = ctx.currentTime;
    const gain = ctx.createGain();
    gain.gain.value = 0;
    gain.connect(ctx.destination);
    for (const f of [440, 480]) {
      const osc = ctx.createOscillator();
      osc.frequency.value = f;
      osc.connect(gain);
      osc.start(t0);
      osc.stop(t0 + 1.2);
    }
    for (const [on, off] of [[0, 0.4], [0.6, 1.0]]) {
      gain.gain.setValueAtTime(0.12, t0 + on);
      gain.gain.setValueAtTime(0, t0 + off);
    }
  }
}
