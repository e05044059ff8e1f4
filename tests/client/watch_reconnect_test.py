#!/usr/bin/env python3
"""`ptq watch` and `ptq logs -f` across a coordinator restart, as an operator meets it: the
coordinator (embedded worker) is killed with SIGKILL mid-job and restarted on the same store and port.

1. A running job: watch and logs -f retry while the coordinator is down (a line on stderr for each
   retry, one when it answers again) and finish with exit code 0. The watch's events carry the
   sequence numbers 1, 2, 3, ... without a gap or a repeat across the restart, its layer events are
   exactly the layer lines of the job's stored log (another record of the same progress) from the
   one it attached at, its states
   are RUNNING, QUEUED (re-queued by the restart), RUNNING, SUCCEEDED, and `logs -f` printed every
   line of the stored log once, in order.
2. Messages that say what happens: the restart's log line says the job resumes from its last saved
   block, not from scratch; the run then says "resumed from block K+1 of M", K being the number of
   blocks the watch saw reloaded (at least the blocks finished before the kill), and the first layer
   it quantizes again is in block K+1.
3. A job cancelled after a restart: the watch that followed it across the restart exits with 3.
4. A coordinator that stays away: watch gives up after --reconnect-for seconds with exit code 1.

Usage: watch_reconnect_test.py PTQ PTQ_COORDINATOR SOURCE_DIR
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ptq, coordinator_bin, source = sys.argv[1:4]
model = os.path.join(source, "models/demo/tiny-llama-bytes")
data = os.path.join(source, "models/demo/data")
tmp = tempfile.mkdtemp(prefix="watch_reconnect_test_")
env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PTQ_INSECURE="1")  # plaintext on loopback
errors = []
# Long enough (4 blocks at 48 x 128 tokens, TurboBoA) to kill the coordinator in the middle.
LONG = ["--method", "turboboa", "--bits", "2", "--refine-iters", "1", "--group-size", "64",
        "--samples", "48", "--seq-len", "128"]
FINAL = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


address = f"127.0.0.1:{free_port()}"


def run_ptq(*args, timeout=120):
    return subprocess.run([ptq, *args, "--coordinator", address], env=env, capture_output=True,
                          text=True, timeout=timeout)


def start_coordinator(tag):
    log = open(f"{tmp}/coordinator-{tag}.log", "w")
    proc = subprocess.Popen([coordinator_bin, "--listen", address, "--store", f"{tmp}/jobs.db",
                             "--threads", "1", "--insecure"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        if run_ptq("list").returncode == 0:
            return proc
        time.sleep(0.2)
    raise RuntimeError("coordinator did not start")


def status(job_id):
    r = run_ptq("status", job_id, "--json", "--reconnect-for", "0")
    return json.loads(r.stdout) if r.returncode == 0 else None


def wait_until(job_id, what, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = status(job_id)
        if s and what(s):
            return s
        time.sleep(0.1)
    return None


def submit(out):
    r = run_ptq("submit", "--model", model, "--calib", f"{data}/calib.txt", "--out", out, *LONG)
    if r.returncode != 0:
        raise RuntimeError(f"submit failed: {r.stderr}")
    return r.stdout.strip()


def follow(tag, *args):
    """Starts `ptq ARGS --json` with its stdout and stderr in files; returns (process, paths)."""
    paths = (f"{tmp}/{tag}.out", f"{tmp}/{tag}.err")
    proc = subprocess.Popen([ptq, *args, "--json", "--coordinator", address, "--reconnect-for", "120"],
                            env=env, stdout=open(paths[0], "w"), stderr=open(paths[1], "w"))
    return proc, paths


def read(path):
    with open(path) as f:
        return f.read()


def exit_code(proc, timeout):
    """The process's exit code, or "timeout" (and it is killed) when it runs past `timeout` s."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return "timeout"


def wait_for_layer(path, what, timeout=300):
    """The first layer event in the `--json` watch output at `path` for which what(layer) holds;
    None when the job ends (or `timeout` s pass) first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in read(path).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                break  # the line being written
            if "layer" in event and what(event["layer"]):
                return event["layer"]
            if event.get("state", {}).get("state") in FINAL:
                return None
        time.sleep(0.02)
    return None


def kill_and_restart(coordinator, tag):
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    time.sleep(3)  # long enough for the followers to notice and retry
    return start_coordinator(tag)


def layer_lines(log_json_lines):
    """(block, layer, layers_done) of each layer line of the stored log (JobScheduler's format)."""
    out = []
    for line in log_json_lines:
        m = re.match(r"block (\d+)/\d+ (\S+) loss .* (\d+)/\d+ layers, ETA", json.loads(line)["text"])
        if m:
            out.append((int(m.group(1)) - 1, m.group(2), int(m.group(3))))
    return out


coordinator = None
followers = []
try:
    coordinator = start_coordinator("first")

    # 1 and 2: a running job across a SIGKILL of the coordinator.
    out = f"{tmp}/out"
    job_id = submit(out)
    watch, watch_files = follow("watch", "watch", job_id)
    logs, logs_files = follow("logs", "logs", "-f", job_id)
    followers += [watch, logs]
    # Inside a block after the first, two of its seven layers done. Read from the watch's own
    # stream: one `ptq status` per poll is too slow on a loaded machine, and the whole job can pass
    # between two polls.
    layer = wait_for_layer(watch_files[0], lambda l: int(l.get("block", 0)) >= 1 and
                           int(l.get("layers_done", 0)) % 7 >= 2)
    if layer is None:
        raise RuntimeError("the watch saw no layer past the first block before the job ended")
    before = {"blocks_done": int(layer.get("block", 0)), "layers_done": int(layer["layers_done"]),
              "num_blocks": int(layer["num_blocks"])}
    blocks_before = before["blocks_done"]
    coordinator = kill_and_restart(coordinator, "second")
    for name, proc in (("watch", watch), ("logs -f", logs)):
        rc = exit_code(proc, 600)
        if rc != 0:
            errors.append(f"{name} exited {rc}: {read(f'{tmp}/{name.split()[0]}.err')[-2000:]}")
    for name, files in (("watch", watch_files), ("logs -f", logs_files)):
        err = read(files[1])
        if "retrying in" not in err or "the coordinator answers again" not in err:
            errors.append(f"{name} did not say it was reconnecting:\n{err}")

    events = [json.loads(l) for l in read(watch_files[0]).splitlines()]
    sequences = [int(e.get("sequence", 0)) for e in events]
    # The first event (the state when the watch began) stands for the events up to its sequence.
    if sequences != list(range(sequences[0], sequences[0] + len(sequences))):
        errors.append(f"watch: event sequences are not contiguous: {sequences}")
    states = [e["state"]["state"] for e in events if "state" in e]
    if states[-1:] != ["JOB_STATE_SUCCEEDED"] or states.count("JOB_STATE_SUCCEEDED") != 1:
        errors.append(f"watch: states {states}")
    # The watch may have begun while the job was still queued.
    after_queue = states[1:] if states[:1] == ["JOB_STATE_QUEUED"] else states
    if after_queue != ["JOB_STATE_RUNNING", "JOB_STATE_QUEUED", "JOB_STATE_RUNNING",
                       "JOB_STATE_SUCCEEDED"]:
        errors.append(f"watch: states {states}, expected RUNNING, QUEUED, RUNNING, SUCCEEDED")
    stored_log = run_ptq("logs", job_id, "--json").stdout.splitlines()
    watched_layers = [(int(e["layer"].get("block", 0)), e["layer"]["layer"],
                       int(e["layer"]["layers_done"])) for e in events if "layer" in e]
    # The watch may attach after the job's first layers (its first event, the state then, stands
    # for them): its layer events are the stored log's from some line on, every line after it, and
    # the lines it did not see came before the kill.
    stored_layers = layer_lines(stored_log)
    skipped = len(stored_layers) - len(watched_layers)
    if (skipped < 0 or watched_layers != stored_layers[skipped:] or
            skipped > int(before["layers_done"])):
        errors.append(f"watch: layer events differ from the stored log's layer lines:\n"
                      f"{watched_layers}\n{stored_layers}")
    followed = read(logs_files[0]).splitlines()
    if [json.loads(l) for l in followed] != [json.loads(l) for l in stored_log]:
        errors.append(f"logs -f: {len(followed)} lines, the stored log {len(stored_log)}:\n"
                      + "\n".join(followed))

    # 2. What the log says about the resume.
    restart = [l for l in stored_log if "coordinator restarted" in l]
    text = "\n".join(json.loads(l)["text"] for l in stored_log)
    if len(restart) != 1 or "resumes from its last saved block, not from scratch" not in restart[0]:
        errors.append(f"the restart's log line: {restart}")
    if "from scratch" in text.replace("not from scratch", ""):
        errors.append(f"the log says from scratch:\n{text}")
    second_run = events[[i for i, e in enumerate(events)
                         if e.get("state", {}).get("state") == "JOB_STATE_RUNNING"][1]:]
    reloaded = [int(e["block"].get("block", 0)) for e in second_run
                if "block" in e and e["block"].get("reloaded")]
    num_blocks = int(before["num_blocks"])
    if reloaded != list(range(len(reloaded))) or len(reloaded) < blocks_before:
        errors.append(f"reloaded blocks {reloaded}; {blocks_before} were finished before the kill")
    expected = f"resumed from block {len(reloaded) + 1} of {num_blocks}: "
    if text.count(expected) != 1:
        errors.append(f"the log does not say '{expected}' once:\n{text}")
    layers = [e["layer"] for e in second_run if "layer" in e]
    reloaded_layers = [l for l in layers if l.get("reloaded")]
    if [int(l.get("block", 0)) for l in reloaded_layers] != [b for b in reloaded for _ in range(7)]:
        errors.append(f"reloaded layer events {reloaded_layers} do not match the reloaded blocks {reloaded}")
    first_layer = next((l for l in layers if not l.get("reloaded")), None)
    if first_layer is None or int(first_layer.get("block", 0)) != len(reloaded):
        errors.append(f"the resumed run's first quantized layer is {first_layer}, not in block "
                      f"{len(reloaded) + 1}")
    if not os.path.exists(f"{out}/model.safetensors"):
        errors.append("no checkpoint after the restart")

    # 3. Cancelled after a restart: the watch that followed it exits with 3.
    job_id = submit(f"{tmp}/cancelled")
    watch, watch_files = follow("watch-cancel", "watch", job_id)
    followers.append(watch)
    if wait_until(job_id, lambda s: s["state"] == "JOB_STATE_RUNNING") is None:
        errors.append("cancel: the job never ran")
    coordinator = kill_and_restart(coordinator, "third")
    run_ptq("cancel", job_id)
    rc = exit_code(watch, 300)
    if rc != 3:
        errors.append(f"cancel: watch exited {rc}, not 3: {read(watch_files[1])[-2000:]}")

    # 4. A coordinator that does not come back: watch gives up, exit code 1, saying why.
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    coordinator = None
    start = time.time()
    r = subprocess.run([ptq, "watch", job_id, "--coordinator", address, "--reconnect-for", "2"],
                       env=env, capture_output=True, text=True, timeout=60)
    took = time.time() - start
    if r.returncode != 1 or "gave up" not in r.stderr or not 1.5 < took < 30:
        errors.append(f"give up: exit {r.returncode} after {took:.1f} s: {r.stderr}")
finally:
    for p in followers:
        if p.poll() is None:
            p.kill()
    if coordinator is not None and coordinator.poll() is None:
        coordinator.send_signal(signal.SIGTERM)
        try:
            coordinator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            coordinator.kill()

if errors:
    for e in errors:
        print("FAIL:", e)
    print("logs kept in", tmp)
    sys.exit(1)
shutil.rmtree(tmp, ignore_errors=True)
print("watch/logs across a coordinator restart: resumed without gaps or repeats; "
      "resume messages, cancel exit code 3 and give-up checked")
