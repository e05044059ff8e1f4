#!/usr/bin/env python3
"""Debian's Prometheus server scrapes a running quantization and sees its series move.

Starts `ptq quantize --metrics 127.0.0.1:PORT` on the demo model and a `prometheus` that scrapes it
every second, then asks Prometheus's HTTP API (not our endpoint) for the job's series while it runs:
the layers-done counter must rise through several values to 7 x blocks, blocks done must reach the
block count, per-phase seconds and the per-layer losses must be there.

Then a `ptq-coordinator --workers 1 --metrics` and a `ptq-worker --metrics` run a submitted job
while Prometheus scrapes both: the coordinator's jobs-by-state gauge must show the job running and
then succeeded and its connected-workers gauge 1; the worker's heartbeat counter must rise and its
layer counter reach 7 x blocks.

Usage: prometheus_scrape_test.py PTQ_BINARY SOURCE_DIR [COORDINATOR_BINARY WORKER_BINARY].
Exits 77 (ctest SKIP) without `prometheus`.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

SKIP = 77


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(prom_port, expr):
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]


def main():
    ptq, source = sys.argv[1], sys.argv[2]
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("SKIP: Debian's prometheus is not installed (apt-get install prometheus)")
        return SKIP
    model = os.path.join(source, "models/demo/tiny-llama-bytes")
    data = os.path.join(source, "models/demo/data")
    with open(os.path.join(model, "config.json")) as f:
        blocks = json.load(f)["num_hidden_layers"]
    tmp = tempfile.mkdtemp(prefix="ptq_prometheus_test_")
    metrics_port, prom_port = free_port(), free_port()
    coord_metrics_port, coord_port = free_port(), free_port()
    worker_metrics_port = free_port()
    with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: ptq
    static_configs:
      - targets: ["127.0.0.1:{metrics_port}"]
  - job_name: ptq-coordinator
    static_configs:
      - targets: ["127.0.0.1:{coord_metrics_port}"]
  - job_name: ptq-worker
    static_configs:
      - targets: ["127.0.0.1:{worker_metrics_port}"]
""")
    prom = subprocess.Popen(
        [prometheus, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "prometheus.log"), "w"))
    job = None
    try:
        for _ in range(100):  # Prometheus up?
            try:
                query(prom_port, "up")
                break
            except OSError:
                time.sleep(0.2)
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        job = subprocess.Popen(
            [ptq, "quantize", "--model", model, "--calib", f"{data}/calib.txt", "--eval",
             f"{data}/valid.txt", "--eval-windows", "48", "--skip-fp-eval", "--samples", "128",
             "--seq-len", "256", "--bits", "4", "--group-size", "64", "--out", f"{tmp}/out",
             "--metrics", f"127.0.0.1:{metrics_port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "ptq.log"), "w"))
        seen = []
        deadline = time.time() + 600
        while job.poll() is None and time.time() < deadline:
            result = query(prom_port, 'ptq_layers_done_total{job_id="local"}')
            if result and (not seen or result[0][1] != seen[-1]):
                seen.append(result[0][1])
            time.sleep(0.5)
        if job.poll() is None:
            print("FAIL: the quantization did not finish in time")
            return 1
        if job.returncode != 0:
            print("FAIL: ptq quantize failed:", open(os.path.join(tmp, "ptq.log")).read()[-2000:])
            return 1
        time.sleep(1.5)
        errors = []
        if len(seen) < 3 or seen != sorted(seen):  # a job of ~20-60 s, scraped every second
            errors.append(f"layers done should rise through several values, saw {seen}")

        def last(expr):
            r = query(prom_port, f"max(max_over_time({expr}[10m]))")
            return r[0][1] if r else None

        layers_done = last('ptq_layers_done_total{job_id="local"}')
        if layers_done != 7 * blocks:
            errors.append(f"layers done ended at {layers_done}, not {7 * blocks}")
        blocks_done = last('ptq_blocks_done_total{job_id="local"}')
        if blocks_done != blocks:
            errors.append(f"blocks done ended at {blocks_done}, not {blocks}")
        if last('ptq_job_progress_ratio{job_id="local"}') != 1:
            errors.append("progress ratio never reached 1")
        forward = last('ptq_phase_seconds_total{job_id="local",phase="forward"}')
        if not forward or forward <= 0:
            errors.append(f"no forward seconds: {forward}")
        losses = query(prom_port, "count(count_over_time(ptq_layer_reconstruction_loss[10m]))")
        if not losses or losses[0][1] != 7 * blocks:
            errors.append(f"expected {7 * blocks} per-layer loss series, got {losses}")
        if not last("ptq_process_resident_memory_bytes") or last("ptq_process_resident_memory_bytes") < 1e6:
            errors.append("no resident memory gauge")
        coordinator_summary = "no coordinator binary given"
        if len(sys.argv) > 4:
            coordinator_summary = check_coordinator(sys.argv[3], sys.argv[4], ptq, model, data, tmp,
                                                    env, coord_port, coord_metrics_port,
                                                    worker_metrics_port, prom_port, blocks, errors)
        if errors:
            print("FAIL:\n  " + "\n  ".join(errors))
            return 1
        print(f"OK: Prometheus saw layers done {seen}, {blocks} blocks, forward {forward:.1f} s; "
              f"{coordinator_summary}")
        return 0
    finally:
        if job is not None and job.poll() is None:
            job.kill()
        prom.terminate()
        try:
            prom.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prom.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def check_coordinator(coordinator, worker, ptq, model, data, tmp, env, port, metrics_port,
                      worker_metrics_port, prom_port, blocks, errors):
    coord = subprocess.Popen([coordinator, "--listen", f"127.0.0.1:{port}", "--store",
                              f"{tmp}/jobs.db", "--metrics", f"127.0.0.1:{metrics_port}",
                              "--workers", "1", "--worker-lease-ms", "1500", "--insecure"],
                             env=env, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(tmp, "coordinator.log"), "w"))
    work = subprocess.Popen([worker, "--insecure", "--coordinator", f"127.0.0.1:{port}", "--metrics",
                             f"127.0.0.1:{worker_metrics_port}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(tmp, "worker.log"), "w"))
    try:
        time.sleep(1)
        submit = subprocess.run(
            [ptq, "submit", "--insecure", "--coordinator", f"127.0.0.1:{port}", "--model", model, "--calib",
             f"{data}/calib.txt", "--samples", "128", "--seq-len", "256", "--bits", "4",
             "--group-size", "64", "--out", f"{tmp}/served"],
            env=env, capture_output=True, text=True, timeout=60)
        if submit.returncode != 0:
            errors.append(f"ptq submit failed: {submit.stderr[-500:]}")
            return "coordinator: submit failed"
        job_id = submit.stdout.strip()
        watch = subprocess.run([ptq, "watch", "--insecure", job_id, "--coordinator", f"127.0.0.1:{port}"],
                               env=env, capture_output=True, text=True, timeout=600)
        if watch.returncode != 0:
            errors.append(f"ptq watch ended with {watch.returncode}: {watch.stdout[-500:]}")
        time.sleep(2.5)
        running = query(prom_port, 'max_over_time(ptq_jobs{job="ptq-coordinator",state="running"}[10m])')
        succeeded = query(prom_port, 'ptq_jobs{job="ptq-coordinator",state="succeeded"}')
        layers = query(prom_port, 'max_over_time(ptq_layers_done_total{job="ptq-worker",'
                               f'job_id="{job_id}"}}[10m])')
        connected = query(prom_port, 'max_over_time(ptq_workers_connected{job="ptq-coordinator"}[10m])')
        heartbeats = query(prom_port, 'sum(ptq_worker_heartbeats_total{job="ptq-worker"})')
        if not connected or connected[0][1] != 1:
            errors.append(f"the coordinator's connected-workers gauge never showed the worker: {connected}")
        if not heartbeats or heartbeats[0][1] < 2:
            errors.append(f"the worker's heartbeat counter did not rise: {heartbeats}")
        if not running or running[0][1] != 1:
            errors.append(f"the coordinator's running-jobs gauge never showed the job: {running}")
        if not succeeded or succeeded[0][1] != 1:
            errors.append(f"the coordinator's succeeded-jobs gauge is not 1: {succeeded}")
        if not layers or layers[0][1] != 7 * blocks:
            errors.append(f"the worker's layer counter for {job_id} did not reach {7 * blocks}: {layers}")
        return (f"coordinator: job {job_id} seen running and succeeded on 1 remote worker "
                f"({heartbeats[0][1]:.0f} heartbeats)")
    finally:
        work.terminate()
        try:
            work.wait(timeout=20)
        except subprocess.TimeoutExpired:
            work.kill()
        coord.terminate()
        try:
            coord.wait(timeout=20)
        except subprocess.TimeoutExpired:
            coord.kill()


if __name__ == "__main__":
    sys.exit(main())
