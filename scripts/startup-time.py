#!/usr/bin/env python3
"""Cold-start time of a Lambda bootstrap: from starting the process to its first poll of the Lambda runtime
API for an invocation, i.e. everything the function does before it can serve (configuration, AWS clients,
capability checks). A local stand-in of the runtime API records the poll; the process is then stopped.

    scripts/startup-time.py target/release/usage [runs]

Prints the median, 90th percentile and fastest run in milliseconds. Needs no AWS access: the functions
without secrets (keys, usage) make no network call before their first poll; the others read theirs from
Secrets Manager first, and refuse to start without it.
"""

import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

polled = threading.Event()


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


def one_run(binary, port):
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
    binary, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    one_run(binary, port)  # warm the page cache
    times = sorted(one_run(binary, port) for _ in range(runs))
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    size = os.path.getsize(binary)
    print(f"{binary}: {size:,} bytes; start to first poll over {runs} runs: "
          f"median {statistics.median(times):.1f} ms, p90 {p90:.1f} ms, fastest {times[0]:.1f} ms")
    server.shutdown()


if __name__ == "__main__":
    main()
