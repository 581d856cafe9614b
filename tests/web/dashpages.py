"""Page objects of the business's dashboard (``/dashboard``) for the browser tests: one class
per section, knowing its selectors (tests/web/pages.py has the console's and the call's)."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select

from tests.web.pages import Page


class Dashboard(Page):
    """The shell: nav, heading, the section's element."""

    def open(self, section: str = "") -> Dashboard:
        self.d.get(self.base + "/dashboard" + (f"/{section}" if section else ""))
        return self

    @property
    def heading(self) -> str:
        return self.text(".dash-heading")

    @property
    def current(self) -> str:
        """The section the nav marks as the current page."""
        el = self.d.find_element(By.CSS_SELECTOR, ".dash-nav a[aria-current=page]")
        return str(el.get_attribute("data-section"))

    def go(self, name: str, section: str) -> None:
        """Follow the nav link named ``name`` and wait for ``section`` to be drawn."""
        self.d.find_element(By.LINK_TEXT, name).click()
        self.wait_section(section)

    def wait_section(self, section: str, timeout: float = 15.0) -> None:
        tags = {s: s for s in ("home", "links", "staff", "keys", "settings", "privacy")}
        css = f"clickacall-dashboard[section={section}] .dash-view > *"
        if section in tags:
            css = f".dash-view clickacall-dash-{tags[section]} > *"
        self.until(lambda: self.d.find_elements(By.CSS_SELECTOR, css), timeout, section)

    @property
    def focused_heading(self) -> bool:
        return bool(self.focused().get_attribute("class") == "dash-heading")

    def sign_out(self) -> None:
        self.d.find_element(By.CSS_SELECTOR, ".dash-bar form.signout button").click()

    # --- dialogs, results ----------------------------------------------------------------

    def confirm(self, yes: bool = True) -> None:
        dialog = self.until(
            lambda: self.d.find_element(By.CSS_SELECTOR, "dialog.dash-dialog[open]"),
            10,
            "the confirmation dialog",
        )
        button = dialog.find_element(By.CSS_SELECTOR, "button.danger" if yes else "button")
        button.click()

    def copied_value(self, input_id: str, timeout: float = 10.0) -> str:
        el = self.until(lambda: self.d.find_element(By.ID, input_id), timeout, input_id)
        return str(el.get_attribute("value"))

    def rows(self) -> list[list[str]]:
        """The cells' text of the section's table rows."""
        out = []
        for tr in self.d.find_elements(By.CSS_SELECTOR, ".dash-table tbody tr"):
            out.append([str(td.text) for td in tr.find_elements(By.TAG_NAME, "td")])
        return out

    def row(self, first_cell: str) -> WebElement:
        for tr in self.d.find_elements(By.CSS_SELECTOR, ".dash-table tbody tr"):
            if tr.find_element(By.TAG_NAME, "td").text.startswith(first_cell):
                return tr
        raise AssertionError(f"no row {first_cell!r}")

    def fill(self, field_id: str, text: str, enter: bool = False) -> None:
        el = self.d.find_element(By.ID, field_id)
        el.clear()
        el.send_keys(text)
        if enter:
            el.send_keys(Keys.ENTER)

    def errors(self) -> list[str]:
        return [
            str(e.text)
            for e in self.d.find_elements(By.CSS_SELECTOR, ".dash-view .error")
            if e.is_displayed()
        ]


class StaffSection(Dashboard):
    def invite(self, name: str, email: str, admin: bool = False) -> str:
        """Invite someone; the invitation link shown."""
        self.fill("staff-name", name)
        self.fill("staff-email", email)
        if admin:
            self.d.find_element(By.ID, "staff-role-admin").click()
        self.button("Invite").click()
        return self.copied_value("staff-link")

    def status_of(self, name: str) -> str:
        return str(self.row(name).find_elements(By.TAG_NAME, "td")[3].text)

    def deactivate(self, name: str) -> None:
        self.button(f"Deactivate {name}").click()
        self.confirm()

    def roles(self, name: str) -> Select:
        """The select of what ``name`` may do, in their row."""
        return Select(self.row(name).find_element(By.CSS_SELECTOR, "select.dash-roles-select"))

    def set_roles(self, name: str, text: str) -> None:
        """Choose ``text`` ("Answers calls + Admin") in ``name``'s row (no confirmation)."""
        self.roles(name).select_by_visible_text(text)

    def announced(self) -> str:
        """What the section last said in its live region."""
        return str(
            self.d.execute_script(
                "const p = document.querySelector('clickacall-dash-staff > [aria-live]');"
                "return p ? p.textContent : '';"
            )
        )

    def roles_error(self, name: str) -> str:
        errors = self.row(name).find_elements(By.CSS_SELECTOR, ".dash-roles-cell .error")
        return str(errors[0].text) if errors and errors[0].is_displayed() else ""


class LinksSection(Dashboard):
    def card(self, name: str) -> WebElement:
        """The card of the link named ``name``, once drawn."""

        def find() -> WebElement | None:
            for card in self.d.find_elements(By.CSS_SELECTOR, "article.dash-link"):
                if card.find_element(By.TAG_NAME, "h2").text == name:
                    return card
            return None

        found: WebElement = self.until(find, 10, f"the link {name!r}")
        return found

    def facts(self, name: str) -> dict[str, str]:
        """The link's facts as shown: label -> value."""
        card = self.card(name)
        dts = card.find_elements(By.CSS_SELECTOR, ".dash-link-facts dt")
        dds = card.find_elements(By.CSS_SELECTOR, ".dash-link-facts dd")
        return {str(k.text): str(v.text) for k, v in zip(dts, dds, strict=True)}

    def tick(self, element_id: str, on: bool) -> None:
        box = self.d.find_element(By.ID, element_id)
        if box.is_selected() != on:
            box.click()

    def set_time(self, element_id: str, value: str) -> None:
        """A time input's value ("HH:MM"; typing into one depends on the browser's locale)."""
        self.d.execute_script(
            "document.getElementById(arguments[0]).value = arguments[1]", element_id, value
        )

    def choose(self, element_id: str, value: str) -> None:
        Select(self.d.find_element(By.ID, element_id)).select_by_value(value)


class KeysSection(Dashboard):
    def create(self, name: str) -> str:
        self.fill("key-name", name, enter=True)
        return self.copied_value("key-secret")

    def revoke(self, name: str) -> None:
        self.button(f"Revoke {name}").click()
        self.confirm()


class SettingsSection(Dashboard):
    def start_totp(self) -> str:
        """Set up two-step sign-in; the key shown for typing by hand."""
        name = "Set up two-step sign-in"
        self.until(lambda: self.has_button(name), 10, name)  # drawn once its state loads
        self.button(name).click()
        el = self.until(
            lambda: self.d.find_element(By.CSS_SELECTOR, ".dash-totp-secret"), 10, "the key"
        )
        return str(el.text)

    def confirm_totp(self, code: str) -> list[str]:
        self.fill("tfa-code", code, enter=True)
        items = self.until(
            lambda: self.d.find_elements(By.CSS_SELECTOR, ".dash-recovery li"),
            10,
            "the recovery codes",
        )
        return [str(i.text) for i in items]


class CallsSection(Dashboard):
    """The Calls section (``/dashboard/calls``) and a call's detail page."""

    def wait_list(self, timeout: float = 15.0) -> None:
        """Until the list (table or "no calls") is drawn and no load is under way."""
        self.until(
            lambda: (
                self.d.find_elements(By.CSS_SELECTOR, "#calls-list-title")
                and not self.d.find_elements(By.CSS_SELECTOR, "[aria-busy=true]")
            ),
            timeout,
            "the call list",
        )

    def choose(self, select_id: str, text: str) -> None:
        Select(self.d.find_element(By.ID, select_id)).select_by_visible_text(text)

    def apply(self) -> None:
        self.button("Show calls").click()
        self.wait_list()

    def call_links(self) -> list[str]:
        """The detail-page URLs of the calls listed, top to bottom."""
        links = self.d.find_elements(By.CSS_SELECTOR, ".dash-table a.dash-call-link")
        return [str(a.get_attribute("href")) for a in links]

    @property
    def csv_href(self) -> str:
        el = self.d.find_element(By.LINK_TEXT, "Download CSV")
        return str(el.get_attribute("href"))

    def wait_detail(self, timeout: float = 15.0) -> None:
        self.until(
            lambda: self.d.find_elements(By.CSS_SELECTOR, "clickacall-dash-call .dash-timeline"),
            timeout,
            "the call's detail",
        )

    def timeline(self) -> list[str]:
        steps = self.d.find_elements(By.CSS_SELECTOR, ".dash-timeline .dash-step-text")
        return [str(s.text) for s in steps]

    def fact(self, term: str) -> str:
        for div in self.d.find_elements(By.CSS_SELECTOR, ".dash-facts > div"):
            if div.find_element(By.TAG_NAME, "dt").text == term:
                return str(div.find_element(By.TAG_NAME, "dd").text)
        raise AssertionError(f"no fact {term!r}")


class PrivacySection(Dashboard):
    """The Privacy section (``/dashboard/privacy``): find a visitor, the audit log."""

    def find(self, kind: str, text: str) -> None:
        """Search by ``kind`` (the option's text) for ``text``; waits for the result or an error."""
        Select(self.d.find_element(By.ID, "privacy-kind")).select_by_visible_text(kind)
        old = self.d.find_elements(By.ID, "privacy-result-title")
        self.fill("privacy-value", text)
        self.button("Find" if self.lang == "en" else "Suchen").click()
        self.until(
            lambda: (
                self.errors()
                or (
                    (new := self.d.find_elements(By.ID, "privacy-result-title"))
                    and (not old or new[0] != old[0])
                )
            ),
            15,
            "the search's result",
        )

    @property
    def lang(self) -> str:
        return str(self.d.find_element(By.TAG_NAME, "html").get_attribute("lang") or "en")[:2]

    @property
    def found(self) -> str:
        return self.text("#privacy-result-title")

    def result_rows(self) -> list[list[str]]:
        css = "section[aria-labelledby=privacy-result-title] .dash-table tbody tr"
        return [
            [str(td.text) for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in self.d.find_elements(By.CSS_SELECTOR, css)
        ]

    def audit_rows(self) -> list[list[str]]:
        css = "section[aria-labelledby=audit-title] .dash-table tbody tr"
        return [
            [str(td.text) for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in self.d.find_elements(By.CSS_SELECTOR, css)
        ]

    def wait_audit(self, action: str, timeout: float = 15.0) -> None:
        """Until the audit log's newest entry is ``action`` (its words)."""
        self.until(lambda: (rows := self.audit_rows()) and rows[0][2] == action, timeout, action)

    def status(self) -> str:
        els = self.d.find_elements(By.CSS_SELECTOR, "#privacy-result-title ~ .dash-ok, .dash-ok")
        return " ".join(str(e.text) for e in els if e.is_displayed())


class CodePage(Page):
    """The second step of a two-step sign-in."""

    def enter(self, code: str) -> None:
        el = self.d.find_element(By.ID, "code")
        el.clear()
        el.send_keys(code)
        el.send_keys(Keys.ENTER)

    @property
    def error(self) -> str:
        els = self.d.find_elements(By.CSS_SELECTOR, ".error")
        return str(els[0].text) if els else ""


class AnalyticsSection(Dashboard):
    """The Analytics section (``/dashboard/analytics``): choices, totals, four chart cards."""

    FIGURES = ("calls", "answered_rate", "minutes", "bytes")

    def wait_charts(self, timeout: float = 20.0) -> None:
        """Until the totals and the charts (or "no calls") are drawn and no load is under way."""
        self.until(
            lambda: (
                self.d.find_elements(By.CSS_SELECTOR, "clickacall-dash-analytics #an-summary-title")
                and not self.d.find_elements(By.CSS_SELECTOR, "[aria-busy=true]")
                and (
                    len(self.d.find_elements(By.CSS_SELECTOR, ".dash-chart-card canvas")) == 4
                    or self.d.find_elements(By.CSS_SELECTOR, ".dash-charts > p")
                    or self.errors()
                )
            ),
            timeout,
            "the charts",
        )

    def choose(self, select_id: str, text: str) -> None:
        """Pick an option by its text: the section redraws at once."""
        Select(self.d.find_element(By.ID, select_id)).select_by_visible_text(text)
        self.wait_charts()

    def show(self) -> None:
        self.button(self.text("#an-choices-title ~ form button[type=submit]")).click()
        self.wait_charts()

    def table(self, figure: str) -> dict[str, object]:
        """A chart's table: ``{"head": [...], "rows": {start: {key: (value, text)}},
        "foot": {key: (value, text)}, "caption": str}`` (value: the cell's ``data-value``)."""
        out: dict[str, object] = self.d.execute_script(
            """
            const card = document.querySelector(`.dash-chart-card[data-figure="${arguments[0]}"]`);
            const cells = (tr) => Object.fromEntries([...tr.querySelectorAll("td")].map(
                (td) => [td.dataset.key, [td.dataset.value, td.textContent]]));
            return {
              head: [...card.querySelectorAll(".dash-numbers thead th")].map((th) => th.textContent),
              rows: Object.fromEntries([...card.querySelectorAll(".dash-numbers tbody tr")].map(
                (tr) => [tr.dataset.start, cells(tr)])),
              foot: cells(card.querySelector(".dash-numbers tfoot tr")),
              caption: card.querySelector(".dash-numbers caption").textContent,
            };
            """,
            figure,
        )
        return out

    def ink(self, figure: str) -> dict[str, float]:
        """Pixels a chart's canvas holds: drawn at all (``ink``), in one of the series'
        colours (``series``), and the canvas's size on screen."""
        out: dict[str, float] = self.d.execute_script(
            """
            const card = document.querySelector(`.dash-chart-card[data-figure="${arguments[0]}"]`);
            const canvas = card.querySelector("canvas");
            const {data} = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
            const probe = document.createElement("canvas").getContext("2d", {willReadFrequently: true});
            const colours = [1, 2, 3, 4, 5, 6].map((n) => {
              probe.fillStyle = getComputedStyle(card).getPropertyValue(`--chart-${n}`).trim();
              probe.fillRect(0, 0, 1, 1);
              return probe.getImageData(0, 0, 1, 1).data;
            });
            let ink = 0, series = 0;
            for (let i = 0; i < data.length; i += 4) {
              if (data[i + 3] > 0) ink++;
              const near = ([r, g, b]) =>
                Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 60;
              if (data[i + 3] > 200 && colours.some(near)) series++;
            }
            const box = canvas.getBoundingClientRect();
            return {ink, series, width: box.width, height: box.height,
                    plot: card.querySelector(".dash-chart-plot").getBoundingClientRect().width};
            """,
            figure,
        )
        return out

    def legend(self, figure: str) -> list[str]:
        """The names in a chart's legend (uPlot's), the x axis's first."""
        css = f'.dash-chart-card[data-figure="{figure}"] .u-legend .u-series .u-label'
        return [
            str(e.get_attribute("textContent")) for e in self.d.find_elements(By.CSS_SELECTOR, css)
        ]

    def totals(self) -> dict[str, str]:
        terms = self.d.find_elements(By.CSS_SELECTOR, ".dash-totals dt")
        values = self.d.find_elements(By.CSS_SELECTOR, ".dash-totals dd")
        return {str(t.text): str(v.text) for t, v in zip(terms, values, strict=True)}


class WebhooksSection(Dashboard):
    def tick(self, element_id: str, on: bool) -> None:
        box = self.d.find_element(By.ID, element_id)
        if box.is_selected() != on:
            box.click()

    def show_log(self) -> None:
        """Scroll the delivery log to the top of the viewport (for its screenshot)."""
        self.d.execute_script("document.getElementById('hooks-log-title').scrollIntoView()")

    def log_rows(self) -> list[list[str]]:
        """The cells' text of the delivery log's rows, newest first."""
        css = "section[aria-labelledby=hooks-log-title] .dash-table tbody tr"
        return [
            [str(td.text) for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in self.d.find_elements(By.CSS_SELECTOR, css)
        ]
