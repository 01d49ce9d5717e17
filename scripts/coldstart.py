#!/usr/bin/env python3
"""Cold start of the Lambda `bootstrap` binary under a fake Lambda Runtime API (issue 5).

Builds nothing: give it the release binary, e.g.

    cargo build --release --bin bootstrap
    python3 scripts/coldstart.py target/release/bootstrap            # 20 runs, local key
    python3 scripts/coldstart.py target/release/bootstrap --moto     # + Secrets Manager (moto)

Each run spawns the binary as a fresh process (a cold container) with the environment
Lambda gives it, serves it one direct invocation (one RudderStack track event) from a
tiny Runtime API on 127.0.0.1, lets it deliver the event to a loopback Kustomer stub
(201 to every POST, 404 to every GET), and records when the process asks for its first
event (init done) and when it posts the response (first event handled). The process is
then killed. Printed: median and p90 of spawn → first /next and spawn → response, the
handling time in between, and the binary's size.

Without --moto the API key comes from KUSTOMER_API_KEY (no Secrets Manager call). With
--moto a second series runs with KUSTOMER_SECRET_ID pointing at a secret in a local
moto_server (AWS_ENDPOINT_URL), so the first Secrets Manager call (SDK set-up, credential
and region resolution, GetSecretValue) is reported separately, as the difference of the
medians.

Python 3 standard library only (moto_server must be on PATH for --moto).
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FUNCTION_NAME = "rudder-kustomer"
SECRET_NAME = "rudder-kustomer/coldstart"
API_KEY = "coldstart-api-key"

EVENT = {
    "anonymousId": "c41e8f02-7b3a-4d9e-a5c6-1f2b3d4e5a60",
    "channel": "mobile",
    "context": {
        "app": {"build": "412", "name": "Example Shop", "namespace": "com.example.shop",
                "version": "5.8.2"},
        "library": {"name": "com.rudderstack.android.sdk.core", "version": "1.21.0"},
        "locale": "en-US",
        "os": {"name": "Android", "version": "14"},
        "timezone": "America/Chicago",
        "traits": {"email": "theo.lindqvist@example.org", "name": "Theo Lindqvist"},
    },
    "event": "Order Completed",
    "integrations": {"All": True},
    "messageId": "1764241987331-6a0f3e2d-88b1-4c7a-9d54-2e7b1c0f9a13",
    "originalTimestamp": "2025-11-27T11:13:07.331Z",
    "properties": {"order_id": "ORD-100482", "total": 87.45, "currency": "USD",
                   "products": [{"product_id": "SKU-3310", "price": 14.5, "quantity": 3}]},
    "receivedAt": "2025-11-27T11:13:08.102Z",
    "sentAt": "2025-11-27T11:13:07.980Z",
    "timestamp": "2025-11-27T11:13:07.453Z",
    "type": "track",
    "userId": "usr_2c8d55",
}


class Run:
    """What one process did, as seen by the fake Runtime API."""

    def __init__(self, event_body):
        self.request_id = str(uuid.uuid4())
        self.event_body = event_body
        self.started = None
        self.first_next = None
        self.answered = None
        self.answer = None
        self.error = None
        self.served = False
        self.done = threading.Event()
        self.stop = threading.Event()


class RuntimeApi(BaseHTTPRequestHandler):
    """GET .../invocation/next, POST .../invocation/<id>/response|error, POST .../init/error."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        run = self.server.run
        if not self.path.endswith("/runtime/invocation/next"):
            self._reply(404)
            return
        now = time.perf_counter()
        if run.served:
            # The process wants its next event: keep it waiting until it is killed.
            run.stop.wait(30)
            try:
                self._reply(500, b'{"errorMessage":"fake Runtime API stopped"}')
            except OSError:
                pass
            return
        run.served = True
        run.first_next = now
        deadline_ms = int(time.time() * 1000) + 30_000
        self._reply(200, run.event_body, [
            ("Content-Type", "application/json"),
            ("Lambda-Runtime-Aws-Request-Id", run.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn",
             f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"),
            ("Lambda-Runtime-Trace-Id",
             "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"),
        ])

    def do_POST(self):
        now = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        run = self.server.run
        self._reply(202, b'{"status":"OK"}', [("Content-Type", "application/json")])
        if self.path.endswith("/response"):
            run.answered, run.answer = now, body
        else:
            run.answered, run.error = now, f"{self.path}: {body[:500]!r}"
        run.done.set()


class KustomerStub(BaseHTTPRequestHandler):
    """201 to every POST/PUT, 404 to every GET."""

    protocol_version = "HTTP/1.1"
    requests = 0
    latency = 0.0  # seconds before each answer (scripts/memory.py --latency-ms)

    def log_message(self, *args):
        pass

    def _answer(self, status, body):
        KustomerStub.requests += 1
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if KustomerStub.latency:
            time.sleep(KustomerStub.latency)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._answer(404, {"errors": [{"status": 404, "title": "Not Found"}]})

    def do_POST(self):
        self._answer(201, {"data": {"type": "identityEvent", "id": uuid.uuid4().hex[:24]}})

    do_PUT = do_POST


class QuietServer(ThreadingHTTPServer):
    """Killed processes reset their connections: not worth a traceback."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def serve(handler):
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, p):
    """Nearest rank."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def base_env(kustomer_port, memory):
    home = tempfile.mkdtemp(prefix="coldstart-home-")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION_NAME}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/28/[$LATEST]coldstart",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        # As in Lambda: no shared config or credentials files.
        "AWS_CONFIG_FILE": os.path.join(home, "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "no-credentials"),
        "KUSTOMER_BASE_ENDPOINT": f"http://127.0.0.1:{kustomer_port}",
    }


def launch(binary, env, run, runtime, timeout, before_kill=None):
    """Runs the binary once against `runtime` (serving `run`): waits up to `timeout` s for
    its answer, calls `before_kill(proc)` while it still runs (scripts/memory.py reads its
    peak memory there), then kills it. Returns (answered in time, the process's exit
    code, the last 2,000 characters of its output)."""
    env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{runtime.server_address[1]}")
    try:
        with tempfile.TemporaryFile() as output:
            run.started = time.perf_counter()
            proc = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL,
                                    stdout=output, stderr=output)
            finished = run.done.wait(timeout)
            if before_kill is not None:
                before_kill(proc)
            proc.kill()
            proc.wait()
            run.stop.set()
            output.seek(0)
            tail = output.read().decode(errors="replace")[-2000:]
    finally:
        runtime.shutdown()
        runtime.server_close()
    return finished, proc.returncode, tail


def one_run(binary, env, event_body, timeout):
    """One cold start. Each run has a Runtime API of its own (a fresh port), so that a
    request the previous, killed process left in a socket buffer cannot reach this run."""
    run = Run(event_body)
    runtime = serve(RuntimeApi)
    runtime.run = run
    finished, returncode, log = launch(binary, env, run, runtime, timeout)
    if not finished or run.error or run.first_next is None:
        why = run.error or ("no response within %.0f s" % timeout)
        raise RuntimeError(f"run failed: {why}; exit {returncode}; output:\n{log}")
    return (
        (run.first_next - run.started) * 1000.0,
        (run.answered - run.started) * 1000.0,
    )


def series(name, binary, env, event_body, runs, timeout):
    inits, firsts = [], []
    for _ in range(runs):
        init_ms, first_ms = one_run(binary, env, event_body, timeout)
        inits.append(init_ms)
        firsts.append(first_ms)
    handling = [f - i for f, i in zip(firsts, inits)]
    row = {
        "name": name,
        "runs": runs,
        "init_p50": statistics.median(inits),
        "init_p90": percentile(inits, 90),
        "first_p50": statistics.median(firsts),
        "first_p90": percentile(firsts, 90),
        "handling_p50": statistics.median(handling),
        "min": min(firsts),
        "max": max(firsts),
    }
    return row


def start_moto():
    moto = shutil.which("moto_server")
    if moto is None:
        sys.exit("coldstart: --moto needs moto_server on PATH (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        sys.exit("coldstart: moto_server did not start")
    body = json.dumps({"Name": SECRET_NAME,
                       "SecretString": json.dumps({"apiKey": API_KEY})}).encode()
    request = urllib.request.Request(url + "/", data=body, method="POST", headers={
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "secretsmanager.CreateSecret",
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261128/us-east-1/"
                         "secretsmanager/aws4_request, SignedHeaders=host, Signature=0",
    })
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()
    return proc, url


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", help="path of the release bootstrap binary")
    parser.add_argument("-n", "--runs", type=int, default=20)
    parser.add_argument("--memory", type=int, default=512,
                        help="AWS_LAMBDA_FUNCTION_MEMORY_SIZE (informational only here)")
    parser.add_argument("--event", help="JSON file to invoke with (default: one track event)")
    parser.add_argument("--moto", action="store_true",
                        help="also measure with the key in Secrets Manager (moto_server)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per run")
    args = parser.parse_args()

    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"coldstart: {binary} is not an executable file")
    if args.event:
        with open(args.event, "rb") as f:
            event_body = f.read()
    else:
        event_body = json.dumps(EVENT).encode()

    kustomer = serve(KustomerStub)
    env = base_env(kustomer.server_address[1], args.memory)
    rows = []

    local = dict(env, KUSTOMER_API_KEY=API_KEY)
    # One untimed run first, so the page cache holds the binary (as Lambda's does after
    # the first start of a version).
    one_run(binary, local, event_body, args.timeout)
    rows.append(series("local key", binary, local, event_body, args.runs, args.timeout))

    moto = None
    if args.moto:
        moto, moto_url = start_moto()
        try:
            remote = dict(env, KUSTOMER_SECRET_ID=SECRET_NAME, AWS_ENDPOINT_URL=moto_url)
            # Untimed: moto loads its Secrets Manager backend at the first call.
            one_run(binary, remote, event_body, args.timeout)
            rows.append(series("Secrets Manager (moto)", binary, remote, event_body,
                               args.runs, args.timeout))
        finally:
            moto.kill()
            moto.wait()

    size = os.path.getsize(binary)
    print(f"cold start of {binary} ({args.runs} runs each; "
          f"Kustomer stub requests: {KustomerStub.requests})")
    print("| key from | spawn → first /next p50 ms | p90 ms | spawn → response p50 ms | "
          "p90 ms | handling p50 ms | min–max ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['name']} | {r['init_p50']:.1f} | {r['init_p90']:.1f} | "
              f"{r['first_p50']:.1f} | {r['first_p90']:.1f} | {r['handling_p50']:.1f} | "
              f"{r['min']:.1f}–{r['max']:.1f} |")
    if len(rows) == 2:
        print(f"first Secrets Manager call (difference of the medians): "
              f"{rows[1]['first_p50'] - rows[0]['first_p50']:.1f} ms")
    print(f"binary size: {size} bytes ({size / 1048576:.2f} MiB)")
    kustomer.shutdown()


if __name__ == "__main__":
    main()
