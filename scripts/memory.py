#!/usr/bin/env python3
"""Peak memory of the Lambda `bootstrap` binary on the largest payloads (issue 8, fault 9).

Builds nothing: give it the release binary, e.g.

    cargo build --release --bin bootstrap
    python3 scripts/memory.py target/release/bootstrap        # or: make memory

Each payload runs in a fresh process under the fake Lambda Runtime API of
scripts/coldstart.py, against a loopback Kustomer stub (201 to writes, 404 to look-ups,
answering at once unless --latency-ms), with the local key (no Secrets Manager). When the
process posts its answer, its peak resident set (VmHWM in /proc/PID/status) is read, then
it is killed. Payloads (all events of distinct users):

  webhook-1mb   an HTTP API v2 request with a 1 MB body: 20,000 track events
  sqs-85k       one SQS record whose body (< 256 KB) holds 85,000 `{}` events
  direct-6mb    a 6 MB direct invocation: 100,000 tiny track events

Printed: a table of peak RSS, answer size and time, and whether each stays within
--limit-mb (default 128). Measured, never asserted by the test suite.
Linux only (/proc); Python 3 standard library only.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import coldstart  # noqa: E402  (the Runtime API emulator and the stub live there)

TOKEN = "memory-webhook-token"


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def webhook_1mb():
    events = [{"type": "track", "event": "e", "userId": f"u{n:06d}"} for n in range(20_000)]
    body = json.dumps(events)
    # Pad to 1 MB with a property on the first event: the body is what API Gateway sends.
    if len(body) < 1_000_000:
        events[0]["properties"]["pad"] = "x" * (1_000_000 - len(body) - 12)
        body = json.dumps(events)
    request = {
        "version": "2.0", "routeKey": "POST /rudderstack", "rawPath": "/rudderstack",
        "rawQueryString": "", "headers": {"authorization": f"Bearer {TOKEN}"},
        "requestContext": {"http": {"method": "POST", "path": "/rudderstack"},
                           "requestId": "memory"},
        "body": body, "isBase64Encoded": False,
    }
    return json.dumps(request).encode(), f"{len(events)} events, body {len(body)} bytes"


def sqs_85k():
    body = "[" + ",".join(["{}"] * 85_000) + "]"
    assert len(body) < 256 * 1024
    record = {"messageId": "m-1", "receiptHandle": "h", "body": body,
              "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
              "eventSource": "aws:sqs",
              "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:rudder-kustomer",
              "awsRegion": "us-east-1"}
    return json.dumps({"Records": [record]}).encode(), f"85,000 events, body {len(body)} bytes"


def direct_6mb():
    events = [{"type": "track", "event": "e", "userId": f"u{n:06d}"} for n in range(100_000)]
    payload = json.dumps(events)
    if len(payload) < 6_000_000:
        events[0]["properties"] = {"pad": "x" * (6_000_000 - len(payload) - 20)}
        payload = json.dumps(events)
    return payload.encode(), f"100,000 events, {len(payload)} bytes"


PAYLOADS = {"webhook-1mb": webhook_1mb, "sqs-85k": sqs_85k, "direct-6mb": direct_6mb}


Stub = coldstart.KustomerStub


def measure(binary, env, payload, deadline_s, timeout):
    run = coldstart.Run(payload)
    runtime = coldstart.serve(RuntimeApiWithDeadline)
    runtime.run = run
    runtime.deadline_s = deadline_s
    peak = None

    def read_peak(proc):
        nonlocal peak
        if proc.poll() is None:
            peak = vm_hwm_kb(proc.pid)

    finished, returncode, tail = coldstart.launch(binary, env, run, runtime, timeout, read_peak)
    if not finished:
        raise RuntimeError(f"no answer within {timeout} s; exit {returncode}:\n{tail[-1500:]}")
    answer = run.answer if run.answer is not None else (run.error or "").encode()
    return peak, answer, run.answered - run.started, run.error is not None


class RuntimeApiWithDeadline(coldstart.RuntimeApi):
    """coldstart's Runtime API with a configurable invocation deadline."""

    def do_GET(self):
        run = self.server.run
        if not self.path.endswith("/runtime/invocation/next") or run.served:
            return super().do_GET()
        run.served = True
        run.first_next = time.perf_counter()
        deadline_ms = int(time.time() * 1000) + int(self.server.deadline_s * 1000)
        self._reply(200, run.event_body, [
            ("Content-Type", "application/json"),
            ("Lambda-Runtime-Aws-Request-Id", run.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn",
             f"arn:aws:lambda:us-east-1:123456789012:function:{coldstart.FUNCTION_NAME}"),
        ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", help="path of the release bootstrap binary")
    parser.add_argument("--only", choices=sorted(PAYLOADS), action="append",
                        help="run only this payload (repeatable)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="Kustomer stub latency per request")
    parser.add_argument("--deadline", type=float, default=20.0,
                        help="invocation deadline in seconds (the function's timeout)")
    parser.add_argument("--limit-mb", type=float, default=128.0)
    args = parser.parse_args()

    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"memory: {binary} is not an executable file")
    Stub.latency = args.latency_ms / 1000.0
    kustomer = coldstart.serve(Stub)
    env = coldstart.base_env(kustomer.server_address[1], 256)
    env.update(KUSTOMER_API_KEY="memory-api-key", WEBHOOK_TOKEN=TOKEN)

    print(f"peak RSS of {binary} ({os.path.getsize(binary)} bytes), "
          f"stub latency {args.latency_ms:g} ms, deadline {args.deadline:g} s")
    print("| payload | what | peak RSS (VmHWM) | answer | time | within limit |")
    print("| --- | --- | --- | --- | --- | --- |")
    worst = 0
    for name in args.only or list(PAYLOADS):
        payload, what = PAYLOADS[name]()
        before = Stub.requests
        peak, answer, seconds, failed = measure(binary, env, payload, args.deadline,
                                                args.deadline + 60)
        worst = max(worst, peak or 0)
        summary = answer[:160].decode(errors="replace")
        if failed:
            summary = "invocation error: " + summary
        print(f"| {name} | {what}; {Stub.requests - before} Kustomer requests | "
              f"{peak / 1024:.1f} MB | {len(answer)} bytes: `{summary}` | {seconds:.1f} s | "
              f"{'yes' if peak / 1024 <= args.limit_mb else 'NO'} |")
    kustomer.shutdown()
    return 0 if worst / 1024 <= args.limit_mb else 1


if __name__ == "__main__":
    sys.exit(main())
