// <clickacall-dash-keys>: the API keys section. An admin names and creates a key (shown once,
// with a Copy button), sees the keys (name, public id, created, active or revoked) and revokes
// one after a confirmation (anything using it stops working at once).
//
// Attributes in: lang. DOM events out: none. Requests: /v1/dashboard/keys (api.js).

import { announce, h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";
import { del, get, post } from "./api.js";
import { clearErrors, confirmDialog, copyBox, field, form, showError, table, when } from "./ui.js";

/** @typedef {{id: string, name: string | null, created_at: number, revoked_at: number | null}} Key */

export class DashKeys extends HTMLElement {
  constructor() {
    super();
    this.t = translator("en");
    /** @type {import("../i18n.js").Lang} */
    this.language = "en";
    this.live = h("p", { class: "visually-hidden", "aria-live": "polite" });
    this.result = h("div", { class: "dash-result" });
    this.list = h("section", { class: "dash-card", "aria-labelledby": "keys-list-title" });
  }

  connectedCallback() {
    this.language = pickLang(this);
    this.t = translator(this.language);
    const t = this.t;
    const name = field("key-name", t("dash.keys.name"), { type: "text", required: true, maxlength: 100, autocomplete: "off" }, t("dash.keys.name_hint"));
    const create = form(
      "keys-create",
      name.wrap,
      h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "primary", text: t("dash.keys.create") })),
    );
    create.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(create);
      this.result.replaceChildren();
      try {
        const made = await post("/v1/dashboard/keys", { name: name.input.value });
        this.result.replaceChildren(
          h("p", { class: "dash-ok", role: "status", text: t("dash.keys.created") }),
          copyBox("key-secret", t("dash.keys.key_label", { name: made.name || "" }), made.key, t, this.live),
        );
        create.reset();
        /** @type {HTMLInputElement | null} */ (this.result.querySelector("input"))?.focus();
        await this.load();
      } catch (err) {
        showError(create, err, { name: "key-name" });
      }
    });
    this.replaceChildren(
      this.live,
      h(
        "section",
        { class: "dash-card", "aria-labelledby": "keys-create-title" },
        h("h2", { id: "keys-create-title", text: t("dash.keys.create_title") }),
        create,
        this.result,
      ),
      this.list,
    );
    this.load();
  }

  async load() {
    const t = this.t;
    let keys;
    try {
      keys = /** @type {Key[]} */ (await get("/v1/dashboard/keys"));
    } catch (err) {
      this.list.replaceChildren(h("p", { class: "error", text: t("dash.load_failed", { message: String(err instanceof Error ? err.message : err) }) }));
      return;
    }
    const rows = keys.map((k) => [
      k.name || t("dash.keys.unnamed"),
      h("code", { text: k.id }),
      when(this.language, k.created_at),
      k.revoked_at === null
        ? h("span", { class: "dash-status dash-status-available" }, h("span", { class: "dash-dot", "aria-hidden": "true" }), t("dash.keys.active"))
        : h("span", { class: "dash-status dash-status-inactive", text: t("dash.keys.revoked", { when: when(this.language, k.revoked_at) }) }),
      k.revoked_at === null ? this.revokeButton(k) : "",
    ]);
    this.list.replaceChildren(
      h("h2", { id: "keys-list-title", tabindex: -1, text: t("dash.keys.list") }),
      keys.length
        ? table(t("dash.keys.list"), ["col_name", "col_id", "col_created", "col_status", "col_actions"].map((c) => t(`dash.keys.${c}`)), rows)
        : h("p", { text: t("dash.keys.empty") }),
    );
  }

  /** @param {Key} k */
  revokeButton(k) {
    const t = this.t;
    const label = k.name || k.id;
    const button = h("button", { type: "button", class: "danger", text: t("dash.keys.revoke"), "aria-label": t("dash.keys.revoke_named", { name: label }) });
    button.addEventListener("click", async () => {
      const ok = await confirmDialog(this, {
        title: t("dash.keys.revoke_title", { name: label }),
        text: t("dash.keys.revoke_text"),
        ok: t("dash.keys.revoke"),
        cancel: t("dash.cancel"),
      });
      if (!ok) return;
      try {
        await del(`/v1/dashboard/keys/${k.id}`);
        announce(this.live, t("dash.keys.revoked_done", { name: label }));
        await this.load();
        /** @type {HTMLElement | null} */ (this.querySelector("#keys-list-title"))?.focus();
      } catch (err) {
        announce(this.live, String(err instanceof Error ? err.message : err));
      }
    });
    return button;
  }
}

customElements.define("clickacall-dash-keys", DashKeys);
