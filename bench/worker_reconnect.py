#!/usr/bin/env python3
"""Seconds from a coordinator's restart until its two idle workers have registered again, after it
was down (SIGKILL) for DOWN seconds: how long a restarted coordinator waits for its workers. Each
worker binary given runs in turn, RUNS rounds, so builds compare side by side in one run.

Usage: bench/worker_reconnect.py COORDINATOR WORKER [WORKER ...] [--down S] [--runs N]
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

parser = argparse.ArgumentParser()
parser.add_argument("coordinator")
parser.add_argument("workers", nargs="+")
parser.add_argument("--down", type=float, default=30)
parser.add_argument("--runs", type=int, default=3)
args = parser.parse_args()
env = dict(os.environ, PTQ_INSECURE="1", OMP_WAIT_POLICY="PASSIVE")


def once(worker_bin):
    tmp = tempfile.mkdtemp(prefix="worker_reconnect_")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"

    def coordinator(tag):
        return subprocess.Popen([args.coordinator, "--listen", address, "--store", f"{tmp}/jobs.db",
                                 "--workers", "2", "--worker-lease-ms", "1500", "--threads", "1",
                                 "--insecure"], env=env, stdout=open(f"{tmp}/c-{tag}.log", "w"),
                                stderr=subprocess.STDOUT)

    def registrations():
        n = 0
        for i in range(2):
            with open(f"{tmp}/w{i}.log") as f:
                n += sum("registered with" in line for line in f)
        return n

    c = coordinator("first")
    workers = [subprocess.Popen([worker_bin, "--coordinator", address, "--threads", "1"], env=env,
                                stdout=open(f"{tmp}/w{i}.log", "w"), stderr=subprocess.STDOUT)
               for i in range(2)]
    try:
        while registrations() < 2:
            time.sleep(0.05)
        time.sleep(1)
        c.send_signal(signal.SIGKILL)
        c.wait()
        time.sleep(args.down)
        start = time.time()
        c = coordinator("restarted")
        while registrations() < 4 and time.time() - start < 300:
            time.sleep(0.05)
        return time.time() - start
    finally:
        for p in workers + [c]:
            p.send_signal(signal.SIGTERM)
        for p in workers + [c]:
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


print(f"coordinator down {args.down:.0f} s, then restarted; seconds until both workers registered again")
for r in range(args.runs):
    for w in args.workers:
        print(f"round {r + 1} {w}: {once(w):.1f} s", flush=True)
