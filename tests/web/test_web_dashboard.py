"""The business's dashboard in real Chromium: the operator creates a business with its first
admin, who sets a password through the invitation page and lands on the dashboard; invites a
staff member (who sets a password and is refused every dashboard page and admin request);
sees who is available now; creates an API key that works against the API until revoked;
deactivates the member (signed out at once). A second business's admin sees none of it.
Roles change in the team's table: a member made admin reaches the dashboard, one who stops
answering calls sees their console close, and the last admin cannot give up the role.
Two-step sign-in: set up, a wrong code refused, the right one signs in. On every page the
only cookie is the session cookie (HttpOnly, SameSite=Strict), axe-core finds no serious or
critical violation, and each page is saved as a screenshot (build/screenshots/dashboard-*)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from urllib.parse import urljoin

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from control import accounts
from tests.controlproc import bearer
from tests.web.browser import Browser, axe_violations, console_errors, missing, screenshot
from tests.web.dashpages import (
    CodePage,
    Dashboard,
    KeysSection,
    PrivacySection,
    SettingsSection,
    StaffSection,
)
from tests.web.pages import ConsolePage, InvitePage, SignInPage
from tests.web.webcontrol import WebControl

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def control() -> Iterator[WebControl]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    control = WebControl().start()
    try:
        yield control
    finally:
        control.stop()


def business(control: WebControl, name: str, email: str) -> tuple[str, str]:
    """The operator creates a business with its first admin: (API key, invitation URL)."""
    r = httpx.post(
        f"{control.url}/v1/tenants",
        json={"name": name, "admin_email": email, "admin_name": "Olivia Owner"},
        headers=control.oh,
        timeout=10,
    )
    r.raise_for_status()
    body = r.json()
    return body["api_key"]["key"], urljoin(control.url + "/", body["admin"]["invitation_url"])


def become_admin(b: Browser, control: WebControl, url: str, password: str) -> Dashboard:
    """The admin opens the invitation, sets a password and lands on the dashboard."""
    InvitePage(b, control.url).open(url).set_password(password)
    dash = Dashboard(b, control.url)
    dash.until(lambda: dash.d.current_url.endswith("/dashboard"), 15, "the dashboard")
    dash.wait_section("home")
    return dash


def check_page(b: Browser, name: str) -> None:
    """axe-core, the cookie audit, no CSP violation, and a screenshot of the page."""
    assert axe_violations(b.driver) == [], name
    cookies = b.cookies()
    assert [c["name"] for c in cookies] == ["cc_session"], cookies
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    errors = [e for e in console_errors(b.driver) if "Content Security Policy" in e]
    assert errors == [], errors
    screenshot(b.driver, name)


def fetch_status(b: Browser, method: str, path: str) -> int:
    """The status of a same-origin request the signed-in page makes (with its CSRF token)."""
    status: int = b.driver.execute_async_script(
        """
        const [method, path, done] = arguments;
        const csrf = (document.querySelector("input[name=csrf]") || {}).value || "";
        fetch(path, {method, headers: {"X-CSRF-Token": csrf, "Content-Type": "application/json"},
                     body: method === "GET" ? undefined : "{}"})
          .then(r => done(r.status)).catch(e => done(-1));
        """,
        method,
        path,
    )
    return status


@pytest.mark.timeout(240)
def test_an_admin_runs_the_team_and_the_api_keys(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    key, url = business(control, "Acme Bikes", "olivia@acme.test")
    admin = open_browser()
    dash = become_admin(admin, control, url, "olivia's long password")
    assert dash.heading == "Overview" and dash.current == "home"
    assert "Acme Bikes" in dash.text(".dash-bar")
    assert not admin.driver.find_elements("css selector", ".dash-switch")  # admin only
    check_page(admin, "dashboard-home")

    # Staff: the nav moves without reloading, marks the page and moves focus to the heading
    staff = StaffSection(admin, control.url)
    staff.go("Staff", "staff")
    assert admin.driver.current_url.endswith("/dashboard/staff")
    assert staff.current == "staff" and staff.heading == "Staff" and staff.focused_heading
    # bad input: a message beside the field, nothing stored
    staff.fill("staff-name", "Ben")
    staff.fill("staff-email", "not an email")
    staff.button("Invite").click()
    staff.until(lambda: staff.errors(), 10, "the email error")
    email = staff.d.find_element("id", "staff-email")
    assert email.get_attribute("aria-invalid") == "true"
    assert "staff-email-error" in str(email.get_attribute("aria-describedby"))
    assert staff.errors()[0].startswith("must be an email address")
    assert [r[0] for r in staff.rows()] == ["Olivia Owner (you)"]
    link = staff.invite("Ben Baker", "ben@acme.test")
    assert "/console/invite/" in link
    check_page(admin, "dashboard-staff-invited")

    # Ben sets his password through the link and lands on the console (staff only)
    ben = open_browser()
    InvitePage(ben, control.url).open(link).set_password("ben's long password")
    console = ConsolePage(ben, control.url)
    console.until(lambda: ben.driver.current_url.endswith("/console"), 15, "Ben's console")
    console.wait_ready()
    assert not ben.driver.find_elements("css selector", ".console-switch")
    # ... and is refused every dashboard page and admin request
    for path in ("/dashboard", "/dashboard/staff", "/dashboard/keys", "/dashboard/settings"):
        ben.driver.get(control.url + path)
        assert ben.driver.find_element("tag name", "h1").text == (
            "This page is for the business's admins"
        ), path
    check_page(ben, "dashboard-forbidden")
    assert fetch_status(ben, "GET", "/v1/dashboard/staff") == 403
    assert fetch_status(ben, "GET", "/v1/dashboard/keys") == 403
    assert fetch_status(ben, "POST", "/v1/dashboard/keys") == 403
    console.open()
    console.wait_ready()
    (cookie,) = ben.cookies()  # the console's only cookie is the session's too
    assert cookie["name"] == "cc_session" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # his console is open: the admin sees him available now
    staff.open("staff")
    staff.wait_section("staff")
    staff.until(lambda: staff.status_of("Ben Baker") == "Available now", 15, "Ben available")
    assert staff.status_of("Olivia Owner") == "Does not answer calls"
    assert staff.text(".dash-summary") == "1 of 1 available for calls now"
    staff.d.execute_script("document.querySelector('.dash-summary').scrollIntoView()")
    check_page(admin, "dashboard-staff")

    # API keys: created (shown once), works against the API, revoked: 401
    keys = KeysSection(admin, control.url)
    keys.go("API keys", "keys")
    secret = keys.create("CRM sync")
    assert secret.startswith("ck_live_")
    assert httpx.get(f"{control.url}/v1/staff", headers=bearer(secret), timeout=10).is_success
    check_page(admin, "dashboard-keys-created")
    keys.revoke("CRM sync")
    keys.until(lambda: "Revoked" in keys.row("CRM sync").text, 10, "the key revoked")
    r = httpx.get(f"{control.url}/v1/staff", headers=bearer(secret), timeout=10)
    assert r.status_code == 401
    assert httpx.get(f"{control.url}/v1/staff", headers=bearer(key), timeout=10).is_success
    check_page(admin, "dashboard-keys")

    # deactivating Ben: Escape leaves the confirmation with nothing done, focus back on the
    # button; confirmed, he is signed out at once
    staff.go("Staff", "staff")
    staff.until(lambda: staff.has_button("Deactivate Ben Baker"), 10, "the team drawn")
    staff.button("Deactivate Ben Baker").click()
    dialog = staff.until(
        lambda: staff.d.find_element("css selector", "dialog.dash-dialog[open]"), 10, "dialog"
    )
    assert "signed out at once" in dialog.text
    assert staff.focused().text == "Cancel"
    assert axe_violations(admin.driver) == []
    screenshot(admin.driver, "dashboard-staff-deactivate")
    staff.focused().send_keys(Keys.ESCAPE)
    staff.until(lambda: not staff.d.find_elements("css selector", "dialog"), 10, "closed")
    assert staff.focused().get_attribute("aria-label") == "Deactivate Ben Baker"
    assert staff.status_of("Ben Baker") == "Available now"
    staff.deactivate("Ben Baker")
    staff.until(lambda: staff.status_of("Ben Baker") == "Deactivated", 10, "Ben deactivated")
    ben.driver.get(control.url + "/console")
    assert SignInPage(ben, control.url).form.is_displayed()

    # Back returns to the keys section; every other section is drawn (each has its own test)
    admin.driver.back()
    keys.wait_section("keys")
    assert keys.current == "keys"
    dash.go("Links", "links")  # drawn: tests/web/test_web_dashboard_links.py
    dash.go("Calls", "calls")  # drawn: tests/web/test_web_dashboard_calls.py
    dash.go("Privacy", "privacy")  # drawn: tests/web/test_web_dashboard_privacy.py
    dash.go("Analytics", "analytics")  # drawn: tests/web/test_web_dashboard_analytics.py
    assert not dash.d.find_elements(By.CSS_SELECTOR, ".dash-coming")


@pytest.mark.timeout(180)
def test_a_second_business_sees_none_of_the_first(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    _, url_a = business(control, "Acme Cycles", "anna@cycles.test")
    _, url_b = business(control, "Bolt Scooters", "bert@bolt.test")
    a = open_browser()
    become_admin(a, control, url_a, "anna's long password")
    staff = StaffSection(a, control.url)
    staff.open("staff")
    staff.wait_section("staff")
    staff.invite("Carla Cycles", "carla@cycles.test")
    keys = KeysSection(a, control.url)
    keys.go("API keys", "keys")
    keys.create("Cycles CRM")
    b = open_browser(phone=True)  # on a phone, in German
    InvitePage(b, control.url).open(url_b + "?lang=de").set_password("bert's long password")
    theirs = StaffSection(b, control.url)
    theirs.until(lambda: b.driver.current_url.endswith("/dashboard"), 15, "the dashboard")
    theirs.d.get(control.url + "/dashboard/staff?lang=de")
    theirs.wait_section("staff")
    theirs.until(lambda: theirs.rows(), 10, "the team")
    assert [r[1] for r in theirs.rows()] == ["bert@bolt.test"]
    assert theirs.heading == "Team" and "Jemanden einladen" in theirs.text(".dash-view")
    check_page(b, "dashboard-staff-phone-de")
    b.driver.get(control.url + "/dashboard/keys")
    keys_b = KeysSection(b, control.url)
    keys_b.wait_section("keys")
    keys_b.until(lambda: keys_b.rows(), 10, "the keys")
    assert all("Cycles" not in " ".join(r) for r in keys_b.rows())
    assert len(keys_b.rows()) == 1  # the operator's key of Bolt Scooters, unnamed


@pytest.mark.timeout(180)
def test_two_step_sign_in(control: WebControl, open_browser: Callable[..., Browser]) -> None:
    _, url = business(control, "Acme Repairs", "rita@repairs.test")
    password = "rita's long password " + secrets.token_hex(4)
    b = open_browser()
    become_admin(b, control, url, password)
    settings = SettingsSection(b, control.url)
    settings.go("Settings", "settings")
    check_page(b, "dashboard-settings")
    secret = settings.start_totp()
    qr = b.driver.find_element("css selector", "img.dash-qr")
    assert str(qr.get_attribute("src")).startswith("data:image/svg+xml")
    assert b.driver.execute_script("return arguments[0].naturalWidth", qr) > 0
    check_page(b, "dashboard-totp-setup")
    codes = settings.confirm_totp(accounts.totp_code(secret, time.time()))
    assert len(codes) == 10
    check_page(b, "dashboard-totp-recovery")
    settings.button("I have saved these codes").click()
    settings.until(lambda: "10 recovery codes left" in settings.text("#tfa-title + p"), 10, "on")

    settings.sign_out()
    signin = SignInPage(b, control.url)
    signin.until(lambda: signin.form.is_displayed(), 10, "the sign-in form")
    signin.sign_in("rita@repairs.test", password)
    code = CodePage(b, control.url)
    code.until(lambda: b.driver.current_url.endswith("/console/signin/code"), 10, "code form")
    check_page(b, "dashboard-code")
    wrong = "000000" if accounts.totp_code(secret, time.time()) != "000000" else "111111"
    code.enter(wrong)
    code.until(lambda: code.error, 10, "the wrong-code message")
    assert code.error.startswith("This code is wrong or has expired")
    assert b.driver.find_element("id", "code").get_attribute("aria-invalid") == "true"
    assert fetch_status(b, "GET", "/v1/me") == 401  # still not signed in
    code.enter(accounts.totp_code(secret, time.time() + 30))  # the next step: not used yet
    dash = Dashboard(b, control.url)
    dash.until(lambda: b.driver.current_url.endswith("/dashboard"), 15, "the dashboard")
    dash.wait_section("home")
    check_page(b, "dashboard-after-code")


@pytest.mark.timeout(180)
def test_roles_change_in_the_team_table(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    _, url = business(control, "Acme Rentals", "olivia@rentals.test")
    admin = open_browser()
    become_admin(admin, control, url, "olivia's long password")
    staff = StaffSection(admin, control.url)
    staff.go("Staff", "staff")
    link = staff.invite("Ben Baker", "ben@rentals.test")
    ben = open_browser()
    InvitePage(ben, control.url).open(link).set_password("ben's long password")
    console = ConsolePage(ben, control.url)
    console.until(lambda: ben.driver.current_url.endswith("/console"), 15, "Ben's console")
    console.wait_ready()
    staff.until(lambda: staff.rows() and len(staff.rows()) == 2, 10, "the team")
    assert staff.roles("Ben Baker").first_selected_option.text == "Answers calls"
    assert staff.roles("Olivia Owner").first_selected_option.text == "Admin"

    # the only admin giving the role up: asked first, then refused beside the select
    staff.set_roles("Olivia Owner", "Answers calls")
    dialog = staff.until(
        lambda: staff.d.find_element(By.CSS_SELECTOR, "dialog.dash-dialog[open]"), 10, "dialog"
    )
    assert "no longer run the business's account" in dialog.text
    staff.confirm()
    staff.until(lambda: staff.roles_error("Olivia Owner"), 10, "the refusal")
    assert staff.roles_error("Olivia Owner").startswith("the business must keep at least one")
    select = staff.row("Olivia Owner").find_element(By.CSS_SELECTOR, "select")
    assert select.get_attribute("aria-invalid") == "true"
    assert staff.roles("Olivia Owner").first_selected_option.text == "Admin"  # put back
    check_page(admin, "dashboard-staff-roles-refused")

    # Ben becomes admin as well (nothing taken away: no question); the dashboard opens to him
    staff.set_roles("Ben Baker", "Answers calls + Admin")
    staff.until(lambda: staff.announced() == "The roles of Ben Baker were changed.", 10, "done")
    assert not staff.d.find_elements(By.CSS_SELECTOR, "dialog")
    assert fetch_status(ben, "GET", "/v1/dashboard/staff") == 200

    # ... then stops answering calls: asked first, and his console closes at once
    staff.set_roles("Ben Baker", "Admin")
    dialog = staff.until(
        lambda: staff.d.find_element(By.CSS_SELECTOR, "dialog.dash-dialog[open]"), 10, "dialog"
    )
    assert "will no longer answer calls" in dialog.text
    check_page(admin, "dashboard-staff-roles-confirm")
    staff.confirm()
    console.wait_state("signed-out", timeout=15)
    staff.until(lambda: staff.status_of("Ben Baker") == "Does not answer calls", 10, "status")
    assert staff.roles("Ben Baker").first_selected_option.text == "Admin"
    # the Privacy section's audit log says who changed what, newest first
    privacy = PrivacySection(admin, control.url)
    privacy.go("Privacy", "privacy")
    privacy.wait_audit("Roles changed")
    rows = privacy.audit_rows()
    assert [r[1:3] for r in rows[:3]] == [["Olivia Owner", "Roles changed"]] * 2 + [
        ["Olivia Owner", "Member invited"]
    ], rows
    assert rows[0][-1] == "Ben Baker: Answers calls + Admin → Admin"
    assert rows[1][-1] == "Ben Baker: Answers calls → Answers calls + Admin"
    assert rows[2][-1] == "Ben Baker: Answers calls"
    check_page(admin, "dashboard-privacy-audit-roles")
    staff.go("Staff", "staff")
    staff.until(lambda: len(staff.rows()) == 2, 10, "the team")
    # and Olivia may now hand over her admin role; her next dashboard request is refused
    staff.set_roles("Olivia Owner", "Answers calls")
    staff.confirm()
    staff.until(lambda: fetch_status(admin, "GET", "/v1/dashboard/staff") == 403, 10, "403")
    admin.driver.get(control.url + "/dashboard/staff")
    assert admin.driver.find_element(By.TAG_NAME, "h1").text == (
        "This page is for the business's admins"
    )
