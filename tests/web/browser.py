#!/usr/bin/env python3
"""Drives Debian's Chromium (headless, through chromedriver and Selenium)
against a running coordinator's web surface, for tests/tests/web_surface.rs.

Usage: browser.py CONFIG.json

CONFIG holds: base (http://127.0.0.1:PORT), artifacts (a directory for
screenshots), ctl (argv prefix that runs rewindctl against the coordinator,
with env), product, version, tokens {viewer, operator, approver}, agents
(how many endpoints), canary (how many in the canary wave).

Each step asserts what a user would see; a failed step raises with the page
text, so the Rust test prints why. On success it prints one JSON object of
observations on stdout.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 90


def browser(js=True, width=1280, height=900, phone=False):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
        "--user-data-dir=" + tempfile.mkdtemp(prefix="rewind-chromium-"),
    ]:
        opts.add_argument(a)
    if phone:
        # Headless windows are at least 500 px wide: emulate the phone's
        # viewport (390 x 844 CSS px, like a current iPhone) instead.
        opts.add_experimental_option(
            "mobileEmulation", {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 3.0, "touch": True}}
        )
    if not js:
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def text(d):
    return d.find_element(By.TAG_NAME, "body").text


def wait(d, what, pred, timeout=WAIT):
    try:
        # The live fragment is replaced wholesale: an element found a moment
        # ago may be gone; look again on the next poll.
        ignored = (StaleElementReferenceException, NoSuchElementException)
        return WebDriverWait(d, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(lambda d: pred(d))
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; the page shows:\n{text(d)}")


def ctl(cfg, *args):
    env = dict(os.environ)
    env.update(cfg["ctl_env"])
    r = subprocess.run(cfg["ctl"] + list(args), env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"rewindctl {' '.join(args)}: exit {r.returncode}: {r.stdout}{r.stderr}"
    return r.stdout


def state_of(d, product):
    els = d.find_elements(By.CSS_SELECTOR, f'[data-product="{product}"] [data-state]')
    return els[0].get_attribute("data-state") if els else None


def sign_in(d, cfg, token):
    d.get(cfg["base"] + "/ui")
    wait(d, "the sign-in form", lambda d: d.find_elements(By.ID, "token"))
    d.find_element(By.ID, "token").send_keys(token)
    d.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()
    wait(d, "the dashboard", lambda d: d.find_elements(By.ID, "agents"))


def is_stale(element):
    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True
    except WebDriverException as e:
        # While the old document is being replaced, Chromium answers for a
        # node of it with an inspector error rather than "stale element".
        if "does not belong to the document" in str(e):
            return True
        raise


def sign_out(d):
    d.find_element(By.CSS_SELECTOR, "form[action='/ui/logout'] button").click()
    wait(d, "the sign-in form", lambda d: d.find_elements(By.ID, "token"))


def click_action(d, action):
    button = d.find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]')
    button.click()
    # The form posts and the dashboard loads again: wait until the page the
    # button was on is gone, else the old page (which has #agents too) is
    # read before the answer arrives.
    wait(d, f"the answer to {action}", lambda d: is_stale(button))
    wait(d, f"the dashboard after {action}", lambda d: d.find_elements(By.ID, "agents"))
    flash = d.find_elements(By.CSS_SELECTOR, ".flash")
    assert flash and "ok" in flash[0].get_attribute("class"), f"{action}: {flash[0].text if flash else text(d)}"
    return flash[0].text


def no_horizontal_overflow(d):
    return d.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth]"
    )


def main():
    cfg = json.load(open(sys.argv[1]))
    base, product, art = cfg["base"], cfg["product"], cfg["artifacts"]
    os.makedirs(art, exist_ok=True)
    out = {}

    # 1. The status page before the rollout, then live while it advances.
    d = browser()
    try:
        d.get(base + "/status")
        wait(d, "the product section", lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-product="{product}"]'))
        assert state_of(d, product) is None, text(d)
        assert "No rollout yet" in text(d), text(d)
        wait(d, "the SSE stream to deliver a first snapshot", lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "1")
        d.execute_script("window.__rewindMarker = 'same page';")
        ctl(cfg, "rollout", "start", product, cfg["version"])
        wait(d, "the rollout to appear without a reload", lambda d: state_of(d, product) is not None)
        out["first_live_state"] = state_of(d, product)
        wait(
            d,
            "the canary wave to report success live",
            lambda d: f'{cfg["canary"]} succeeded' in d.find_element(By.CSS_SELECTOR, f'[data-product="{product}"] [data-wave="canary"]').text,
        )
        wait(d, "the rollout to wait for approval", lambda d: state_of(d, product) == "awaiting_approval")
        assert d.execute_script("return window.__rewindMarker") == "same page", "the page reloaded instead of updating"
        out["live_state"] = state_of(d, product)
        out["live_seq"] = int(d.find_element(By.ID, "live").get_attribute("data-seq"))
        out["migration"] = d.find_element(By.CSS_SELECTOR, f'[data-product="{product}"] .migration').text
        d.save_screenshot(os.path.join(art, "status-desktop.png"))
    finally:
        d.quit()

    # 2. A phone: 390 px wide, nothing wider than the screen.
    d = browser(width=390, height=844, phone=True)
    try:
        d.get(base + "/status")
        wait(d, "the product section", lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-product="{product}"]'))
        sw, cw, iw = no_horizontal_overflow(d)
        assert iw <= 400, f"window is {iw}px wide"
        assert sw <= cw, f"horizontal overflow at {iw}px: scrollWidth {sw} > clientWidth {cw}"
        out["phone"] = {"scroll_width": sw, "client_width": cw}
        d.save_screenshot(os.path.join(art, "status-phone.png"))
    finally:
        d.quit()

    # 3. The dashboard: refused without a token, viewer sees but has no
    # buttons, operator pauses and resumes, approver approves.
    d = browser()
    try:
        d.get(base + "/ui")
        wait(d, "the sign-in form", lambda d: d.find_elements(By.ID, "token"))
        assert d.current_url.endswith("/ui/login"), d.current_url
        assert not d.find_elements(By.ID, "agents"), "the dashboard showed without a token"
        d.find_element(By.ID, "token").send_keys("rwa_not-a-token")
        d.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()
        wait(d, "the refusal", lambda d: "Unknown operator token" in text(d))
        out["bad_token_refused"] = True

        sign_in(d, cfg, cfg["tokens"]["viewer"])
        rows = d.find_elements(By.CSS_SELECTOR, "table.agents tbody tr")
        assert len(rows) == cfg["agents"], text(d)
        assert all("connected" in r.text for r in rows), text(d)
        assert not d.find_elements(By.CSS_SELECTOR, "button[data-action]"), "a viewer was offered actions"
        out["viewer_buttons"] = 0
        out["viewer_sections"] = [s.get_attribute("id") for s in d.find_elements(By.CSS_SELECTOR, "section.card[id]")]
        d.save_screenshot(os.path.join(art, "ui-viewer.png"))
        sign_out(d)

        sign_in(d, cfg, cfg["tokens"]["operator"])
        offered = sorted(b.get_attribute("data-action") for b in d.find_elements(By.CSS_SELECTOR, "button[data-action]"))
        assert "pause" in offered and "approve" not in offered, offered
        out["operator_offered"] = offered
        out["pause_flash"] = click_action(d, "pause")
        assert "paused" in out["pause_flash"], out["pause_flash"]
        out["paused_per_rewindctl"] = ctl_status(cfg)
        sign_out(d)
    finally:
        d.quit()

    # 4. Without JavaScript: the content is there and the page refreshes
    # itself (the meta refresh inside <noscript>) to follow the rollout.
    d = browser(js=False)
    try:
        d.get(base + "/status")
        assert product in text(d), text(d)
        assert state_of(d, product) == "paused", text(d)
        refresh = d.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
        assert refresh and refresh[0].get_attribute("content") == "5", d.page_source[:800]
        assert d.find_element(By.TAG_NAME, "body").get_attribute("data-live") is None, "scripts ran with JS off"
        ctl(cfg, "rollout", "resume", product)
        started = time.time()
        wait(d, "the no-JS page to show the resumed rollout after a refresh", lambda d: state_of(d, product) == "awaiting_approval")
        out["nojs_updated_after_s"] = round(time.time() - started, 1)
        d.save_screenshot(os.path.join(art, "status-nojs.png"))
    finally:
        d.quit()

    # 5. An approver approves the waiting wave from the dashboard.
    d = browser()
    try:
        sign_in(d, cfg, cfg["tokens"]["approver"])
        offered = sorted(b.get_attribute("data-action") for b in d.find_elements(By.CSS_SELECTOR, "button[data-action]"))
        assert "approve" in offered, offered
        out["approver_offered"] = offered
        out["approve_flash"] = click_action(d, "approve")
        d.save_screenshot(os.path.join(art, "ui-approver.png"))
        sign_out(d)
    finally:
        d.quit()

    # 6. An operator rolls the release back from the dashboard while the
    # status page is open in another tab: the incident appears there live,
    # with the message rendered from the release's template.
    d = browser()
    try:
        wait(d, "the rollout to finish", lambda d: ctl_status(cfg) == "done", timeout=WAIT)
        d.get(base + "/status")
        status_tab = d.current_window_handle
        wait(d, "the SSE stream", lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "1")
        assert not d.find_elements(By.CSS_SELECTOR, ".incident"), text(d)
        d.execute_script("window.__rewindMarker = 'same page';")
        d.switch_to.new_window("tab")
        sign_in(d, cfg, cfg["tokens"]["operator"])
        out["rollback_flash"] = click_action(d, "rollback")
        d.switch_to.window(status_tab)
        wait(d, "the incident on the status page", lambda d: d.find_elements(By.CSS_SELECTOR, f'[data-product="{product}"] .incident'))
        wait(d, "the rollback to complete live", lambda d: state_of(d, product) == "rolled_back")
        # The incident is written by its own task after the transition: its
        # "rollback complete" update (then "resolved", for a fleet-wide
        # rollback) may arrive a moment after the state.
        wait(d, "the incident's timeline to show the rollback completed", lambda d: "rollback complete" in d.find_element(
            By.CSS_SELECTOR, f'[data-product="{product}"] .incident').text)
        assert d.execute_script("return window.__rewindMarker") == "same page", "the page reloaded instead of updating"
        inc = d.find_element(By.CSS_SELECTOR, f'[data-product="{product}"] .incident')
        out["incident"] = {"event": inc.get_attribute("data-event"), "state": inc.get_attribute("data-state"), "text": inc.text}
        d.save_screenshot(os.path.join(art, "status-incident.png"))
    finally:
        d.quit()

    print(json.dumps(out))


def ctl_status(cfg):
    s = json.loads(ctl(cfg, "rollout", "status", cfg["product"], "--json"))
    return s["state"]


if __name__ == "__main__":
    main()
