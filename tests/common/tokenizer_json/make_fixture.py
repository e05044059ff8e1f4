#!/usr/bin/env python3
"""Builds the small tokenizer.json files of the tokenizer.json fixture (run at development time;
the outputs are committed).

Three byte-level BPE tokenizers in the layouts the families ship, with merges learned here from the
first 64 KiB of models/demo/data/calib.txt (any valid merges would do: what is tested is that our
encoder gives the reference implementation's ids for the same file):
- gpt2.tokenizer.json: ByteLevel pre-tokenizer with GPT-2's own regex and add_prefix_space, an
  <|endoftext|> added token with lstrip/rstrip.
- llama3.tokenizer.json: Split with Llama 3's regex, then ByteLevel without regex; ignore_merges;
  <|begin_of_text|>, <|end_of_text|> and a reserved special token.
- qwen2.tokenizer.json: NFC normalizer, Split with Qwen2's regex (single digits), ByteLevel;
  <|endoftext|>, <|im_start|>, <|im_end|>.
Then expected_ids.js encodes texts.json with Hugging Face's tokenizers (npm) into expected.json.

Usage: make_fixture.py SOURCE_DIR OUT_DIR
"""
import collections
import json
import os
import re
import sys

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def learn_merges(text, count):
    """Plain BPE on words split roughly at letter/space boundaries (Python's re has no \\p{L})."""
    b2u = bytes_to_unicode()
    words = collections.Counter(re.findall(r" ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+", text))
    seqs = {w: [b2u[b] for b in w.encode()] for w in words}
    merges = []
    for _ in range(count):
        pairs = collections.Counter()
        for w, f in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[a, b] += f
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for w in words:
            s, out, i = seqs[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def tokenizer(merges, normalizer, pre_tokenizer, added, ignore_merges, merges_as_pairs):
    b2u = bytes_to_unicode()
    vocab = {}
    for b in range(256):
        vocab[b2u[b]] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    added_tokens = []
    for content, special, strip in added:
        added_tokens.append({"id": len(vocab) + len(added_tokens), "content": content,
                             "single_word": False, "lstrip": strip, "rstrip": strip,
                             "normalized": not special, "special": special})
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
                  "vocab": vocab,
                  "merges": [[a, b] for a, b in merges] if merges_as_pairs
                  else [f"{a} {b}" for a, b in merges]},
    }


def split_then_byte_level(pattern):
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}


def main():
    source, out = sys.argv[1], sys.argv[2]
    with open(os.path.join(source, "models/demo/data/calib.txt"), encoding="utf-8") as f:
        text = f.read(65536)
    merges = learn_merges(text, 300)
    files = {
        "gpt2": tokenizer(merges, None,
                          {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                           "use_regex": True},
                          [("<|endoftext|>", True, True)], False, False),
        "llama3": tokenizer(merges, None, split_then_byte_level(LLAMA3),
                            [("<|begin_of_text|>", True, False), ("<|end_of_text|>", True, False),
                             ("<|reserved_special_token_0|>", True, False)], True, False),
        "qwen2": tokenizer(merges, {"type": "NFC"}, split_then_byte_level(QWEN2),
                           [("<|endoftext|>", True, False), ("<|im_start|>", True, False),
                            ("<|im_end|>", True, False)], False, True),
    }
    for name, t in files.items():
        with open(os.path.join(out, f"{name}.tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(t, f, ensure_ascii=False, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
