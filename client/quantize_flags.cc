#include "client/quantize_flags.h"

namespace ptq::client {

void AddQuantizeFlags(CLI::App* quantize, QuantizeFlags* flags) {
  worker::QuantizeOptions& q = flags->options;
  quantize->add_option("--model", q.model_dir, "Hugging Face model folder")->required();
  quantize->add_option("--calib", q.calib_path, "calibration text (or .ids token file)")->required();
  quantize->add_option("--out", q.out_dir, "output folder")->required();
  quantize->add_option("--method", q.method, "rtn, gptq, boa or turboboa")->capture_default_str();
  quantize->add_option("--joint-rows", q.joint_rows,
                       "turboboa: out-channels of a head quantized jointly (boa: 1)")
      ->capture_default_str();
  quantize->add_option("--residual-alpha", q.residual_alpha,
                       "correct for the error earlier quantized layers pass on, 0 (off) to 1 "
                       "(default: 0.25 for turboboa, 0 otherwise)");
  quantize->add_flag("--no-value-block", flags->no_value_block,
                     "boa/turboboa: W_v with the shared input Hessian instead of per-head "
                     "attention-weighted ones (saves a hidden x hidden matrix per kv head)");
  quantize->add_option("--value-damp", q.value_damp,
                       "boa/turboboa: damping of the value-block Hessians as a fraction of their "
                       "mean diagonal (default: --damp)");
  quantize->add_flag("--act-order-rows", q.act_order_rows,
                     "boa/turboboa: quantize each head's q/k rows by decreasing diag(H_out) (the "
                     "TurboBoA reference's act_order_row; the checkpoint's layout is unchanged)");
  quantize->add_flag("--no-sequential", flags->no_sequential,
                     "take every layer's statistics from the full-precision block (as the TurboBoA "
                     "reference code does) instead of quantizing Q/K/V, O and the MLP in order");
  quantize->add_option("--qk-hessian", q.qk_hessian,
                       "boa/turboboa: the score error q_proj/k_proj's out-channel compensation "
                       "weighs: moment (BoA's), covariance (q: key covariance) or softmax (through "
                       "each query's softmax Jacobian)")
      ->capture_default_str();
  quantize->add_option("--refine-iters", q.refine_iters,
                       "coordinate-descent sweeps refining group scales after quantization (0: off)")
      ->capture_default_str();
  quantize->add_option("--requant-passes", q.requant_passes,
                       "after refining, quantize again on the refined scales this many times; each "
                       "head or row chunk keeps its lowest-loss pass (needs --refine-iters)")
      ->capture_default_str();
  quantize->add_option("--scale-init", q.scale_init,
                       "group scales before quantizing: minmax, hessian (diag(H)-weighted search) or "
                       "hessian-block (the group's full H block)")
      ->capture_default_str();
  quantize->add_option("--bits", q.gptq.grid.bits, "2, 3, 4 or 8")->capture_default_str();
  quantize->add_option("--format", q.format,
                       "gptq (packed, what vLLM and transformers load) or dequantized (float32)")
      ->capture_default_str();
  quantize->add_option("--group-size", q.gptq.group_size, "columns per group; -1 per channel")
      ->capture_default_str();
  quantize->add_flag("--sym", q.gptq.grid.sym, "symmetric grid (zero point 2^(b-1))");
  quantize->add_flag("--mse", q.gptq.grid.mse, "search the grid range (GPTQ's MSE grid)");
  quantize->add_flag("--act-order", q.gptq.act_order, "quantize columns by decreasing H_ii");
  quantize->add_flag("--static-groups", q.gptq.static_groups, "group grids fixed before GPTQ");
  quantize->add_option("--damp", q.gptq.damp, "damping fraction of mean(diag H)")
      ->capture_default_str();
  quantize->add_option("--samples", q.samples, "calibration windows")->capture_default_str();
  quantize->add_option("--seq-len", q.seq_len, "tokens per calibration window")
      ->capture_default_str();
  quantize->add_option("--seed", q.seed, "seed of the calibration sampling")->capture_default_str();
  quantize->add_option("--eval", q.eval_path, "text to measure perplexity on, before and after");
  quantize->add_option("--eval-seq-len", q.eval_seq_len, "evaluation window (default: --seq-len)");
  quantize->add_option("--eval-windows", q.eval_max_windows, "evaluate at most this many windows");
  quantize->add_flag("--skip-fp-eval", flags->skip_fp_eval,
                     "with --eval, measure only the quantized model (the full-precision one is known)");
  quantize->add_flag("--force", q.force, "replace a model already in --out");
  quantize->add_flag("--partial-groups", q.partial_groups,
                     "allow a shorter last group where --group-size does not divide a layer");
}

}  // namespace ptq::client
