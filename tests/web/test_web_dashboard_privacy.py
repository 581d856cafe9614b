"""The dashboard's Privacy section and the business's settings in real Chromium. Calls are made
through the real API and the business records a visitor's email on them; the admin finds the
visitor by the call reference they were shown (typed sloppily), downloads the export (the file
Chromium saved equals the API's export), corrects a field (a bad one is explained beside it),
erases through the confirmation dialog that names the call, and finds nothing afterwards; the
audit log shows the export and the erasure with the subject as a keyed hash only. In Settings
a bad retention and an empty region choice are explained beside their fields and store
nothing, a good change is stored and shows in the audit log. axe-core, the cookie audit and
screenshots (build/screenshots/dashboard-privacy*, dashboard-settings*) on a desktop and on a
phone in German."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.controlproc import bearer
from tests.web.browser import Browser, missing, screenshot
from tests.web.dashpages import PrivacySection
from tests.web.test_web_dashboard import become_admin, business, check_page, fetch_status
from tests.web.webcontrol import WebControl

pytestmark = [pytest.mark.slow]

ANN = "ann@example.com"


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


def beat(control: WebControl, node: str = "n1", region: str = "eu") -> None:
    body = {"node_id": node, "region": region, "urls": [f"turn:{node}.example:3478"]}
    r = httpx.post(
        f"{control.url}/v1/nodes/heartbeat",
        json=body,
        headers=bearer(control.node_secret),
        timeout=10,
    )
    r.raise_for_status()


def visits(control: WebControl, key: str, refs: list[str | None]) -> list[dict[str, Any]]:
    """One ended call per entry, the visitor's email recorded on it through the API."""
    th = bearer(key)
    out = []
    with httpx.Client(base_url=control.url, timeout=10) as c:
        r = c.post("/v1/staff", json={"name": "Ann"}, headers=th)
        r.raise_for_status()
        r = c.post(
            "/v1/links", json={"name": "Help desk", "ring_staff": [r.json()["id"]]}, headers=th
        )
        r.raise_for_status()
        public = r.json()["public_id"]
        for ref in refs:
            beat(control)
            r = c.post(f"/v1/links/{public}/calls", json={})
            r.raise_for_status()
            v = r.json()
            if ref is not None:
                r = c.patch(f"/v1/calls/{v['call_id']}", json={"visitor_ref": ref}, headers=th)
                r.raise_for_status()
            c.post(
                f"/v1/calls/{v['call_id']}/hangup", headers=bearer(v["token"])
            ).raise_for_status()
            out.append(v)
    return out


def new_business(control: WebControl, name: str, email: str) -> tuple[str, str, str]:
    """As tests/web/test_web_dashboard.business, with the tenant's id: (key, invitation, id)."""
    r = httpx.post(
        f"{control.url}/v1/tenants",
        json={"name": name, "admin_email": email, "admin_name": "Olivia Owner"},
        headers=control.oh,
        timeout=10,
    )
    r.raise_for_status()
    body = r.json()
    invitation = urljoin(control.url + "/", body["admin"]["invitation_url"])
    return body["api_key"]["key"], invitation, body["tenant"]["id"]


def downloaded(folder: Path, name: str, timeout: float = 15.0) -> bytes:
    path = folder / name
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and not list(folder.glob("*.crdownload")):
            return path.read_bytes()
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded: {sorted(p.name for p in folder.iterdir())}")


def sloppy(ref: str) -> str:
    """A call reference as a visitor reads it out: lower case, a space, O for 0, l for 1."""
    return ref.replace("-", " ").lower().replace("0", "o").replace("1", "l")


@pytest.mark.timeout(300)
def test_an_admin_finds_exports_corrects_and_erases_a_visitor_then_sets_retention(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    key, url, tenant_id = new_business(control, "Acme Bikes", "olivia@privacy.test")
    first, second, bob = visits(control, key, [ANN, ANN, "bob@example.com"])
    admin = open_browser()
    dash = become_admin(admin, control, url, "olivia's long password")
    privacy = PrivacySection(admin, control.url)
    privacy.go("Privacy", "privacy")
    assert admin.driver.current_url.endswith("/dashboard/privacy")
    assert privacy.heading == "Privacy" and privacy.current == "privacy"
    check_page(admin, "dashboard-privacy")

    # a reference that cannot be one: explained beside the field
    privacy.find("Call reference shown to the visitor", "K7Q2")
    assert privacy.errors() == ["must be 8 letters and digits, such as K7Q2-M9XD"]
    value = admin.driver.find_element(By.ID, "privacy-value")
    assert value.get_attribute("aria-invalid") == "true" and privacy.focused() == value

    # the call reference as the visitor read it out: that one call
    privacy.find("Call reference shown to the visitor", sloppy(first["call_ref"]))
    assert privacy.errors() == []
    assert privacy.found == "Calls found: 1"
    (row,) = privacy.result_rows()
    assert row[0] == first["call_ref"] and row[3] == ANN
    api = httpx.get(
        f"{control.url}/v1/subjects",
        params={"call_ref": first["call_ref"]},
        headers=bearer(key),
        timeout=10,
    ).json()
    assert api["subject"] and api["subject"] in privacy.text("clickacall-dash-privacy")
    check_page(admin, "dashboard-privacy-found")

    # the export, as Chromium saves it: the API's export
    folder = Path(tempfile.mkdtemp(prefix="clickacall-export-"))
    admin.driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)}
    )
    admin.driver.find_element(By.LINK_TEXT, "Download export (JSON)").click()
    saved = json.loads(downloaded(folder, "visitor-call-ref-export.json"))
    assert {**saved, "exported_at": 0} == {**api, "exported_at": 0}
    assert [c["id"] for c in saved["calls"]] == [first["call_id"]]

    # correct: a network that keeps too much is refused beside its field, then a good one
    privacy.fill("privacy-visitor-prefix", "192.0.2.7/32")
    privacy.button("Save corrections").click()
    privacy.until(lambda: privacy.errors(), 10, "the network's error")
    assert privacy.errors() == ["at most a /24 (IPv4) or /48 (IPv6) of a visitor's address is kept"]
    net = admin.driver.find_element(By.ID, "privacy-visitor-prefix")
    assert net.get_attribute("aria-invalid") == "true"
    privacy.fill("privacy-visitor-prefix", "192.0.2.0/24")
    privacy.button("Save corrections").click()
    privacy.until(lambda: "Corrected on 1 call." in privacy.status(), 10, "corrected")
    assert privacy.result_rows()[0][4] == "192.0.2.0/24"

    # erase through the dialog, which names exactly what goes
    privacy.button("Erase…").click()
    dialog = privacy.until(
        lambda: admin.driver.find_element(By.CSS_SELECTOR, "dialog.dash-dialog[open]"), 10, "dialog"
    )
    assert dialog.find_element(By.TAG_NAME, "h2").text == "Erase this visitor from 1 call?"
    words = dialog.find_element(By.TAG_NAME, "p").text
    assert first["call_ref"] in words and second["call_ref"] not in words
    check_page(admin, "dashboard-privacy-erase-dialog")
    privacy.confirm()
    privacy.until(lambda: "Erased from 1 call." in privacy.status(), 10, "erased")
    assert privacy.found == "Calls found: 0"
    # searched again: nothing by its reference; the other call of Ann's still there
    privacy.find("Call reference shown to the visitor", first["call_ref"])
    assert privacy.found == "Calls found: 0"
    privacy.find("Visitor reference (email, phone)", ANN)
    assert [r[0] for r in privacy.result_rows()] == [second["call_ref"]]

    # the audit log: the look-ups, the correction and the erasure, newest first, hashed
    privacy.wait_audit("Export / look-up")
    rows = privacy.audit_rows()
    actions = [r[2] for r in rows]
    assert actions[:6] == [
        "Export / look-up",
        "Export / look-up",
        "Export / look-up",
        "Erasure",
        "Export / look-up",
        "Correction",
    ]
    assert actions.count("Reference set") == 3  # the API key that recorded the emails
    assert rows[5][4].endswith(" · Network (at most a /24 or /48)")
    erased = rows[3]
    assert erased[1] == "Olivia Owner" and erased[3] == api["subject"][:16] + "…"
    assert erased[4] == "1 call by Call reference shown to the visitor"
    audit_text = privacy.text("section[aria-labelledby=audit-title]")
    assert ANN not in audit_text and "bob@" not in audit_text
    admin.driver.execute_script("document.getElementById('audit-title').scrollIntoView()")
    screenshot(admin.driver, "dashboard-privacy-audit")
    assert bob["call_id"] not in audit_text

    # Settings: retention and regions (a second region now has a relay node)
    beat(control, "n2", "us-east")
    privacy.go("Settings", "settings")
    privacy.until(lambda: admin.driver.find_elements(By.ID, "set-retention"), 10, "settings")
    assert admin.driver.find_element(By.ID, "set-region-eu").is_selected()
    assert not admin.driver.find_element(By.ID, "set-region-us-east").is_selected()
    privacy.fill("set-retention", "0")
    privacy.button("Save").click()
    privacy.until(lambda: privacy.errors(), 10, "the retention's error")
    assert privacy.errors() == ["Choose a whole number of months from 1 to 60."]
    months = admin.driver.find_element(By.ID, "set-retention")
    assert months.get_attribute("aria-invalid") == "true" and privacy.focused() == months
    privacy.fill("set-retention", "12")
    admin.driver.find_element(By.ID, "set-region-eu").click()  # none left
    privacy.button("Save").click()
    privacy.until(lambda: privacy.errors(), 10, "the regions' error")
    assert privacy.errors() == ["Choose at least one region."]
    regions = admin.driver.find_element(By.ID, "set-regions")
    assert regions.get_attribute("aria-invalid") == "true"
    assert privacy.focused().get_attribute("id") == "set-region-eu"
    check_page(admin, "dashboard-settings-bad")
    tenant = httpx.get(
        f"{control.url}/v1/tenants/{tenant_id}", headers=control.oh, timeout=10
    ).json()
    assert (tenant["retention_months"], tenant["allowed_regions"]) == (60, ["eu"])
    admin.driver.find_element(By.ID, "set-region-eu").click()
    admin.driver.find_element(By.ID, "set-region-us-east").click()
    privacy.button("Save").click()
    privacy.until(lambda: "Saved." in privacy.text("clickacall-dash-settings"), 10, "saved")
    assert privacy.errors() == []
    tenant = httpx.get(
        f"{control.url}/v1/tenants/{tenant['id']}", headers=control.oh, timeout=10
    ).json()
    assert (tenant["retention_months"], tenant["allowed_regions"]) == (12, ["eu", "us-east"])
    check_page(admin, "dashboard-settings")
    # and the audit log says who changed what
    privacy.go("Privacy", "privacy")
    privacy.wait_audit("Settings changed")
    top = privacy.audit_rows()[0]
    assert top[1] == "Olivia Owner"
    assert top[4] == "Regions: eu → eu, us-east; Retention (months): 60 → 12"
    assert dash.current == "privacy"


@pytest.mark.timeout(240)
def test_the_privacy_and_settings_pages_on_a_phone_in_german(
    control: WebControl, open_browser: Callable[..., Browser]
) -> None:
    key, url = business(control, "Kaffee Klatsch", "inhaber@kaffee-privacy.test")
    (v,) = visits(control, key, ["gast@example.de"])
    _, other_url = business(control, "Bolt", "owner@bolt-privacy.test")
    b = open_browser(phone=True, flags=("--lang=de",))
    become_admin(b, control, url, "ein langes Passwort")
    privacy = PrivacySection(b, control.url)
    b.driver.get(f"{control.url}/dashboard/privacy?lang=de")
    privacy.wait_section("privacy")
    assert privacy.heading == "Datenschutz"
    privacy.find("Besucherkennung (E-Mail, Telefon)", "gast@example.de")
    assert privacy.found == "Gefundene Anrufe: 1"
    check_page(b, "dashboard-privacy-phone-de")
    privacy.wait_audit("Export / Suche")
    b.driver.execute_script("document.getElementById('audit-title').scrollIntoView()")
    screenshot(b.driver, "dashboard-privacy-phone-de-audit")
    b.driver.get(f"{control.url}/dashboard/settings?lang=de")
    privacy.until(lambda: b.driver.find_elements(By.ID, "set-retention"), 10, "settings")
    privacy.fill("set-retention", "61")
    privacy.button("Speichern").click()
    privacy.until(lambda: privacy.errors(), 10, "the retention's error")
    assert privacy.errors() == ["Wählen Sie eine ganze Zahl von Monaten von 1 bis 60."]
    check_page(b, "dashboard-settings-phone-de")
    # another business's admin finds none of it, and cannot erase it
    bolt = open_browser()
    become_admin(bolt, control, other_url, "bolt's long password")
    bolt.driver.get(f"{control.url}/dashboard/privacy")
    other = PrivacySection(bolt, control.url)
    other.wait_section("privacy")
    other.find("Call reference shown to the visitor", v["call_ref"])
    assert other.found == "Calls found: 0"
    assert fetch_status(bolt, "DELETE", f"/v1/dashboard/subjects?call_id={v['call_id']}") == 404
    r = httpx.get(
        f"{control.url}/v1/subjects",
        params={"call_id": v["call_id"]},
        headers=bearer(key),
        timeout=10,
    )
    assert r.json()["calls"][0]["visitor_ref"] == "gast@example.de"
