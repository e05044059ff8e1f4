# Copied unchanged from ../shared/bench/plain_gptq_block.py so it travels to the GPU machine with the
# repository (scripts/gpu_check.sh runs it beside bench/gpu_block_bench).
# Baseline for GPU benchmarks: GPTQ written plainly in PyTorch (the structure of the reference gptq.py
# that AutoGPTQ, GPTQModel and llm-compressor share) on one Llama-2-7B-shaped block with random weights
# and N x 2048 calibration tokens (default N = 128). Prints seconds per phase and per layer, peak GPU memory.
# Run it in the same session as our own benchmark so the two figures compare: python3 plain_gptq_block.py [N]
import sys, time, json, torch

dev = "cuda"
hidden, inter, T, N = 4096, 11008, 2048, int(sys.argv[1]) if len(sys.argv) > 1 else 128
bits, group = 4, 128
torch.manual_seed(0)

def sync(): torch.cuda.synchronize()

def grid(w, bits):  # asymmetric min-max per row
    lo = torch.clamp(w.min(1, keepdim=True)[0], max=0); hi = torch.clamp(w.max(1, keepdim=True)[0], min=0)
    s = (hi - lo).clamp(min=1e-8) / (2 ** bits - 1); z = torch.round(-lo / s); return s, z

def gptq(W, H, bits, group, blocksize=128, damp=0.01):
    W = W.float().clone(); H = H.clone(); n = W.shape[1]
    dead = torch.diag(H) == 0; H[dead, dead] = 1; W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n, device=H.device)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W); s = z = None; maxq = 2 ** bits - 1
    for b0 in range(0, n, blocksize):
        b1 = min(b0 + blocksize, n); W1 = W[:, b0:b1].clone(); E = torch.zeros_like(W1); U1 = U[b0:b1, b0:b1]
        for i in range(b1 - b0):
            c = b0 + i
            if c % group == 0: s, z = grid(W[:, c:c + group] if i == 0 else torch.cat([W1[:, i:], W[:, b1:]], 1)[:, :group], bits)
            w = W1[:, i]
            qq = (s * (torch.clamp(torch.round(w.unsqueeze(1) / s) + z, 0, maxq) - z)).squeeze(1); Q[:, c] = qq
            e = (w - qq) / U1[i, i]; W1[:, i:] -= e.unsqueeze(1) * U1[i, i:].unsqueeze(0); E[:, i] = e
        W[:, b1:] -= E @ U[b0:b1, b1:]
    return Q

out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "tokens": N * T}
# Calibration statistics: H = 2/n X^T X accumulated window by window (as the reference hooks do).
X = torch.randn(N * T, hidden, device=dev, dtype=torch.bfloat16)
sync(); t = time.time()
H = torch.zeros(hidden, hidden, device=dev)
for k in range(N):
    x = X[k * T:(k + 1) * T].float(); H += x.T @ x
H *= 2 / (N * T); sync(); out["hessian_4096_s"] = time.time() - t
M = torch.randn(N * T // 8, inter, device=dev, dtype=torch.bfloat16)  # 1/8 of the tokens, scaled below
sync(); t = time.time()
H2 = torch.zeros(inter, inter, device=dev)
for k in range(N // 8):
    x = M[k * T:(k + 1) * T].float(); H2 += x.T @ x
H2 *= 2 / (N * T // 8); sync(); out["hessian_11008_s_x8"] = (time.time() - t) * 8
del X, M
layers = {"q": (hidden, hidden, H), "k": (hidden, hidden, H), "v": (hidden, hidden, H), "o": (hidden, hidden, H),
          "gate": (inter, hidden, H), "up": (inter, hidden, H), "down": (hidden, inter, H2)}
gptq(torch.randn(512, 512, device=dev) * 0.02, torch.eye(512, device=dev), bits, group)  # warm-up
for b in (4, 2):
    total = 0; per = {}
    for name, (rows, cols, HH) in layers.items():
        W = torch.randn(rows, cols, device=dev) * 0.02
        sync(); t = time.time(); Q = gptq(W, HH, b, group); sync(); dt = time.time() - t
        per[name] = round(dt, 3); total += dt
    out[f"gptq_w{b}_g{group}_per_layer_s"] = per; out[f"gptq_w{b}_block_s"] = round(total, 3)
out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
# Lower bound on the arithmetic: the trailing-block GEMMs and the Cholesky factorisations, timed alone.
sync(); t = time.time()
for name, (rows, cols, HH) in layers.items():
    W = torch.randn(rows, cols, device=dev); U = torch.linalg.cholesky(HH + torch.eye(cols, device=dev))
    for b0 in range(0, cols, 128): W[:, b0 + 128:] -= W[:, b0:b0 + 128] @ U[b0:b0 + 128, b0 + 128:]
sync(); out["gemm_and_cholesky_only_block_s"] = round(time.time() - t, 3)
print(json.dumps(out, indent=1))
