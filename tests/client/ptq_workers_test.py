#!/usr/bin/env python3
"""`ptq quantize --workers N` end to end with real processes.

1. 2 and 3 local worker processes write the checkpoint one process writes, byte for byte.
2. A worker killed with SIGKILL mid-job: `ptq` exits non-zero with an error that names the lost
   worker, within seconds, and leaves no checkpoint under the output name.

Usage: ptq_workers_test.py PTQ_BINARY SOURCE_DIR
"""
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def children_of(pid):
    """Child pids from /proc (no procps needed)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def main():
    ptq, source = sys.argv[1], sys.argv[2]
    model = os.path.join(source, "models/demo/tiny-llama-bytes")
    data = os.path.join(source, "models/demo/data")
    tmp = tempfile.mkdtemp(prefix="ptq_workers_test_")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    base = [ptq, "quantize", "--model", model, "--calib", f"{data}/calib.txt", "--method", "turboboa",
            "--value-block", "--bits", "2", "--group-size", "64",
            "--samples", "24", "--seq-len", "64", "--refine-iters", "1"]
    errors = []
    try:
        for n in (1, 2, 3):
            r = subprocess.run(base + ["--out", f"{tmp}/w{n}", "--workers", str(n)], env=env,
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                errors.append(f"--workers {n} failed: {r.stderr[-1500:]}")
        for n in (2, 3):
            a, b = f"{tmp}/w1/model.safetensors", f"{tmp}/w{n}/model.safetensors"
            if not (os.path.exists(a) and os.path.exists(b) and filecmp.cmp(a, b, shallow=False)):
                errors.append(f"--workers {n} checkpoint differs from one process")

        # Kill worker 1 once the job is under way (a larger job, so there is time).
        job = subprocess.Popen(base[:-6] + ["--samples", "96", "--seq-len", "128", "--out",
                                            f"{tmp}/killed", "--workers", "2"],
                               env=env, stderr=subprocess.PIPE, text=True)
        child = None
        deadline = time.time() + 120
        while child is None and time.time() < deadline and job.poll() is None:
            children = children_of(job.pid)
            if children:
                child = children[0]
            time.sleep(0.2)
        if child is None:
            errors.append("no worker process appeared")
            job.kill()
        else:
            time.sleep(3)
            os.kill(child, signal.SIGKILL)
            try:
                _, err = job.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                job.kill()
                _, err = job.communicate()
                errors.append("ptq hung after its worker was killed")
            if job.returncode == 0:
                errors.append("ptq succeeded although its worker was killed")
            last = err.strip().splitlines()[-1] if err.strip() else ""
            if "worker 1" not in last and "peer" not in last:
                errors.append(f"the error does not name the lost worker: {last!r}")
            if os.path.exists(f"{tmp}/killed/config.json"):
                errors.append("a checkpoint was left under the output name")
        if errors:
            print("FAIL:\n  " + "\n  ".join(errors))
            return 1
        print("OK: 2 and 3 workers match one process byte for byte; a killed worker is reported")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
