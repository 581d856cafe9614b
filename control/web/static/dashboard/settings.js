// <clickacall-dash-settings>: the Settings section. The business's own settings: how many
// months call records are kept (retention) and the regions its calls' media may stay in
// (chosen from the regions our relay nodes report, plus the ones allowed now); the server
// checks them with the API's rules, errors come back beside the field, and every change is
// written to the audit log (Privacy). Then the admin's own sign-in: change the password (the
// other sessions end) and two-step sign-in (TOTP): set up (a QR code drawn by the server, the
// key in text for typing by hand, a code to confirm), the ten recovery codes shown once, and
// turning it off with the password.
//
// Attributes in: lang. DOM events out: none.
// Requests: /v1/dashboard/settings, /v1/account/... (api.js).

import { announce, h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";
import { ApiFail, get, post, request } from "./api.js";
import { checkbox, clearErrors, field, form, showError } from "./ui.js";

export class DashSettings extends HTMLElement {
  constructor() {
    super();
    this.t = translator("en");
    this.live = h("p", { class: "visually-hidden", "aria-live": "polite" });
    this.tfa = h("section", { class: "dash-card", "aria-labelledby": "tfa-title" });
    this.business = h("section", { class: "dash-card", "aria-labelledby": "business-title" });
  }

  connectedCallback() {
    this.t = translator(pickLang(this));
    this.replaceChildren(this.live, this.business, this.passwordCard(), this.tfa);
    this.loadBusiness();
    this.loadTfa();
  }

  /**
   * The business's retention and regions.
   * @param {string} [note] what was just saved
   */
  async loadBusiness(note) {
    const t = this.t;
    const title = h("h2", { id: "business-title", tabindex: -1, text: t("dash.settings.business_title") });
    /** @type {{retention_months: number, allowed_regions: string[], regions: string[], max_retention_months: number}} */
    let now;
    try {
      now = await get("/v1/dashboard/settings");
    } catch (err) {
      this.business.replaceChildren(title, h("p", { class: "error", text: t("dash.load_failed", { message: String(err instanceof Error ? err.message : err) }) }));
      return;
    }
    const months = field(
      "set-retention",
      t("dash.settings.retention"),
      { type: "number", name: "retention_months", min: 1, max: now.max_retention_months, step: 1, required: true, inputmode: "numeric", value: now.retention_months },
      t("dash.settings.retention_hint", { max: now.max_retention_months }),
    );
    const boxes = now.regions.map((r) => checkbox(`set-region-${r}`, r, now.allowed_regions.includes(r)));
    for (const b of boxes) b.input.setAttribute("value", b.input.id.slice("set-region-".length));
    const regions = h(
      "fieldset",
      { id: "set-regions", class: "dash-roles", "aria-describedby": "set-regions-hint" },
      h("legend", { text: t("dash.settings.regions") }),
      h("p", { class: "dash-hint", id: "set-regions-hint", text: t("dash.settings.regions_hint") }),
      ...boxes.map((b) => b.wrap),
      h("p", { class: "error", id: "set-regions-error", hidden: true }),
    );
    const save = form(
      "business-form",
      months.wrap,
      regions,
      h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "primary", text: t("dash.settings.save") })),
    );
    const done = h("p", { class: "dash-ok", role: "status", hidden: !note, text: note || "" });
    save.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(save);
      done.hidden = true;
      const raw = months.input.value.trim();
      const body = {
        // a number the server checks against its rules; anything else as typed, so its message names the field
        retention_months: /^\d{1,4}$/.test(raw) ? Number(raw) : raw,
        allowed_regions: boxes.filter((b) => b.input.checked).map((b) => b.input.value),
      };
      try {
        await request("PATCH", "/v1/dashboard/settings", body);
        await this.loadBusiness(t("dash.settings.saved"));
        /** @type {HTMLElement} */ (this.business.querySelector("#business-title")).focus();
      } catch (err) {
        // the server's rule, in the page's language where we know what it said
        let fail = err;
        if (err instanceof ApiFail && err.status === 422 && err.field === "retention_months") {
          fail = new ApiFail(422, err.code, `retention_months: ${t("dash.settings.retention_bad", { max: now.max_retention_months })}`);
        } else if (err instanceof ApiFail && err.status === 422 && err.field === "allowed_regions" && !body.allowed_regions.length) {
          fail = new ApiFail(422, err.code, `allowed_regions: ${t("dash.settings.regions_none")}`);
        }
        showError(save, fail, { retention_months: "set-retention", allowed_regions: "set-regions" });
      }
    });
    this.business.replaceChildren(title, h("p", { class: "dash-hint", text: t("dash.settings.business_text") }), save, done);
  }

  passwordCard() {
    const t = this.t;
    const current = field("pw-current", t("dash.settings.current"), { type: "password", required: true, maxlength: 200, autocomplete: "current-password" });
    const fresh = field("pw-new", t("dash.settings.new"), { type: "password", required: true, minlength: 10, maxlength: 200, autocomplete: "new-password" });
    const again = field("pw-new2", t("dash.settings.new2"), { type: "password", required: true, minlength: 10, maxlength: 200, autocomplete: "new-password" });
    const done = h("p", { class: "dash-ok", role: "status", hidden: true });
    const change = form(
      "pw-change",
      current.wrap,
      fresh.wrap,
      again.wrap,
      h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "primary", text: t("dash.settings.change") })),
    );
    change.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(change);
      done.hidden = true;
      try {
        await post("/v1/account/password", { current: current.input.value, password: fresh.input.value, password2: again.input.value });
        change.reset();
        done.textContent = t("dash.settings.changed");
        done.hidden = false;
      } catch (err) {
        showError(change, err, { current: "pw-current", password: "pw-new", password2: "pw-new2" });
      }
    });
    return h(
      "section",
      { class: "dash-card", "aria-labelledby": "pw-title" },
      h("h2", { id: "pw-title", text: t("dash.settings.password_title") }),
      change,
      done,
    );
  }

  async loadTfa() {
    const t = this.t;
    const title = h("h2", { id: "tfa-title", tabindex: -1, text: t("dash.settings.tfa_title") });
    let state;
    try {
      state = await get("/v1/account/security");
    } catch (err) {
      this.tfa.replaceChildren(title, h("p", { class: "error", text: t("dash.load_failed", { message: String(err instanceof Error ? err.message : err) }) }));
      return;
    }
    if (!state.totp) {
      const start = h("button", { type: "button", class: "primary", text: t("dash.settings.tfa_start") });
      start.addEventListener("click", () => this.enrol(title));
      this.tfa.replaceChildren(title, h("p", { text: t("dash.settings.tfa_off") }), h("div", { class: "dash-actions" }, start));
      return;
    }
    const password = field("tfa-password", t("dash.settings.tfa_password"), { type: "password", required: true, maxlength: 200, autocomplete: "current-password" });
    const off = form(
      "tfa-off",
      password.wrap,
      h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "danger", text: t("dash.settings.tfa_disable") })),
    );
    off.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(off);
      try {
        await post("/v1/account/totp/disable", { password: password.input.value });
        announce(this.live, t("dash.settings.tfa_disabled"));
        await this.loadTfa();
        title.focus();
      } catch (err) {
        showError(off, err, { password: "tfa-password" });
      }
    });
    this.tfa.replaceChildren(
      title,
      h("p", { class: "dash-ok", text: t("dash.settings.tfa_on", { n: state.recovery_codes_left }) }),
      off,
    );
  }

  /** @param {HTMLElement} title */
  async enrol(title) {
    const t = this.t;
    let setup;
    try {
      setup = await post("/v1/account/totp");
    } catch (err) {
      announce(this.live, String(err instanceof Error ? err.message : err));
      return;
    }
    const code = field("tfa-code", t("dash.settings.tfa_code"), { type: "text", required: true, inputmode: "numeric", autocomplete: "one-time-code", maxlength: 6, pattern: "[0-9]{6}" });
    const confirm = form(
      "tfa-confirm",
      code.wrap,
      h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "primary", text: t("dash.settings.tfa_confirm") })),
    );
    confirm.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(confirm);
      try {
        const out = await post("/v1/account/totp/confirm", { code: code.input.value });
        this.showRecovery(title, out.recovery_codes);
      } catch (err) {
        showError(confirm, err, { code: "tfa-code" });
      }
    });
    this.tfa.replaceChildren(
      title,
      h("p", { id: "tfa-scan", text: t("dash.settings.tfa_scan") }),
      h("img", { class: "dash-qr", src: setup.qr, alt: t("dash.settings.tfa_qr"), width: 200, height: 200 }),
      h("p", { class: "dash-secret-line" }, h("span", { text: `${t("dash.settings.tfa_secret")}: ` }), h("code", { class: "dash-totp-secret", text: setup.secret })),
      confirm,
    );
    code.input.focus();
  }

  /**
   * @param {HTMLElement} title
   * @param {string[]} codes
   */
  showRecovery(title, codes) {
    const t = this.t;
    const done = h("button", { type: "button", class: "primary", text: t("dash.settings.recovery_done") });
    done.addEventListener("click", async () => {
      await this.loadTfa();
      title.focus();
    });
    const heading = h("h3", { id: "tfa-recovery-title", tabindex: -1, text: t("dash.settings.recovery_title") });
    this.tfa.replaceChildren(
      title,
      h("p", { class: "dash-ok", role: "status", text: t("dash.settings.tfa_enabled") }),
      heading,
      h("p", { text: t("dash.settings.recovery_text") }),
      h("ol", { class: "dash-recovery" }, ...codes.map((c) => h("li", {}, h("code", { text: c })))),
      h("div", { class: "dash-actions" }, done),
    );
    heading.focus();
  }
}

customElements.define("clickacall-dash-settings", DashSettings);
