#!/usr/bin/env python3
"""Alertmanager's own ingest on this machine, to compare opsbot's alert intake with (issue 14:
"at least Alertmanager's ingest rate on Postgres with one connection"; docs/benchmarks.md).

Starts Debian's `prometheus-alertmanager` (apt-get install prometheus-alertmanager) on a free
port with a do-nothing route, then posts 1,000 deliveries of 100 distinct alerts (the label
shape `alert_load` uses) to /api/v2/alerts over C keep-alive connections and prints alerts/s.
Usage: benches/floors/alertmanager_ingest.py [C ...]   (default: 1 1 1 8)
"""
import http.client, json, os, socket, subprocess, sys, tempfile, threading, time, uuid

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    return port

def bodies():
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = []
    for r in range(1000):
        g = r % 100
        alerts = [{
            "labels": {"alertname": f"LoadTest{g}", "instance": f"host-{uuid.uuid4().hex[:12]}:9100",
                       "job": "node", "service": f"svc-{g}", "severity": "warning", "team": "sre"},
            "annotations": {"description": "x" * 200, "summary": f"load test alert {i}"},
            "startsAt": now, "generatorURL": "http://prom/graph"} for i in range(100)]
        out.append(json.dumps(alerts).encode())
    return out

def run(port, payloads, c):
    lat = []
    def worker(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for b in chunk:
            t = time.perf_counter()
            conn.request("POST", "/api/v2/alerts", body=b, headers={"Content-Type": "application/json"})
            r = conn.getresponse(); r.read()
            assert r.status == 200, r.status
            lat.append(time.perf_counter() - t)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(payloads[i::c],)) for i in range(c)]
    for t in threads: t.start()
    for t in threads: t.join()
    elapsed = time.perf_counter() - t0
    lat.sort()
    print(f"alertmanager C={c}: {100 * len(payloads) / elapsed:.0f} alerts/s, "
          f"{len(payloads[0]) / 1024:.1f} KiB per request, request p50 {lat[len(lat) // 2] * 1000:.2f} ms, "
          f"p99 {lat[int(len(lat) * 0.99)] * 1000:.2f} ms; load average {os.getloadavg()[0]:.2f}")

def main():
    conc = [int(c) for c in sys.argv[1:]] or [1, 1, 1, 8]
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "am.yml")
        with open(cfg, "w") as f:
            f.write('route:\n  receiver: "none"\nreceivers:\n  - name: "none"\n')
        port = free_port()
        am = subprocess.Popen(["prometheus-alertmanager", f"--config.file={cfg}", f"--storage.path={d}/data",
                               f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 10
            while True:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    c.request("GET", "/-/ready")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    sys.exit("alertmanager did not become ready")
                time.sleep(0.1)
            payloads = bodies()
            for c in conc:
                run(port, payloads, c)
        finally:
            am.terminate(); am.wait()

if __name__ == "__main__":
    main()
