// Writes expected.json: the ids Hugging Face's tokenizers (the Rust library, through its Node
// binding: npm package "tokenizers" 0.23.2) gives for each text of texts.json with each
// *.tokenizer.json here, encoded without special tokens (add_special_tokens = false), as
// `ptq` encodes calibration and evaluation text. Run at development time; the output is committed,
// the package is not:
//   cd /tmp/x && npm install tokenizers@0.23.2 && NODE_PATH=/tmp/x/node_modules node expected_ids.js DIR
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');

async function main() {
  const dir = process.argv[2];
  const texts = JSON.parse(fs.readFileSync(path.join(dir, 'texts.json'), 'utf8'));
  const out = { generator: 'npm tokenizers@0.23.2', add_special_tokens: false, cases: [] };
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.tokenizer.json')).sort()) {
    const tokenizer = Tokenizer.fromFile(path.join(dir, file));
    for (let i = 0; i < texts.length; ++i) {
      const encoding = await tokenizer.encode(texts[i], null, { addSpecialTokens: false });
      out.cases.push({ tokenizer: file, text: i, ids: encoding.getIds() });
    }
  }
  fs.writeFileSync(path.join(dir, 'expected.json'), JSON.stringify(out) + '\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
