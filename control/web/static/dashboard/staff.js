// <clickacall-dash-staff>: the Staff section. An admin invites someone (name, email, what they
// may do: answer calls, run the account) and gets the invitation link to copy and send; sees
// the team with who is available for calls now (refreshed every 30 s while shown); gets a new
// link for someone who has not used theirs; changes what someone may do (a select in their
// row; a change that takes a role away asks first, and a refusal, such as taking the last
// admin's admin role, shows beside the select); deactivates someone after a confirmation
// (they are signed out at once, everywhere).
//
// Attributes in: lang. DOM events out: none. Requests: /v1/dashboard/staff (api.js).

import { announce, h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";
import { ApiFail, get, localize, post, request } from "./api.js";
import { checkbox, clearErrors, confirmDialog, copyBox, field, form, showError, table } from "./ui.js";

const REFRESH_MS = 30_000;
/** the roles a member may have, as the select offers them */
const ROLE_SETS = [["staff"], ["admin"], ["staff", "admin"]];

/**
 * @typedef {{id: string, name: string, email: string | null, roles: string[], active: boolean,
 *   has_password: boolean, presence: string, available_now: boolean, seen_at: number | null,
 *   you: boolean}} Member
 */

export class DashStaff extends HTMLElement {
  constructor() {
    super();
    this.t = translator("en");
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;
    this.live = h("p", { class: "visually-hidden", "aria-live": "polite" });
    this.result = h("div", { class: "dash-result" });
    this.list = h("section", { class: "dash-card", "aria-labelledby": "staff-team-title" });
  }

  connectedCallback() {
    this.t = translator(pickLang(this));
    const t = this.t;
    const name = field("staff-name", t("dash.staff.name"), { type: "text", required: true, maxlength: 200, autocomplete: "off" });
    const email = field("staff-email", t("dash.staff.email"), { type: "email", required: true, maxlength: 254, autocomplete: "off" });
    const staff = checkbox("staff-role-staff", t("dash.staff.role_staff"), true);
    const admin = checkbox("staff-role-admin", t("dash.staff.role_admin"), false);
    const roles = h(
      "fieldset",
      { class: "dash-roles", id: "staff-roles", "aria-describedby": "staff-roles-error" },
      h("legend", { text: t("dash.staff.roles") }),
      staff.wrap,
      admin.wrap,
      h("p", { class: "error", id: "staff-roles-error", hidden: true }),
    );
    const invite = form(
      "staff-invite",
      name.wrap,
      email.wrap,
      roles,
      h("div", { class: "dash-actions" }, h("button", { type: "submit", class: "primary", text: t("dash.staff.invite") })),
    );
    invite.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(invite);
      this.result.replaceChildren();
      try {
        const out = await post("/v1/dashboard/staff", {
          name: name.input.value,
          email: email.input.value,
          staff: staff.input.checked,
          admin: admin.input.checked,
        });
        this.showLink(out.member.name, out.invitation.url);
        invite.reset();
        await this.load();
      } catch (err) {
        showError(invite, err, { name: "staff-name", email: "staff-email", roles: "staff-roles" });
      }
    });
    this.replaceChildren(
      this.live,
      h(
        "section",
        { class: "dash-card", "aria-labelledby": "staff-invite-title" },
        h("h2", { id: "staff-invite-title", text: t("dash.staff.invite_title") }),
        invite,
        this.result,
      ),
      this.list,
    );
    this.load();
    this.timer = setInterval(() => {
      if (document.visibilityState === "visible") this.load();
    }, REFRESH_MS);
  }

  disconnectedCallback() {
    clearInterval(this.timer);
  }

  /**
   * @param {string} name
   * @param {string} url
   */
  showLink(name, url) {
    const t = this.t;
    this.result.replaceChildren(
      h("p", { class: "dash-ok", role: "status", text: t("dash.staff.invited", { name }) }),
      copyBox("staff-link", t("dash.staff.link_label", { name }), url, t, this.live),
    );
    /** @type {HTMLInputElement | null} */ (this.result.querySelector("input"))?.focus();
  }

  async load() {
    const t = this.t;
    let team;
    try {
      team = /** @type {Member[]} */ (await get("/v1/dashboard/staff"));
    } catch (err) {
      this.list.replaceChildren(h("p", { class: "error", text: t("dash.load_failed", { message: String(err instanceof Error ? err.message : err) }) }));
      return;
    }
    const active = team.filter((m) => m.active && m.roles.includes("staff"));
    const available = active.filter((m) => m.available_now).length;
    const rows = team.map((m) => [
      h("span", {}, m.name, m.you ? h("span", { class: "dash-muted", text: ` ${t("dash.staff.you")}` }) : null),
      m.email || "—",
      m.active ? this.rolesPicker(m) : m.roles.map((r) => t(`dash.staff.role.${r}`)).join(", "),
      this.status(m),
      this.actions(m),
    ]);
    this.list.replaceChildren(
      h("h2", { id: "staff-team-title", tabindex: -1, text: t("dash.staff.team") }),
      h("p", { class: "dash-summary", text: t("dash.staff.available_count", { n: available, total: active.length }) }),
      team.length
        ? table(t("dash.staff.team"), ["col_name", "col_email", "col_roles", "col_status", "col_actions"].map((c) => t(`dash.staff.${c}`)), rows)
        : h("p", { text: t("dash.staff.empty") }),
    );
  }

  /**
   * What a member may do, as a select in their row: changing it asks the server at once (after
   * a confirmation when it takes a role away); a refusal shows beside it and puts it back.
   * @param {Member} m
   */
  rolesPicker(m) {
    const t = this.t;
    const current = ROLE_SETS.find((set) => set.join() === ["staff", "admin"].filter((r) => m.roles.includes(r)).join()) || ["staff"];
    const id = `staff-roles-${m.id}`;
    const select = h(
      "select",
      { id, class: "dash-roles-select", "aria-label": t("dash.staff.roles_of", { name: m.name }), "aria-describedby": `${id}-error` },
      ...ROLE_SETS.map((set) => h("option", { value: set.join(","), text: set.map((r) => t(`dash.staff.role.${r}`)).join(" + ") })),
    );
    select.value = current.join(",");
    const error = h("p", { class: "error", id: `${id}-error`, hidden: true });
    select.addEventListener("change", async () => {
      const roles = select.value.split(",");
      const lost = current.filter((r) => !roles.includes(r));
      error.hidden = true;
      select.removeAttribute("aria-invalid");
      if (lost.length) {
        const ok = await confirmDialog(this, {
          title: t("dash.staff.roles_title", { name: m.name }),
          text: lost.map((r) => t(`dash.staff.roles_lose.${r}`, { name: m.name })).join(" "),
          ok: t("dash.staff.roles_change"),
          cancel: t("dash.cancel"),
        });
        if (!ok) {
          select.value = current.join(",");
          return;
        }
      }
      try {
        await request("PATCH", `/v1/dashboard/staff/${m.id}`, { roles });
        announce(this.live, t("dash.staff.roles_changed", { name: m.name }));
        await this.load();
        /** @type {HTMLElement | null} */ (this.querySelector(`#${id}`))?.focus();
      } catch (err) {
        select.value = current.join(",");
        error.textContent = err instanceof ApiFail ? localize(err, t) : String(err);
        error.hidden = false;
        select.setAttribute("aria-invalid", "true");
        select.focus();
      }
    });
    return h("div", { class: "dash-roles-cell" }, select, error);
  }

  /** @param {Member} m */
  status(m) {
    const key = !m.active
      ? "inactive"
      : !m.roles.includes("staff")
        ? "no_calls"
        : !m.has_password
        ? "invited"
        : m.available_now
          ? "available"
          : m.presence === "away"
            ? "away"
            : "offline";
    return h("span", { class: `dash-status dash-status-${key}` }, h("span", { class: "dash-dot", "aria-hidden": "true" }), this.t(`dash.staff.status.${key}`));
  }

  /** @param {Member} m */
  actions(m) {
    const t = this.t;
    const box = h("div", { class: "dash-row-actions" });
    if (m.active && !m.has_password && m.email) {
      const again = h("button", { type: "button", text: t("dash.staff.reinvite"), "aria-label": `${t("dash.staff.reinvite")}: ${m.name}` });
      again.addEventListener("click", async () => {
        try {
          const out = await post(`/v1/dashboard/staff/${m.id}/invitation`);
          this.showLink(m.name, out.url);
        } catch (err) {
          announce(this.live, String(err instanceof Error ? err.message : err));
        }
      });
      box.append(again);
    }
    if (m.active && !m.you) {
      const off = h("button", { type: "button", class: "danger", text: t("dash.staff.deactivate"), "aria-label": t("dash.staff.deactivate_named", { name: m.name }) });
      off.addEventListener("click", async () => {
        const ok = await confirmDialog(this, {
          title: t("dash.staff.deactivate_title", { name: m.name }),
          text: t("dash.staff.deactivate_text", { name: m.name }),
          ok: t("dash.staff.deactivate"),
          cancel: t("dash.cancel"),
        });
        if (!ok) return;
        try {
          await post(`/v1/dashboard/staff/${m.id}/deactivate`);
          announce(this.live, t("dash.staff.deactivated", { name: m.name }));
          await this.load();
          /** @type {HTMLElement | null} */ (this.querySelector("#staff-team-title"))?.focus();
        } catch (err) {
          announce(this.live, err instanceof ApiFail ? localize(err, t) : String(err));
        }
      });
      box.append(off);
    }
    return box;
  }
}

customElements.define("clickacall-dash-staff", DashStaff);
