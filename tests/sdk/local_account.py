"""An account on the local server, made the way a customer makes one: sign up, confirm the address from the
local mailbox, pass KYC (the PAN, then the KYC stand-in's DigiLocker consent page with its defaults; the PAN's
last serial digit 0-3 passes), top up through the Razorpay stand-in, create an API key.
Used by the client checks; `python3 local_account.py BASE EMAIL PAN RUPEES` prints the key, and
`python3 local_account.py BASE EMAIL` a session token of a confirmed account without KYC."""

import html
import json
import re
import sys
import time
import urllib.parse
import urllib.request

BASE = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else ""


def call(method, path, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(BASE + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"null")


def verification_token(email):
    """The token of the verification link the local mailbox (/_mail) holds for `email`, once delivered."""
    for _ in range(100):
        for message in call("GET", "/_mail")["data"]:
            if message["to"] == email and message["kind"] == "verify_email":
                return message["links"][0].split("token=", 1)[1]
        time.sleep(0.1)
    raise AssertionError("no verification e-mail for " + email)


def confirmed_session(email):
    call("POST", "/v1/auth/signup", {"email": email, "password": "correct horse battery", "full_name": "SDK Check",
                                     "date_of_birth": "1990-01-01", "accepted_terms_version": "2026-12-06"})
    token = call("POST", "/v1/auth/login", {"email": email, "password": "correct horse battery"})["token"]
    call("POST", "/v1/auth/verify-email", {"token": verification_token(email)})
    return token


def share_from_digilocker(url):
    """What a browser does on the consent page: submit the form's defaults (Allow); the redirects lead back
    to the API's return route and on to the dashboard."""
    with urllib.request.urlopen(url) as response:
        page = response.read().decode()
    fields = {name: html.unescape(value) for name, value in re.findall(r'name="(\w+)" (?:type="\w+" )?value="([^"]*)"', page)}
    fields["decision"] = "allow"
    urllib.request.urlopen(urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode())).read()


def customer(email, pan, rupees):
    token = confirmed_session(email)
    call("POST", "/v1/kyc", {"pan": pan, "name_on_pan": "SDK Check", "consent": True}, token)
    share_from_digilocker(call("POST", "/v1/kyc/digilocker", None, token)["url"])
    kyc = call("GET", "/v1/kyc", None, token)
    if kyc["status"] != "verified":
        raise AssertionError("KYC not verified: %s" % kyc)
    if rupees:
        # Every top-up is issued a GST receipt voucher: the account is billed somewhere first.
        call("PUT", "/v1/account/billing-profile", {"billing_name": "SDK Check", "address": "1 MG Road, Bengaluru", "state_code": "29", "pin": "560001"}, token)
        topup = call("POST", "/v1/wallet/topups", {"amount_paise": rupees * 100}, token)
        call("POST", "/_razorpay/dev/orders/%s/pay" % topup["razorpay_order_id"], {})
    return call("POST", "/v1/keys", {"name": "sdk"}, token)["key"]


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(confirmed_session(sys.argv[2]))
    else:
        email, pan, rupees = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(customer(email, pan, rupees))
