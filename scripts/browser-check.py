"""The dashboard and the operator console in a real browser: headless Chromium (Debian's `chromium`, driven by
`chromedriver` over the W3C WebDriver protocol) against `make run`, with nothing else running.

The customer path: signup -> the verification link from the local mailbox -> sign out, a password reset
through its mailed link, sign in with the new password -> KYC (inline validation first)
-> top-up through the Razorpay stand-in's checkout page -> an API key -> a call with that key -> the usage
chart and table show it, and the CSV holds it -> a data export -> a new policy's banner, accepted -> closing
the account. The operator path, in
manual KYC mode, sits inside it: the queue lists the submission, a full number is revealed (with a reason),
and the submission is approved. Every page is also checked at 360 px wide (nothing wider than the screen)
and for Content-Security-Policy violations and script errors in the browser's console.

Screenshots of each page go to target/browser-artifacts/ (with the server's log); `--readme-images` also
copies the two the README shows to docs/images/. Ends with one line `browser: N passed, N failed`.
"""

import base64
import csv
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "target", "browser-artifacts")
README_IMAGES = {"wallet-desktop.png": "dashboard-wallet.png", "ops-kyc-queue-desktop.png": "ops-kyc-queue.png"}
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 20
PASSWORD = "correct horse battery"

_spec = importlib.util.spec_from_file_location("make_run_check", os.path.join(ROOT, "scripts", "make-run-check.py"))
make_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_run)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import totp_code  # noqa: E402

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
TAB = "\ue004"


class WebDriverError(Exception):
    pass


class Browser:
    """The few W3C WebDriver commands the checks need, over plain HTTP."""

    def __init__(self, port, downloads):
        self.base = f"http://127.0.0.1:{port}"
        options = {
            "binary": CHROMIUM,
            # Without the background-networking flags, Chromium keeps dialling Google's hosts, which a closed
            # network refuses; root needs --no-sandbox.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-quic", "--window-size=1280,900", f"--user-data-dir={tempfile.mkdtemp()}"],
            "prefs": {"download.default_directory": downloads, "download.prompt_for_download": False},
        }
        caps = {"browserName": "chrome", "goog:chromeOptions": options, "goog:loggingPrefs": {"browser": "ALL"}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        self.cmd("POST", "/goog/cdp/execute", {"cmd": "Browser.setDownloadBehavior",
                                               "params": {"behavior": "allow", "downloadPath": downloads}})

    def _call(self, method, path, body=None):
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}").get("value")
        except urllib.error.HTTPError as error:
            raise WebDriverError(error.read().decode(errors="replace")[:500]) from None

    def cmd(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def go(self, url):
        self.cmd("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find_all(self, css):
        return [e[ELEMENT] for e in self.cmd("POST", "/elements", {"using": "css selector", "value": css})]

    def visible(self, css):
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return !!e && !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);", css)

    def wait(self, css, timeout=WAIT_S):
        """The first element matching css, once it is shown."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.visible(css):
                return self.find_all(css)[0]
            time.sleep(0.1)
        raise WebDriverError(f"{css} was not shown within {timeout} s on {self.url()}: {self.text('#flash')!r}")

    def wait_until(self, what, predicate, timeout=WAIT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise WebDriverError(f"{what}: not within {timeout} s on {self.url()}; flash: {self.text('#flash')!r}")

    def text(self, css):
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css)

    def url(self):
        return self.cmd("GET", "/url")

    def type(self, css, text, clear=True):
        element = self.wait(css)
        if clear:
            self.cmd("POST", f"/element/{element}/clear")
        self.cmd("POST", f"/element/{element}/value", {"text": text})

    def click(self, css):
        element = self.wait(css)
        self.cmd("POST", f"/element/{element}/click")

    def keys(self, text):
        """Keystrokes to whatever has the focus."""
        actions = [{"type": "keyDown", "value": k} for k in text] + [{"type": "keyUp", "value": k} for k in text]
        self.cmd("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})

    def resize(self, width, height):
        self.cmd("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, name):
        with open(os.path.join(ARTIFACTS, name), "wb") as out:
            out.write(base64.b64decode(self.cmd("GET", "/screenshot")))

    def console(self):
        """Console entries since the last call (CSP violations and uncaught errors are SEVERE)."""
        return self.cmd("POST", "/se/log", {"type": "browser"}) or []

    def quit(self):
        try:
            self.cmd("DELETE", "")
        except (WebDriverError, OSError):
            pass


def mailed_link(browser, base, email, kind):
    """The first link of the newest e-mail of this kind to this address, from make run's mailbox."""
    return browser.wait_until(f"the {kind} e-mail", lambda: next(
        (m["links"][0] for m in (make_run.call(base, "GET", "/_mail")[1] or {}).get("data", [])
         if m.get("to") == email and m.get("kind") == kind and m.get("links")), None))


def start_chromedriver():
    port = make_run.free_port()
    log = open(os.path.join(ARTIFACTS, "chromedriver.log"), "wb")
    process = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as response:
                if json.loads(response.read())["value"]["ready"]:
                    return process, port
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            time.sleep(0.2)
    raise WebDriverError("chromedriver did not start")


def main():
    readme_images = "--readme-images" in sys.argv[1:]
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not os.access(tool, os.X_OK):
            print(f"browser: FAIL {tool} is missing (scripts/ensure-tools.sh installs Debian's chromium and "
                  "chromium-driver)")
            print("browser: 0 passed, 1 failed")
            return 1
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    os.makedirs(ARTIFACTS)
    downloads = os.path.join(ARTIFACTS, "downloads")
    os.makedirs(downloads)
    passed, failed = 0, 0

    def check(name, condition, detail=""):
        nonlocal passed, failed
        if condition:
            passed += 1
            print(f"browser: ok   {name}")
        else:
            failed += 1
            print(f"browser: FAIL {name} {detail}".rstrip())

    operator_token = secrets.token_urlsafe(32)
    env = dict(os.environ)
    data_dir = tempfile.mkdtemp(prefix="inferex-browser.")
    port = make_run.free_port()
    env.update({
        "INFEREX_DATA_DIR": os.path.join(data_dir, "data"),
        "INFEREX_ADDR": f"127.0.0.1:{port}",
        "KYC_MODE": "manual",
        "INFEREX_ADMIN_TOKEN": json.dumps({"ravi@inferex.ai": {
            "token": operator_token, "roles": ["kyc_reviewer", "payments", "support", "admin"]}}),
    })
    base = f"http://127.0.0.1:{port}"
    log_path = os.path.join(ARTIFACTS, "make-run.log")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    driver, browser = None, None
    problems = []

    def page_is_clean(name):
        """Nothing on the page is wider than the screen, and the console has no CSP violation or error."""
        entries = browser.console()
        severe = [e.get("message", "") for e in entries if e.get("level") == "SEVERE"
                  # A failed API call is logged by the browser as a resource error: the page shows it instead.
                  and "Failed to load resource" not in e.get("message", "")]
        csp = [e.get("message", "") for e in entries if "Content Security Policy" in e.get("message", "")]
        if severe or csp:
            problems.append(f"{name}: {severe + csp}")

    def shot(name, mobile_too=True):
        browser.screenshot(f"{name}-desktop.png")
        if mobile_too:
            browser.resize(360, 780)
            time.sleep(0.3)
            overflow = browser.js("return document.documentElement.scrollWidth - window.innerWidth;")
            check(f"{name}: nothing is wider than a 360 px phone", overflow <= 0, f"{overflow} px too wide")
            browser.screenshot(f"{name}-mobile.png")
            browser.resize(1280, 900)
        page_is_clean(name)

    try:
        make_run.wait_for_health(base, server, log_path)
        driver, driver_port = start_chromedriver()
        browser = Browser(driver_port, downloads)
        email = f"priya-{secrets.token_hex(3)}@example.in"
        new_password = "a new and longer passphrase"

        # Sign up: policy acceptance required, marketing unticked by default; keyboard first.
        browser.go(base + "/#/signup")
        browser.wait("#signup-form")
        browser.keys(TAB)
        focused = browser.js("return document.activeElement && document.activeElement.textContent;") or ""
        check("the first Tab reaches the skip link", "skip" in focused.lower(), repr(focused))
        check("marketing e-mail is not ticked by default",
              browser.js("return document.querySelector('#signup-form [name=marketing_consent]').checked;") is False)
        browser.type("#signup-form [name=email]", email)
        browser.type("#signup-form [name=password]", PASSWORD)
        browser.type("#signup-form [name=full_name]", "Priya Sharma")
        browser.js("const e = document.querySelector('#signup-form [name=date_of_birth]'); e.value = '1992-03-14';"
                   "e.dispatchEvent(new Event('input', {bubbles: true}));")
        shot("signup")
        browser.click("#signup-form [name=accept_terms]")
        browser.click("#signup-form button[type=submit]")
        browser.wait("#verify-banner")
        check("signing up signs in and asks to verify the address", browser.visible("#verify-banner"))
        shot("overview-unverified")

        # The verification link, from the local mailbox, opened in the browser.
        browser.go(mailed_link(browser, base, email, "verify_email"))
        browser.click("#confirm")
        browser.wait_until("the link page confirms", lambda: "confirmed" in (browser.text("#status") or "").lower())
        shot("verify-email", mobile_too=False)
        browser.go(base + "/#/overview")
        browser.wait("#overview-kyc")
        check("after the link, the banner is gone", not browser.visible("#verify-banner"))

        # Sign out, forget the password, set a new one from the mailed link, sign in with it.
        browser.click("#logout")
        browser.wait("#login-form")
        browser.go(base + "/#/forgot")
        browser.type("#forgot-form [name=email]", email)
        browser.click("#forgot-form button[type=submit]")
        browser.go(mailed_link(browser, base, email, "password_reset"))
        browser.type("#password", new_password)
        browser.type("#repeat", new_password)
        browser.click("#choose button[type=submit]")
        browser.wait_until("the new password is set", lambda: "password is set" in (browser.text("#status") or ""))
        shot("reset-password", mobile_too=False)
        browser.go(base + "/#/login")
        browser.type("#login-form [name=email]", email)
        browser.type("#login-form [name=password]", PASSWORD)
        browser.click("#login-form button[type=submit]")
        browser.wait_until("the old password refused", lambda: "incorrect" in (browser.text("#flash") or "").lower())
        check("the old password no longer signs in", not browser.visible("#overview-kyc"))
        browser.type("#login-form [name=password]", new_password)
        browser.click("#login-form button[type=submit]")
        browser.wait("#overview-kyc")
        check("the new password signs in", True)
        shot("overview")

        # KYC: the form checks formats (and a GSTIN's check character) and consent before sending anything.
        browser.go(base + "/#/kyc")
        browser.wait("#kyc-form")
        check("KYC status starts as not_submitted", (browser.text("#kyc-status") or "").strip() == "not_submitted",
              repr(browser.text("#kyc-status")))
        check("no field asks for an Aadhaar number", not browser.find_all("#kyc-form [name=aadhaar]"))
        browser.type("#kyc-form [name=pan]", "ABCDE1234")
        browser.click("#kyc-form [name=name_on_pan]")
        browser.click("#kyc-form button[type=submit]")
        invalid = browser.js("return [...document.querySelectorAll('#kyc-form [aria-invalid=true]')].map(e => e.name);")
        check("a short PAN, a missing name and no consent are flagged inline",
              sorted(invalid or []) == ["consent", "name_on_pan", "pan"], repr(invalid))
        browser.click("#kyc-form [name=holder][value=business]")
        browser.type("#kyc-form [name=gstin]", "27AAPFU0939F1ZW")
        browser.click("#kyc-form [name=name_on_pan]")
        check("a business is asked for its GSTIN, whose check character is checked",
              browser.js("return document.querySelector('#kyc-form [name=gstin]').getAttribute('aria-invalid');") == "true")
        shot("kyc-invalid", mobile_too=False)
        browser.click("#kyc-form [name=holder][value=person]")
        # The stand-in verifies a PAN whose last serial digit is 0-3.
        pan = "ABCP" + "E" + str(100 + secrets.randbelow(900)) + str(secrets.randbelow(4)) + "F"
        browser.type("#kyc-form [name=pan]", pan)
        browser.type("#kyc-form [name=name_on_pan]", "PRIYA SHARMA")
        browser.click("#kyc-form [name=consent]")
        browser.click("#kyc-form button[type=submit]")
        browser.wait_until("the PAN passed", lambda: (browser.text("#kyc-pan-status") or "").strip() == "passed")
        check("after the PAN the next step is DigiLocker", browser.visible("#kyc-digilocker"))
        page_text = browser.text("body") or ""
        check("the page shows only the masked PAN", pan not in page_text)
        shot("kyc-pan-passed")
        # DigiLocker (the KYC stand-in's consent page), then back to the dashboard.
        browser.click("#kyc-digilocker")
        browser.wait("#consent")
        shot("digilocker-standin", mobile_too=False)
        browser.click('#consent button[value="allow"]')
        browser.wait_until("back on the KYC page, in review", lambda: (browser.text("#kyc-status") or "").strip() == "in_review")
        check("DigiLocker shared the last four digits only", (browser.text("#kyc-aadhaar") or "").startswith("XXXX XXXX "),
              repr(browser.text("#kyc-aadhaar")))
        aadhaar = "234123412346"
        check("the full Aadhaar number is nowhere on the page", aadhaar not in (browser.text("body") or ""))
        shot("kyc-in-review")

        # The operator, in manual mode: queue -> reveal with a reason -> approve.
        browser.go(base + "/ops")
        browser.type("#ops-login [name=token]", operator_token)
        # First time: the console enrols the authenticator and shows its otpauth:// URI once.
        browser.click("#ops-enrol")
        browser.wait_until("the authenticator's URI", lambda: (browser.text("#ops-otpauth") or "").startswith("otpauth://"))
        otpauth = browser.text("#ops-otpauth") or ""
        check("the console shows the new authenticator once, as an otpauth:// URI", "secret=" in otpauth)
        browser.type("#ops-login [name=code]", "000000")
        browser.click("#ops-login button[type=submit]")
        browser.wait_until("a wrong code refused", lambda: browser.find_all("#ops-code[aria-invalid=true]"))
        check("a wrong code is refused at the code field", bool(browser.find_all("#ops-code[aria-invalid=true]")))
        browser.type("#ops-login [name=code]", totp_code.code(otpauth))
        browser.click("#ops-login button[type=submit]")
        row = f'#kyc-queue tr[data-user]'
        browser.wait(row)
        queue_text = browser.text("#kyc-queue") or ""
        check("the queue lists the submission with the account's e-mail, the provider's evidence and masked numbers",
              email in queue_text and "Registered name: PRIYA SHARMA" in queue_text and pan not in queue_text
              and aadhaar not in queue_text, queue_text[:300])
        check("the console offers to reveal the PAN only", not browser.find_all(f'{row} [data-reveal="aadhaar"]'))
        shot("ops-kyc-queue")
        user_id = browser.js("return document.querySelector('#kyc-queue tr[data-user]').dataset.user;")
        browser.type(f"{row} [name=reveal_reason]", "name on the PAN looks cropped")
        browser.click(f'{row} [data-reveal="pan"]')
        browser.wait_until("the revealed PAN", lambda: pan in (browser.text(f"{row} .revealed") or ""))
        check("revealing shows the full PAN", True)
        shot("ops-revealed", mobile_too=False)
        browser.type(f"{row} [name=reason]", "documents match")
        browser.click(f'{row} [data-decide="approve"]')
        browser.wait_until("the row leaves the queue", lambda: not browser.find_all(row))
        check("an approved submission leaves the queue", not browser.find_all(row))
        # The operator sets the account's rate-limit ceiling.
        browser.type("#ceiling-form [name=user_id]", user_id or "")
        browser.type("#ceiling-form [name=requests_per_minute]", "600")
        browser.click("#ceiling-form button[type=submit]")
        browser.wait_until("the ceiling", lambda: "600" in (browser.text("#ceiling-result") or ""))
        check("the console sets an account's rate-limit ceiling",
              "requests a minute 600; tokens a minute no ceiling" in (browser.text("#ceiling-result") or ""),
              repr(browser.text("#ceiling-result")))
        # The admin opens a security incident: its CERT-In deadline is shown.
        browser.type("#incident-open [name=title]", "Test incident")
        browser.type("#incident-open [name=summary]", "Opened by the browser check")
        browser.click("#incident-open button[type=submit]")
        browser.wait_until("the incident", lambda: "opened" in (browser.text("#incident-result") or ""))
        check("the console opens an incident and lists it with its deadlines",
              "Test incident" in (browser.text("#incidents-table") or "")
              and "CERT-In" in (browser.text("#incident-result") or ""), repr(browser.text("#incident-result")))
        page_is_clean("ops")

        # The customer sees the decision, then tops up through the stand-in's checkout.
        browser.go(base + "/#/kyc")
        browser.wait_until("KYC verified", lambda: (browser.text("#kyc-status") or "").strip() == "verified")
        check("the customer sees KYC verified", True)
        browser.go(base + "/#/wallet")
        browser.wait("#topup-form")
        browser.type("#topup-form [name=amount_rupees]", "500")
        browser.click("#topup-form button[type=submit]")
        browser.wait_until("the refusal", lambda: "billing profile" in (browser.text("#flash") or ""))
        check("a top-up without billing details asks for them first", True)
        # The billing details every tax document is issued to: Karnataka, the supplier's state (CGST + SGST).
        browser.type("#billing-form [name=billing_name]", "Asha Rao")
        browser.type("#billing-form [name=address]", "12 MG Road, Bengaluru")
        browser.js("const s = document.querySelector('#billing-form [name=state_code]'); s.value = '29';")
        browser.type("#billing-form [name=pin]", "560001")
        browser.click("#billing-form button[type=submit]")
        browser.wait_until("the billing details", lambda: "Karnataka" in (browser.text("#flash") or ""))
        check("the billing details are saved", True)
        browser.click("#topup-form button[type=submit]")
        browser.wait("#standin-captured")
        check("the top-up opens the stand-in's checkout for ₹590.00 (₹500 and 18% GST)",
              (browser.text("#standin-amount") or "").strip() == "₹590.00", repr(browser.text("#standin-amount")))
        browser.screenshot("checkout-standin.png")
        browser.click("#standin-captured")
        browser.wait_until("the credit", lambda: "500" in (browser.text("#wallet-balance") or ""))
        balance = browser.text("#wallet-balance")
        check("after paying, the balance shows ₹500.00", "₹500.00" in (balance or ""), repr(balance))
        check("the ledger lists the credit", "500" in (browser.text("#ledger") or ""))
        browser.wait_until("the receipt voucher", lambda: "Receipt voucher" in (browser.text("#tax-documents") or ""))
        check("the tax documents list the payment's receipt voucher for ₹590.00",
              "₹590.00" in (browser.text("#tax-documents") or "") and "RV/" in (browser.text("#tax-documents") or ""),
              repr(browser.text("#tax-documents")))
        check("the payment fields are gone from the address bar", "razorpay_signature" not in browser.url())
        # The account's monthly spend limit.
        browser.type("#spend-limit-form [name=monthly_limit_rupees]", "50")
        browser.click("#spend-limit-form button[type=submit]")
        browser.wait_until("the limit", lambda: "of ₹50.00" in (browser.text("#monthly-spend") or ""))
        check("the wallet shows the monthly spend limit and this month's spend",
              "Spent this month: ₹0.00 of ₹50.00" in (browser.text("#monthly-spend") or ""),
              repr(browser.text("#monthly-spend")))
        check("no spend alert yet", "50%" in (browser.text("#spend-alerts-empty") or ""))
        shot("wallet")
        # A crafted return link (someone else's payment fields, a top-up this tab never started) does nothing.
        browser.go(base + "/#/overview")
        browser.go(base + "/#/wallet/return?topup=top_crafted&razorpay_payment_id=pay_crafted&razorpay_signature=00")
        browser.wait_until("back on the wallet", lambda: browser.url().endswith("#/wallet"))
        time.sleep(0.5)
        flash = browser.text("#flash") or ""
        check("a crafted return link verifies nothing and says nothing", "credited" not in flash and not flash.strip(),
              repr(flash))

        # An API key, shown once.
        browser.go(base + "/#/keys")
        browser.type("#key-form [name=name]", "browser check")
        browser.type("#key-form [name=daily_rupees]", "1")
        browser.click("#key-form button[type=submit]")
        browser.wait("#new-key-value")
        key = (browser.text("#new-key-value") or "").strip()
        check("the new key is shown once", key.startswith("sk-"), repr(key[:6]))
        check("the key list has it", "browser check" in (browser.text("#keys-table") or ""))
        check("and says it may call every model", "All" in (browser.text("#keys-table tbody tr") or ""))
        check("and shows its daily spend limit", "Today ₹0.00 of ₹1.00" in (browser.text("#keys-table tbody tr") or ""),
              repr(browser.text("#keys-table tbody tr")))
        shot("keys")

        # A call with the key, outside the browser, as a customer's program makes it.
        status, models = make_run.call(base, "GET", "/v1/models", token=key)
        model = ((models or {}).get("data") or [{}])[0].get("id")
        status, completion = make_run.call(base, "POST", "/v1/chat/completions", {
            "model": model, "messages": [{"role": "user", "content": "Namaste! Tell me about Chennai."}]}, token=key)
        check("a call with the key succeeds", status == 200 and bool((completion or {}).get("usage")),
              f"{status} {completion}")

        # The usage chart, table and CSV show the call.
        browser.go(base + "/#/usage")
        browser.wait("#usage-table")
        browser.wait_until("a usage row", lambda: model in (browser.text("#usage-table") or ""))
        bars = browser.js("return document.querySelectorAll('#usage-chart rect').length;")
        check("the usage chart draws the day's spend", (bars or 0) >= 1, repr(bars))
        check("the usage table lists the call's model", model in (browser.text("#usage-table") or ""))
        ran_in = browser.text("#usage-table tbody tr") or ""
        check("the usage table says where the call ran", "(India)" in ran_in or "(United States)" in ran_in, repr(ran_in))
        browser.click("#usage-csv")
        csv_path = browser.wait_until("the CSV download", lambda: next(
            (os.path.join(downloads, f) for f in os.listdir(downloads) if f.endswith(".csv")), None))
        time.sleep(0.3)
        with open(csv_path, newline="") as handle:
            rows = list(csv.reader(handle))
        check("the CSV has a header and the call", len(rows) >= 2 and any(model in r for r in rows[1:]), repr(rows[:3]))
        shot("usage")

        # The models page: every model, where it runs, and which stay in India.
        browser.go(base + "/#/models")
        browser.wait_until("the models table", lambda: "deepseek-r1-distill-llama-70b" in (browser.text("#models-table") or ""))
        models_text = browser.text("#models-table") or ""
        check("the models page names each provider's country", "(India)" in models_text and "(United States)" in models_text,
              repr(models_text[:200]))
        shot("models")

        # The account and privacy centre: an export, then closing the account.
        browser.go(base + "/#/account")
        browser.wait("#sessions-table")
        check("the account page lists this session and the login",
              bool(browser.text("#sessions-table")) and bool(browser.text("#logins-table")))
        browser.type("#nominee-form [name=name]", "Meera Sharma")
        browser.type("#nominee-form [name=email]", "meera.sharma@example.in")
        browser.click("#nominee-form button[type=submit]")
        browser.wait_until("the nominee", lambda: "Meera Sharma" in (browser.text("#nominee-current") or ""))
        check("the account page names a nominee", "meera.sharma@example.in" in (browser.text("#nominee-current") or ""))
        browser.type("#export-password", new_password)
        browser.click("#export-request")
        # The file holds the PAN in full: its link needs the password again.
        browser.wait("#export-download-form", timeout=60)
        check("a full-PAN export's link is not given to the session alone", not browser.find_all("#export-download"))
        browser.type("#export-download-password", new_password)
        browser.click("#export-download-form button[type=submit]")
        browser.wait("#export-download", timeout=60)
        href = browser.js("return document.querySelector('#export-download').href;")
        with urllib.request.urlopen(href, timeout=30) as response:
            export = json.loads(response.read())
        check("the export downloads and holds the account", email in json.dumps(export))
        check("with the password the export holds the PAN in full", (export.get("kyc") or {}).get("pan") == pan,
              repr((export.get("kyc") or {}).get("pan")))
        shot("account")

        # A new policy comes into force (the server restarts with it): the banner asks, and records, acceptance.
        make_run.stop(server)
        env["INFEREX_POLICY_VERSION"] = "2026-12-01"
        with open(log_path, "ab") as log:
            server = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        make_run.wait_for_health(base, server, log_path)
        browser.go(base + "/#/overview")
        browser.wait("#policy-banner")
        check("the policy banner names the new version", "2026-12-01" in (browser.text("#policy-banner") or ""))
        shot("policy-banner", mobile_too=False)
        browser.click("#accept-policy")
        browser.wait_until("the banner goes", lambda: not browser.visible("#policy-banner"))
        browser.cmd("POST", "/refresh")
        browser.wait("#overview-kyc")
        time.sleep(0.5)
        check("after a reload the banner stays away: the acceptance was recorded", not browser.visible("#policy-banner"))
        browser.go(base + "/#/account")
        browser.wait("#close-form")
        browser.type("#close-form [name=password]", new_password)
        browser.click("#close-form [name=confirm_close]")
        browser.click("#close-form button[type=submit]")
        summary = browser.text("#closed-summary") if browser.wait("#closed-summary") else ""
        check("closing shows what is kept until when", "until" in (summary or "").lower() or "20" in (summary or ""),
              repr(summary))
        shot("closed", mobile_too=False)
        check("no page had a CSP violation or script error", not problems, "; ".join(problems))
    except Exception as error:  # the check itself failed: count it, keep a screenshot and the server's log
        check("the browser path runs to the end", False, f"{type(error).__name__}: {error}")
        if browser:
            try:
                browser.screenshot("failure.png")
            except (WebDriverError, OSError):
                pass
    finally:
        if browser:
            browser.quit()
        if driver:
            make_run.stop(driver)
        make_run.stop(server)
        subprocess.run(["rm", "-rf", data_dir], check=False)
        if failed:
            with open(log_path, "rb") as log:
                sys.stdout.write("browser: the server's output (last 40 lines):\n")
                sys.stdout.write("".join(log.read().decode(errors="replace").splitlines(True)[-40:]))
    if readme_images and not failed:
        os.makedirs(os.path.join(ROOT, "docs", "images"), exist_ok=True)
        for source, target in README_IMAGES.items():
            shutil.copyfile(os.path.join(ARTIFACTS, source), os.path.join(ROOT, "docs", "images", target))
    print(f"browser: screenshots in {os.path.relpath(ARTIFACTS, ROOT)}/")
    print(f"browser: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
