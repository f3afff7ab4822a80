"""The README's quick start, checked as a newcomer runs it: `make run` in the project folder, then the
health check and a signup, login and account read against it, then stop it.

The command is run exactly as written. Only its environment differs: a throwaway data folder (the
developer's own ./.inferex is left alone) and, when something else already holds 127.0.0.1:8080, another
free loopback port. Ends with one line `make-run: N passed, N failed`; exits non-zero on any failure.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The first start may still compile the server.
START_TIMEOUT_S = 600
STOP_TIMEOUT_S = 20


def port_is_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None, token=None):
    """(status, decoded JSON or None) of one request; HTTP errors are answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw) if raw else None
        except ValueError:
            return error.code, None


def wait_for_health(base, server, log_path):
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"`make run` exited with {server.returncode} before serving /health")
        try:
            status, body = call(base, "GET", "/health")
            if status == 200:
                return body
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"`make run` did not serve /health within {START_TIMEOUT_S} s")


def stop(server):
    """Stops make, cargo and the server (one process group) and waits until they are gone."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    try:
        os.killpg(server.pid, 0)
    except ProcessLookupError:
        return
    os.killpg(server.pid, signal.SIGKILL)


def main():
    passed, failed = 0, 0

    def check(name, condition, detail=""):
        nonlocal passed, failed
        if condition:
            passed += 1
            print(f"make-run: ok   {name}")
        else:
            failed += 1
            print(f"make-run: FAIL {name} {detail}".rstrip())

    env = dict(os.environ)
    data_dir = tempfile.mkdtemp(prefix="inferex-make-run.")
    env["INFEREX_DATA_DIR"] = os.path.join(data_dir, "data")
    port = 8080
    if not port_is_free(port):
        port = free_port()
        env["INFEREX_ADDR"] = f"127.0.0.1:{port}"
        print(f"make-run: 127.0.0.1:8080 is taken here; the check uses port {port}")
    base = f"http://127.0.0.1:{port}"
    log_path = os.path.join(data_dir, "make-run.log")
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            ["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        health = wait_for_health(base, server, log_path)
        check("`make run` serves /health", health == {"status": "ok"}, repr(health))

        status, notice = call(base, "GET", "/v1/privacy")
        version = (notice or {}).get("policy_version")
        check("the privacy notice names the policy in force", status == 200 and bool(version), f"{status} {notice}")

        email = f"newcomer-{secrets.token_hex(4)}@example.in"
        password = "correct horse battery"
        status, account = call(base, "POST", "/v1/auth/signup", {
            "email": email, "password": password, "full_name": "New Comer", "date_of_birth": "1994-08-15",
            "accepted_terms_version": version, "marketing_consent": False,
        })
        account = account or {}
        check("signup creates the account", status == 201 and str(account.get("id", "")).startswith("usr_")
              and account.get("email") == email, f"{status} {account}")

        status, session = call(base, "POST", "/v1/auth/login", {"email": email, "password": password})
        token = (session or {}).get("token")
        check("login returns a session token", status == 200 and bool(token), f"{status}")

        status, me = call(base, "GET", "/v1/account", token=token)
        check("the session reads its own account", status == 200 and (me or {}).get("id") == account.get("id"),
              f"{status} {me}")

        # The README's walk-through: the verification e-mail lands in the local mailbox and its link works.
        link = None
        for _ in range(100):
            status, mailbox = call(base, "GET", "/_mail")
            link = next((m["links"][0] for m in (mailbox or {}).get("data", [])
                         if m.get("to") == email and m.get("kind") == "verify_email" and m.get("links")), None)
            if link:
                break
            time.sleep(0.1)
        check("the verification e-mail is listed at /_mail with its link", bool(link) and link.startswith(base),
              f"{link}")
        status, verified = call(base, "POST", "/v1/auth/verify-email", {"token": (link or "").split("token=")[-1]})
        check("its link verifies the address", status == 200 and (verified or {}).get("email_verified") is True,
              f"{status} {verified}")
    except Exception as error:  # the check itself failed: count it and show the server's log
        check("`make run` starts and answers", False, str(error))
    finally:
        stop(server)
        try:
            call(base, "GET", "/health")
            still_serving = True
        except (urllib.error.URLError, ConnectionError, OSError):
            still_serving = False
        check("stopping `make run` stops the server", not still_serving)
        if failed:
            with open(log_path, "rb") as log:
                sys.stdout.write("make-run: the server's output (last 40 lines):\n")
                sys.stdout.write("".join(log.read().decode(errors="replace").splitlines(True)[-40:]))
        subprocess.run(["rm", "-rf", data_dir], check=False)
    print(f"make-run: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
