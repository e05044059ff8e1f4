#!/usr/bin/env python3
"""The service with remote workers, end to end on loopback: `ptq-coordinator --workers N` and separate
`ptq-worker` processes that register over WorkerService and meet through the coordinator's rendezvous.

1. Groups of 1, 2 and 3 workers write, for GPTQ and TurboBoA, the checkpoint `ptq quantize` writes in
   one process, byte for byte. (The coordinator is restarted on the same store and port between group
   sizes; the running workers notice and register again.)
2. A worker of the running group killed with SIGKILL during block 2: a re-formed group resumes the
   job from its last finished block and finishes with the same checkpoint. The same when a worker is
   stopped (SIGSTOP: no heartbeats, connections left open): its blocked peer exits after its abort
   grace (code 75, for a supervisor to restart it) and the spare worker finishes the job.
3. The coordinator killed with SIGKILL during block 2 and restarted on the same store: the job
   resumes from its last finished block and finishes with the same checkpoint. The same when the
   coordinator comes back only after the group has finished every block without it: rank 0 waits
   for it before committing, the restarted coordinator no longer knows the attempt, and the job's
   new attempt reloads every block (an attempt that had committed would leave the job it runs again
   an output already taken).
4. Cancel during a job: CANCELLED, and nothing at the output path (no staging folder either).
5. Two jobs submitted at once queue and both finish.

Usage: remote_workers_test.py PTQ PTQ_COORDINATOR PTQ_WORKER SOURCE_DIR
"""
import filecmp
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ptq, coordinator_bin, worker_bin, source = sys.argv[1:5]
model = os.path.join(source, "models/demo/tiny-llama-bytes")
data = os.path.join(source, "models/demo/data")
tmp = tempfile.mkdtemp(prefix="remote_workers_test_")
env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PTQ_INSECURE="1")  # plaintext on loopback
errors = []

SMALL = ["--group-size", "64", "--samples", "24", "--seq-len", "64"]
JOBS = {
    "gptq": ["--method", "gptq", "--bits", "4"] + SMALL,
    "turboboa": ["--method", "turboboa", "--bits", "2", "--refine-iters", "1", "--value-block"] + SMALL,
    # Long enough (8 blocks of work at 48 x 128 tokens) to act on while it runs.
    "long": ["--method", "turboboa", "--bits", "2", "--refine-iters", "1", "--group-size", "64",
             "--samples", "48", "--seq-len", "128"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


port = free_port()
address = f"127.0.0.1:{port}"


def run_ptq(*args, timeout=120):
    return subprocess.run([ptq, *args], env=env, capture_output=True, text=True, timeout=timeout)


def start_coordinator(workers, tag):
    log = open(f"{tmp}/coordinator-{tag}.log", "w")
    proc = subprocess.Popen([coordinator_bin, "--listen", address, "--store", f"{tmp}/jobs.db",
                             "--workers", str(workers), "--worker-lease-ms", "1500", "--threads", "1",
                             "--insecure"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        if run_ptq("list", "--coordinator", address).returncode == 0:
            return proc
        time.sleep(0.2)
    raise RuntimeError("coordinator did not start")


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_worker(i):
    log = open(f"{tmp}/worker-{i}.log", "a")
    # The grace outlasts one layer on a loaded 2-core machine (a peer that is computing, not blocked,
    # must not be taken for blocked: scenario 3 has no supervisor to restart it).
    return subprocess.Popen([worker_bin, "--coordinator", address, "--threads", "1",
                             "--abort-grace", "10"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def submit(job, out):
    r = run_ptq("submit", "--coordinator", address, "--model", model, "--calib", f"{data}/calib.txt",
                "--out", out, *JOBS[job])
    if r.returncode != 0:
        raise RuntimeError(f"submit failed: {r.stderr}")
    return r.stdout.strip()


def status(job_id):
    r = run_ptq("status", "--coordinator", address, job_id, "--json")
    return json.loads(r.stdout) if r.returncode == 0 else None


def wait_state(job_id, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = status(job_id)
        if s and s["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            return s
        time.sleep(0.3)
    return status(job_id)


def wait_blocks(job_id, blocks, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = status(job_id)
        if s and int(s.get("blocks_done", 0)) >= blocks:
            return True
        time.sleep(0.1)
    return False


def logs(job_id):
    return run_ptq("logs", "--coordinator", address, job_id).stdout


def same(a, b):
    a, b = f"{a}/model.safetensors", f"{b}/model.safetensors"
    return os.path.exists(a) and os.path.exists(b) and filecmp.cmp(a, b, shallow=False)


def reference(job):
    out = f"{tmp}/ref-{job}"
    r = run_ptq("quantize", "--model", model, "--calib", f"{data}/calib.txt", "--out", out, *JOBS[job],
                timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"reference {job} failed: {r.stderr[-1000:]}")
    return out


def check_done(job_id, job, out, what):
    s = wait_state(job_id)
    if not s or s["state"] != "JOB_STATE_SUCCEEDED":
        errors.append(f"{what}: job ended {s and s['state']}: {s and s.get('error')}\n{logs(job_id)}")
    elif not same(out, refs[job]):
        errors.append(f"{what}: checkpoint differs from one process")


def resumptions():
    """How many times a worker resumed a job from finished blocks (core/checkpoint/block_store.h)."""
    n = 0
    for name in os.listdir(tmp):
        if name.startswith("worker-"):
            with open(f"{tmp}/{name}") as f:
                n += sum("resuming:" in line for line in f)
    return n


def wait_worker_log(text, timeout=300, unless_exists=None):
    """Waits for a worker log line holding `text`; gives up early once `unless_exists` exists."""
    deadline = time.time() + timeout
    while time.time() < deadline and not (unless_exists and os.path.exists(unless_exists)):
        for name in os.listdir(tmp):
            if name.startswith("worker-"):
                with open(f"{tmp}/{name}") as f:
                    if any(text in line for line in f):
                        return True
        time.sleep(0.3)
    return False


def member_pid(job_id, rank, workers):
    """The pid of the worker that runs `rank` of the job's current attempt (from the worker logs)."""
    for i, w in enumerate(workers):
        with open(f"{tmp}/worker-{i}.log") as f:
            lines = [l for l in f if f"of job {job_id}: rank {rank} " in l]
        if lines and w.poll() is None:
            return i
    return None


workers, coordinator = [], None
try:
    refs = {job: reference(job) for job in JOBS}
    workers = [start_worker(i) for i in range(3)]

    # 1. Groups of 1, 2 and 3.
    for n in (1, 2, 3):
        coordinator = start_coordinator(n, f"n{n}")
        for job in ("gptq", "turboboa"):
            out = f"{tmp}/{job}-w{n}"
            check_done(submit(job, out), job, out, f"{job} with {n} worker(s)")
        stop(coordinator)

    # 2. SIGKILL a member of the running group during block 2.
    coordinator = start_coordinator(2, "kill-worker")
    out = f"{tmp}/killed-worker"
    job_id = submit("long", out)
    if not wait_blocks(job_id, 1):
        errors.append("kill-worker: block 1 never finished")
    else:
        victim = member_pid(job_id, 1, workers)
        if victim is None:
            errors.append("kill-worker: no worker log names rank 1")
        else:
            resumed = resumptions()
            workers[victim].kill()
            check_done(job_id, "long", out, "after a worker was killed")
            if resumptions() <= resumed:
                errors.append("kill-worker: the re-formed group did not resume from finished blocks")
            text = logs(job_id)
            if "re-forming the group" not in text or "attempt 2" not in text:
                errors.append(f"kill-worker: the log does not show a re-formed group:\n{text}")
            workers[victim].wait()
            workers[victim] = start_worker(victim)

    # 2b. SIGSTOP a member: it stops heartbeating but keeps its connections open, so its peer blocks
    # in a collective; the peer exits after its abort grace and the spare finishes the job.
    out = f"{tmp}/stopped-worker"
    job_id = submit("long", out)
    if not wait_blocks(job_id, 1):
        errors.append("stop-worker: block 1 never finished")
    else:
        victim = member_pid(job_id, 1, workers)
        if victim is None:
            errors.append("stop-worker: no worker log names rank 1")
        else:
            workers[victim].send_signal(signal.SIGSTOP)
            check_done(job_id, "long", out, "after a worker stopped heartbeating")
            workers[victim].kill()
            workers[victim].wait()
            exited = [w.poll() for w in workers]
            if 75 not in exited:
                errors.append(f"stop-worker: the blocked peer did not exit for a restart: {exited}")
            workers = [w if w.poll() is None else start_worker(i) for i, w in enumerate(workers)]

    # 3. SIGKILL the coordinator during block 2 and restart it on the same store: at once, and only
    # once rank 0 has finished every block and waits for it to commit.
    for tag, back_late in (("kill-coordinator", False), ("kill-coordinator-late", True)):
        out = f"{tmp}/{tag}"
        job_id = submit("long", out)
        if not wait_blocks(job_id, 1):
            errors.append(f"{tag}: block 1 never finished")
            continue
        resumed = resumptions()
        stop(coordinator, signal.SIGKILL)
        coordinator = None
        if back_late:
            if not wait_worker_log(f"of job {job_id}: the checkpoint is complete; waiting for the "
                                   "coordinator", unless_exists=out):
                errors.append(f"{tag}: rank 0 never waited for the coordinator to commit")
            if os.path.exists(out):
                errors.append(f"{tag}: the attempt committed without its coordinator")
        coordinator = start_coordinator(2, tag)
        check_done(job_id, "long", out, f"{tag}: after the coordinator was restarted")
        if resumptions() <= resumed:
            errors.append(f"{tag}: the restarted job did not resume from finished blocks")

    # 4. Cancel mid-job: nothing at the output path.
    out = f"{tmp}/cancelled"
    job_id = submit("long", out)
    if wait_blocks(job_id, 1):
        run_ptq("cancel", "--coordinator", address, job_id)
    s = wait_state(job_id, timeout=120)
    if not s or s["state"] != "JOB_STATE_CANCELLED":
        errors.append(f"cancel: job ended {s and s['state']}")
    time.sleep(3)  # every rank has reported by now; none may still write
    leftovers = glob.glob(glob.escape(out) + ".partial*")
    if os.path.exists(out) or leftovers or os.path.exists(out + ".blocks"):
        errors.append("cancel: something was left at the output path")

    # 5. Concurrent submits queue and all finish.
    outs = [f"{tmp}/queued-{i}" for i in range(2)]
    ids = [submit("gptq", o) for o in outs]
    for job_id, o in zip(ids, outs):
        check_done(job_id, "gptq", o, f"queued job {job_id}")
finally:
    if coordinator is not None:
        stop(coordinator)
    for w in workers:
        stop(w)

if errors:
    for e in errors:
        print("FAIL:", e)
    print("logs kept in", tmp)
    sys.exit(1)
shutil.rmtree(tmp, ignore_errors=True)
print("remote workers: groups of 1/2/3 byte-identical; worker kill, coordinator kill, cancel, queue OK")
