#!/usr/bin/env python3
"""Cold-start time of a Lambda bootstrap: from starting the process to its first poll of the Lambda runtime
API for an invocation, i.e. everything the function does before it can serve (configuration, AWS clients,
capability checks). A local stand-in of the runtime API records the poll; the process is then stopped.

    scripts/startup-time.py target/release/usage [runs]
    scripts/startup-time.py target/release/kyc [runs] --secrets-latency-ms 25

Prints the median, 90th percentile and fastest run in milliseconds. Needs no AWS access: the functions
without secrets (keys, usage) make no network call before their first poll; the others read theirs from
Secrets Manager first, and refuse to start without it. With --secrets-latency-ms, a local stand-in of
Secrets Manager (GetSecretValue, answering after that many milliseconds, as the real service's round trip
takes) serves the kyc function's two secrets (the KYC provider's keys, the edge secret), generated for the
run: the start then shows what reading them costs.
"""

import http.server
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time

polled = threading.Event()
# The stand-in Secrets Manager's answers, by secret id, and how long each answer takes.
SECRETS = {}
SECRETS_LATENCY = [0.0]


class SecretsManager(http.server.BaseHTTPRequestHandler):
    """GetSecretValue (AWS JSON 1.1), answering after SECRETS_LATENCY; signatures are not checked."""

    def do_POST(self):  # noqa: N802 (the standard library's name)
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        time.sleep(SECRETS_LATENCY[0])
        secret_id = body.get("SecretId", "")
        value = SECRETS.get(secret_id)
        answer = ({"ARN": secret_id, "Name": secret_id, "SecretString": value, "VersionId": "v1",
                   "VersionStages": ["AWSCURRENT"], "CreatedDate": 1.7e9} if value is not None else
                  {"__type": "ResourceNotFoundException", "message": "not found"})
        data = json.dumps(answer).encode()
        self.send_response(200 if value is not None else 400)
        self.send_header("content-type", "application/x-amz-json-1.1")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def kyc_secrets(port):
    """The kyc function's configuration and its two secrets, strong and made for this run."""
    arn = lambda name: f"arn:aws:secretsmanager:ap-south-1:123456789012:secret:{name}"  # noqa: E731
    public_key = subprocess.run(
        "openssl genrsa 2048 2>/dev/null | openssl rsa -pubout 2>/dev/null", shell=True, capture_output=True, text=True
    ).stdout
    SECRETS[arn("cashfree")] = json.dumps(
        {"client_id": "CF" + secrets.token_hex(12), "client_secret": "cfsk_" + secrets.token_hex(32), "public_key": public_key})
    SECRETS[arn("edge")] = secrets.token_hex(32)
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "INFEREX_VAULT_TABLE": "startup-vault",
        "INFEREX_KMS_KEY_ID": "alias/startup-vault",
        "INFEREX_FINGERPRINT_KEY_ID": "alias/startup-fingerprints",
        "KYC_PROVIDER_SECRET_ARN": arn("cashfree"),
        "INFEREX_EDGE_SECRET_ARN": arn("edge"),
    }


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        if self.path.endswith("/runtime/invocation/next"):
            polled.set()
            # Hold the poll open, as the real runtime API does while no event is waiting.
            time.sleep(5)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def one_run(binary, port, extra_env=None):
    polled.clear()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": "startup-time",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_GROUP_NAME": "startup-time",
        "AWS_LAMBDA_LOG_STREAM_NAME": "startup-time",
        "AWS_REGION": "ap-south-1",
        "AWS_ACCESS_KEY_ID": "startup-time",
        "AWS_SECRET_ACCESS_KEY": "startup-time",
        "INFEREX_LOG": "error",
        **(extra_env or {}),
    }
    started = time.perf_counter()
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ok = polled.wait(timeout=10)
    elapsed = time.perf_counter() - started
    process.kill()
    _, err = process.communicate()
    if not ok:
        sys.exit(f"{binary} never polled the runtime API: {err.decode(errors='replace')[-500:]}")
    return elapsed * 1000


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    args = sys.argv[1:]
    extra_env = None
    if "--secrets-latency-ms" in args:
        at = args.index("--secrets-latency-ms")
        SECRETS_LATENCY[0] = float(args[at + 1]) / 1000
        del args[at:at + 2]
        secrets_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SecretsManager)
        secrets_server.daemon_threads = True
        threading.Thread(target=secrets_server.serve_forever, daemon=True).start()
        extra_env = kyc_secrets(secrets_server.server_address[1])
    binary, runs = args[0], int(args[1]) if len(args) > 1 else 30
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    one_run(binary, port, extra_env)  # warm the page cache
    times = sorted(one_run(binary, port, extra_env) for _ in range(runs))
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    size = os.path.getsize(binary)
    print(f"{binary}: {size:,} bytes; start to first poll over {runs} runs: "
          f"median {statistics.median(times):.1f} ms, p90 {p90:.1f} ms, fastest {times[0]:.1f} ms")
    server.shutdown()


if __name__ == "__main__":
    main()
