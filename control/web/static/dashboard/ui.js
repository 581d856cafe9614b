// Pieces the dashboard's sections share: forms whose errors sit beside the field they name
// (aria-invalid + aria-describedby), a read-only box with a Copy button for a secret shown
// once, a confirmation dialog (a real <dialog>: focus moves in, Escape cancels, focus returns),
// tables, and dates in the page's language.

import { announce, h } from "../dom.js";
import { pickLang, translator } from "./i18n.js";
import { ApiFail, localize } from "./api.js";

/**
 * A labelled input: `{wrap, input}`; `hint` is tied to it with aria-describedby.
 * @param {string} id
 * @param {string} label
 * @param {Record<string, string | boolean | number>} attrs
 * @param {string} [hint]
 */
export function field(id, label, attrs, hint) {
  const input = h("input", { id, name: attrs.name || id, ...attrs });
  const hintEl = hint ? h("p", { class: "dash-hint", id: `${id}-hint`, text: hint }) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  const error = h("p", { class: "error", id: `${id}-error`, hidden: true });
  const wrap = h("div", { class: "dash-field" }, h("label", { for: id, text: label }), input, hintEl, error);
  return { wrap, input, error };
}

/**
 * A checkbox with its label after it.
 * @param {string} id
 * @param {string} label
 * @param {boolean} checked
 */
export function checkbox(id, label, checked) {
  const input = h("input", { id, name: id, type: "checkbox", checked });
  return { wrap: h("div", { class: "dash-check" }, input, h("label", { for: id, text: label })), input };
}

/**
 * Clear the errors of a form's fields.
 * @param {HTMLFormElement} form
 */
export function clearErrors(form) {
  for (const el of form.querySelectorAll(".error")) {
    /** @type {HTMLElement} */ (el).hidden = true;
    el.textContent = "";
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
    const hint = document.getElementById(`${input.id}-hint`);
    if (hint) input.setAttribute("aria-describedby", hint.id);
    else input.removeAttribute("aria-describedby");
  }
}

/**
 * Show an API failure beside the field it names (or at the form's end), and focus that field;
 * the text is the catalogue's `err.<reason>` in the form's language when there is one.
 * @param {HTMLFormElement} form
 * @param {unknown} e
 * @param {Record<string, string>} [fields] API field name (or dotted path) -> input id
 */
export function showError(form, e, fields = {}) {
  const fail = e instanceof ApiFail ? e : new ApiFail(0, "error", String(e));
  // the most precise field named that has an input: "hours.windows" then "hours"
  let id;
  for (const parts = fail.field ? fail.field.split(".") : []; parts.length && !id; parts.pop()) id = fields[parts.join(".")];
  const input = id ? /** @type {HTMLInputElement | null} */ (form.querySelector(`#${id}`)) : null;
  const box = /** @type {HTMLElement | null} */ (
    input ? form.querySelector(`#${id}-error`) : form.querySelector(".dash-form-error")
  );
  if (!box) return;
  // in the page's language when the catalogue knows the reason; else the server's English
  const text = localize(fail, translator(pickLang(form)));
  box.textContent = input || text !== fail.text ? text : fail.message;
  box.hidden = false;
  box.setAttribute("role", "alert");
  if (input) {
    input.setAttribute("aria-invalid", "true");
    const hint = document.getElementById(`${input.id}-hint`);
    input.setAttribute("aria-describedby", [box.id, hint ? hint.id : ""].join(" ").trim());
    const target = input instanceof HTMLFieldSetElement ? input.querySelector("input, select") : input;
    /** @type {HTMLElement | null} */ (target)?.focus();
  }
}

/**
 * A form with its own error line at the end (for errors that name no field).
 * @param {string} cls
 * @param {...(Node | null | false)} children
 */
export function form(cls, ...children) {
  const el = h("form", { class: `dash-form ${cls}`, novalidate: true }, ...children);
  el.append(h("p", { class: "error dash-form-error", id: `${cls}-error`, hidden: true }));
  return el;
}

/**
 * A secret shown once: a read-only box and a Copy button that says what happened.
 * @param {string} id
 * @param {string} label
 * @param {string} value
 * @param {(key: string) => string} t
 * @param {HTMLElement} live
 */
export function copyBox(id, label, value, t, live) {
  const input = h("input", { id, type: "text", readonly: true, value, class: "dash-secret", spellcheck: "false" });
  const button = h("button", { type: "button", class: "primary", text: t("dash.copy") });
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(value);
      announce(live, t("dash.copied"));
    } catch {
      input.select();
      announce(live, t("dash.copy_failed"));
    }
  });
  return h("div", { class: "dash-copy" }, h("label", { for: id, text: label }), h("div", { class: "dash-copy-row" }, input, button));
}

/**
 * Ask before doing something that cannot be undone. Resolves true on the confirming button.
 * @param {HTMLElement} host where the dialog lives while open
 * @param {{title: string, text: string, ok: string, cancel: string}} words
 * @returns {Promise<boolean>}
 */
export function confirmDialog(host, words) {
  const back = /** @type {HTMLElement | null} */ (document.activeElement);
  const title = h("h2", { id: "dash-dialog-title", text: words.title });
  const text = h("p", { id: "dash-dialog-text", text: words.text });
  const cancel = h("button", { type: "button", text: words.cancel });
  const ok = h("button", { type: "button", class: "danger", text: words.ok });
  const dialog = h(
    "dialog",
    { class: "dash-dialog", "aria-labelledby": title.id, "aria-describedby": text.id },
    title,
    text,
    h("div", { class: "dash-actions" }, cancel, ok),
  );
  host.append(dialog);
  return new Promise((resolve) => {
    /** @param {boolean} answer */
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      if (back && back.isConnected) back.focus();
      resolve(answer);
    };
    cancel.addEventListener("click", () => done(false));
    ok.addEventListener("click", () => done(true));
    dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      done(false);
    });
    dialog.showModal();
    cancel.focus();
  });
}

/**
 * A table with a caption and column headers; `rows` are arrays of cells (text or nodes).
 * @param {string} caption
 * @param {string[]} columns
 * @param {Array<Array<Node | string>>} rows
 */
export function table(caption, columns, rows) {
  // a region of its own, reachable by keyboard: on a phone the table scrolls sideways
  return h(
    "div",
    { class: "dash-table-wrap", role: "region", tabindex: 0, "aria-label": caption },
    h(
      "table",
      { class: "dash-table" },
      h("caption", { text: caption }),
      h("thead", {}, h("tr", {}, ...columns.map((c) => h("th", { scope: "col", text: c })))),
      h("tbody", {}, ...rows.map((cells) => h("tr", {}, ...cells.map((c) => h("td", {}, c))))),
    ),
  );
}

/**
 * A date and time for people, in `lang`.
 * @param {string} lang
 * @param {number} epoch seconds
 */
export function when(lang, epoch) {
  return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" }).format(new Date(epoch * 1000));
}
