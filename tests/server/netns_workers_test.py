#!/usr/bin/env python3
"""Coordinator and workers in separate network namespaces, so the gRPC calls and the Gloo traffic
really cross interfaces: a bridge in this namespace (the coordinator's, 10.77.0.1) and one network
namespace per worker joined to it by a veth pair (10.77.0.10, .11). A 2-worker GPTQ job must write
the one-process checkpoint byte for byte, and each worker's veth must have carried the collective's
bytes. Needs root and `ip netns` (iproute2); exits 77 (skipped) with a message where not permitted.

Usage: netns_workers_test.py PTQ PTQ_COORDINATOR PTQ_WORKER SOURCE_DIR
"""
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import time

ptq, coordinator_bin, worker_bin, source = sys.argv[1:5]
model = os.path.join(source, "models/demo/tiny-llama-bytes")
data = os.path.join(source, "models/demo/data")
env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PTQ_INSECURE="1")
tag = f"{os.getpid() % 10000}"
bridge = f"ptqbr{tag}"
spaces = [f"ptqw{tag}-{i}" for i in range(2)]
host_ends = [f"ptqh{tag}{i}" for i in range(2)]
COORDINATOR_IP = "10.77.0.1"
port = 50000 + os.getpid() % 10000
address = f"{COORDINATOR_IP}:{port}"
JOB = ["--method", "gptq", "--bits", "4", "--group-size", "64", "--samples", "32", "--seq-len", "64"]


def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def setup():
    sh("ip", "link", "add", bridge, "type", "bridge")
    sh("ip", "addr", "add", f"{COORDINATOR_IP}/24", "dev", bridge)
    sh("ip", "link", "set", bridge, "up")
    for i, (ns, host_end) in enumerate(zip(spaces, host_ends)):
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", host_end, "master", bridge)
        sh("ip", "link", "set", host_end, "up")
        sh("ip", "-n", ns, "addr", "add", f"10.77.0.{10 + i}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def teardown():
    for ns in spaces:
        sh("ip", "netns", "del", ns, check=False)
    for host_end in host_ends:
        sh("ip", "link", "del", host_end, check=False)
    sh("ip", "link", "del", bridge, check=False)


def tx_bytes(dev):
    with open(f"/sys/class/net/{dev}/statistics/rx_bytes") as f:  # received from the namespace
        return int(f.read())


def main():
    if os.geteuid() != 0:
        print("skipped: needs root for ip netns")
        return 77
    try:
        setup()
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        teardown()
        detail = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) else str(e)
        print(f"skipped: cannot create network namespaces here ({detail})")
        return 77
    tmp = tempfile.mkdtemp(prefix="netns_workers_test_")
    procs = []
    errors = []
    try:
        ref = f"{tmp}/ref"
        r = subprocess.run([ptq, "quantize", "--model", model, "--calib", f"{data}/calib.txt",
                            "--out", ref, *JOB], env=env, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"reference failed: {r.stderr[-800:]}")
        procs.append(subprocess.Popen(
            [coordinator_bin, "--listen", address, "--store", f"{tmp}/jobs.db", "--workers", "2",
             "--threads", "1", "--insecure"], env=env, stdout=open(f"{tmp}/coordinator.log", "w"),
            stderr=subprocess.STDOUT))
        for i, ns in enumerate(spaces):
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, worker_bin, "--coordinator", address,
                 "--host", f"10.77.0.{10 + i}", "--threads", "1"], env=env,
                stdout=open(f"{tmp}/worker-{i}.log", "w"), stderr=subprocess.STDOUT))
        before = [tx_bytes(d) for d in host_ends]
        out = f"{tmp}/out"
        job_id = None
        deadline = time.time() + 30
        while job_id is None and time.time() < deadline:
            r = subprocess.run([ptq, "submit", "--coordinator", address, "--model", model, "--calib",
                                f"{data}/calib.txt", "--out", out, *JOB], env=env,
                               capture_output=True, text=True)
            if r.returncode == 0:
                job_id = r.stdout.strip()
            else:
                time.sleep(0.5)
        if job_id is None:
            raise RuntimeError(f"cannot submit: {r.stderr}")
        r = subprocess.run([ptq, "watch", "--coordinator", address, job_id], env=env,
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            errors.append(f"job failed: {r.stdout[-800:]} {r.stderr[-800:]}")
        elif not filecmp.cmp(f"{ref}/model.safetensors", f"{out}/model.safetensors", shallow=False):
            errors.append("checkpoint differs from one process")
        moved = [tx_bytes(d) - b for d, b in zip(host_ends, before)]
        # The statistics all-reduce alone moves megabytes per block through each worker's veth.
        if min(moved) < 1 << 20:
            errors.append(f"too little traffic crossed the veths: {moved} bytes")
        print("bytes from each worker namespace:", moved)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        teardown()
    if errors:
        for e in errors:
            print("FAIL:", e)
        print("logs kept in", tmp)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("netns: 2 workers in their own namespaces wrote the one-process checkpoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
