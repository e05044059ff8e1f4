// BlockStream against BlockForward started over at the block input for every slot (what the
// pipeline ran before the stream existed): the same bits for every slot's input and for the block
// output, while layers are replaced slot by slot (as quantization does), under any memory budget.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <optional>

#include "core/model/llama_block.h"
#include "core/pipeline/block_stream.h"

namespace ptq {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 16;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500.0;
  return c;
}

BlockWeights RandomBlock(const ModelConfig& c) {
  BlockWeights w;
  auto r = [](int64_t o, int64_t i) { return at::randn({o, i}, at::kFloat) * 0.3; };
  const int64_t qd = c.num_attention_heads * c.head_dim, kvd = c.num_key_value_heads * c.head_dim;
  w.input_norm = 1 + 0.1 * at::randn({c.hidden_size});
  w.post_norm = 1 + 0.1 * at::randn({c.hidden_size});
  w.q = r(qd, c.hidden_size);
  w.k = r(kvd, c.hidden_size);
  w.v = r(kvd, c.hidden_size);
  w.o = r(c.hidden_size, qd);
  w.gate = r(c.intermediate_size, c.hidden_size);
  w.up = r(c.intermediate_size, c.hidden_size);
  w.down = r(c.hidden_size, c.intermediate_size);
  return w;
}

// What "quantizing" a slot's layers does to the weights here: new tensors, coarser values.
void ReplaceSlot(BlockWeights& w, LinearSlot slot) {
  for (LinearKind k : kAllLinears) {
    if (SlotOf(k) == slot) w.Linear(k) = (w.Linear(k) * 4).round() / 4;
  }
}

class Capture final : public BlockObserver {
 public:
  explicit Capture(LinearSlot slot, bool reads_probabilities = true)
      : slot_(slot), reads_probabilities_(reads_probabilities) {}
  void OnLinearInput(LinearSlot slot, const at::Tensor& x) override {
    if (slot == slot_) x_ = x.clone();
  }
  void OnAttention(const AttentionInternals& in) override {
    queries_ = in.queries.clone();
    keys_ = in.keys.clone();
    probs_ = in.probs.defined() ? in.probs.clone() : at::Tensor();
  }
  bool ReadsProbabilities() const override { return reads_probabilities_; }
  at::Tensor x_, queries_, keys_, probs_;

 private:
  LinearSlot slot_;
  bool reads_probabilities_;
};

constexpr LinearSlot kSlots[] = {LinearSlot::kAttnIn, LinearSlot::kAttnOut, LinearSlot::kMlpIn,
                                 LinearSlot::kMlpHidden};

// Walks one block as the sequential pipeline does and checks every read against a restart.
// Returns the budget's peak.
int64_t WalkAndCheck(int64_t budget_bytes, bool observe_attention) {
  at::manual_seed(7);
  const ModelConfig c = SmallConfig();
  const int64_t windows = 5, tokens = 6, batch = 2;
  const RopeTable rope = BuildRopeTable(c, tokens);
  const at::Tensor input = at::randn({windows, tokens, c.hidden_size});
  at::Tensor hidden = input.clone();
  BlockWeights w = RandomBlock(c);
  StageCacheBudget budget(budget_bytes);
  BlockStream stream(&hidden, c, rope, batch, &budget);
  EXPECT_EQ(stream.batches(), 3);
  for (LinearSlot slot : kSlots) {
    for (int64_t b = 0; b < stream.batches(); ++b) {
      const at::Tensor rows = input.narrow(0, b * batch, std::min(batch, windows - b * batch));
      Capture expected(slot);
      BlockForward(rows, w, c, rope, &expected, slot);
      const at::Tensor x = stream.SlotInput(slot, b, w);
      EXPECT_TRUE(at::equal(x, expected.x_)) << "slot " << static_cast<int>(slot) << " batch " << b;
      if (observe_attention && slot == LinearSlot::kAttnIn) {
        Capture seen(slot), restart(LinearSlot::kAttnOut);
        stream.ObserveAttention(b, w, &seen);
        BlockForward(rows, w, c, rope, &restart, LinearSlot::kAttnOut);
        EXPECT_TRUE(seen.queries_.defined() && at::equal(seen.queries_, restart.queries_));
        EXPECT_TRUE(at::equal(seen.keys_, restart.keys_) && at::equal(seen.probs_, restart.probs_));
        // Queries and keys alone (no softmax): the same bits, and no probabilities.
        Capture qk_only(slot, /*reads_probabilities=*/false);
        stream.ObserveAttention(b, w, &qk_only);
        EXPECT_TRUE(at::equal(qk_only.queries_, restart.queries_));
        EXPECT_TRUE(at::equal(qk_only.keys_, restart.keys_));
        EXPECT_FALSE(qk_only.probs_.defined());
      }
    }
    ReplaceSlot(w, slot);
  }
  stream.Advance(w);
  EXPECT_TRUE(at::equal(hidden, BlockForward(input, w, c, rope)));
  EXPECT_EQ(budget.taken(), 0);  // Advance forgets every kept stage (their buffers stay held)
  EXPECT_LE(budget.peak(), budget_bytes);
  return budget.peak();
}

TEST(BlockStreamTest, SameBitsAsRestartingTheBlockUnderAnyBudget) {
  const int64_t stage = 5 * 6 * 4;  // windows x tokens x float32 bytes per unit of stage width
  // Unlimited: the residual (32 wide) and the activation (48) are kept at the same time; the
  // attention output (32), dropped once the residual is complete, stays held for the next block.
  EXPECT_EQ(WalkAndCheck(int64_t{1} << 40, false), stage * (32 + 32 + 48));
  // Room for two narrow stages and the activation: the held buffer is freed for the activation.
  EXPECT_EQ(WalkAndCheck(stage * 80, false), stage * 80);
  EXPECT_EQ(WalkAndCheck(0, false), 0);                       // nothing kept: all recomputed
  EXPECT_EQ(WalkAndCheck(stage * 32, false), stage * 32);     // one stage at a time
  EXPECT_EQ(WalkAndCheck(stage * 70, false), stage * 64);     // two narrow stages, no activation
  WalkAndCheck(int64_t{1} << 40, true);
  WalkAndCheck(stage * 40, true);
}

TEST(BlockStreamTest, KeptStageIsRecomputedWhenItsWeightsChange) {
  at::manual_seed(3);
  const ModelConfig c = SmallConfig();
  const RopeTable rope = BuildRopeTable(c, 4);
  const at::Tensor input = at::randn({3, 4, c.hidden_size});
  at::Tensor hidden = input.clone();
  BlockWeights w = RandomBlock(c);
  StageCacheBudget budget(int64_t{1} << 40);
  BlockStream stream(&hidden, c, rope, 3, &budget);
  const at::Tensor before = stream.SlotInput(LinearSlot::kMlpHidden, 0, w).clone();
  w.q = w.q * 0.5;  // a layer before the slot changes after its input was kept
  Capture expected(LinearSlot::kMlpHidden);
  BlockForward(input, w, c, rope, &expected, LinearSlot::kMlpHidden);
  const at::Tensor after = stream.SlotInput(LinearSlot::kMlpHidden, 0, w);
  EXPECT_FALSE(at::equal(before, after));
  EXPECT_TRUE(at::equal(after, expected.x_));
  w.down = w.down * 0.5;  // not read before the output: the kept stages stay valid
  stream.Advance(w);
  EXPECT_TRUE(at::equal(hidden, BlockForward(input, w, c, rope)));
}

TEST(StageCacheBudgetTest, TakesOnlyWhatFitsAndReusesWhatIsGivenBack) {
  const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat);
  StageCacheBudget budget(100);
  at::Tensor a = budget.Take({3, 5}, f32);  // 60 bytes
  ASSERT_TRUE(a.defined());
  EXPECT_FALSE(budget.Take({11}, f32).defined());  // 44 more do not fit
  at::Tensor b = budget.Take({10}, f32);
  ASSERT_TRUE(b.defined());
  EXPECT_EQ(budget.peak(), 100);
  const void* a_memory = a.data_ptr();
  budget.Give(a);
  EXPECT_EQ(budget.taken(), 40);
  EXPECT_EQ(budget.used(), 100);  // a's memory is held
  // The same number of elements in another shape: a's memory, nothing new.
  at::Tensor c = budget.Take({5, 3}, f32);
  EXPECT_EQ(c.data_ptr(), a_memory);
  EXPECT_EQ(c.sizes(), at::IntArrayRef({5, 3}));
  EXPECT_EQ(budget.used(), 100);
  budget.Give(c);
  // Another size: the held buffer is freed to make room.
  at::Tensor d = budget.Take({12}, f32);
  ASSERT_TRUE(d.defined());
  EXPECT_EQ(budget.used(), 88);
  EXPECT_EQ(budget.taken(), 88);
  EXPECT_FALSE(budget.Take({4}, at::TensorOptions().dtype(at::kDouble)).defined());
}

TEST(BlockStreamTest, LaterBlocksReuseTheKeptStagesMemory) {
  at::manual_seed(5);
  const ModelConfig c = SmallConfig();
  const RopeTable rope = BuildRopeTable(c, 4);
  at::Tensor hidden = at::randn({4, 4, c.hidden_size});
  StageCacheBudget budget(int64_t{1} << 40);
  BlockStream stream(&hidden, c, rope, 2, &budget);
  int64_t first_peak = 0;
  for (int block = 0; block < 3; ++block) {
    BlockWeights w = RandomBlock(c);
    const at::Tensor input = hidden.clone();
    for (LinearSlot slot : kSlots) {
      for (int64_t b = 0; b < stream.batches(); ++b) stream.SlotInput(slot, b, w);
      ReplaceSlot(w, slot);
    }
    stream.Advance(w);
    // Batch by batch, as the stream runs (a GEMM's last bits may depend on its row count).
    const at::Tensor expected = at::cat({BlockForward(input.narrow(0, 0, 2), w, c, rope),
                                         BlockForward(input.narrow(0, 2, 2), w, c, rope)});
    EXPECT_TRUE(at::equal(hidden, expected)) << "block " << block;
    if (block == 0) first_peak = budget.peak();
    EXPECT_EQ(budget.taken(), 0);
    EXPECT_EQ(budget.used(), first_peak);  // every buffer held for the next block
  }
  EXPECT_GT(first_peak, 0);
  EXPECT_EQ(budget.peak(), first_peak);  // no block after the first allocated anything
  budget.FreeHeld();
  EXPECT_EQ(budget.used(), 0);
}

}  // namespace
}  // namespace ptq
