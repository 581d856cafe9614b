// <clickacall-dash-home>: the dashboard's overview: a welcome and one card per section, each
// a link with a line on what the section is for.
//
// Attributes in: lang, name (the signed-in member's name). DOM events out: none.

import { h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";

export const SECTIONS = ["links", "staff", "calls", "analytics", "privacy", "keys", "settings"];

export class DashHome extends HTMLElement {
  connectedCallback() {
    const t = translator(pickLang(this));
    this.replaceChildren(
      h("p", { class: "dash-welcome", text: t("dash.welcome", { name: this.getAttribute("name") || "" }) }),
      h(
        "ul",
        { class: "dash-tiles" },
        ...SECTIONS.map((s) =>
          h(
            "li",
            { class: "dash-tile" },
            h("a", { href: `/dashboard/${s}`, "data-section": s, text: t(`dash.section.${s}`) }),
            h("p", { text: t(`dash.about.${s}`) }),
          ),
        ),
      ),
    );
  }
}

customElements.define("clickacall-dash-home", DashHome);
