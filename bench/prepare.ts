/**
 * bench/prepare: prepare throughput (tokens/s) on a generated corpus of
 * ≥ 20 MB, against the raw `encodeBatch` throughput of the same tokenizer on
 * the same rendered conversations, and their ratio.
 *
 *   npm run build && node dist/bench/prepare.js [--mb 20] [--model mistral-chatml,qwen3]
 *
 * Both default setups are measured: OpenHermes-Mistral (ChatML, rendered
 * natively with its spans, one render per example) and Qwen3 (its own Jinja
 * template, which transforms content: spans from prefix renders, two
 * renders per assistant turn plus the full one).
 */
import { mkdtempSync, writeFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFixture, cleanupTemp, type FixtureName } from '../test/helpers/fixtures.js';
import { loadModelFolder } from '../src/model/folder.js';
import { setupTokenizer } from '../src/tokenize/setup.js';
import { processFile } from '../src/prepare/prepare.js';
import { renderChat } from '../src/template/render.js';
import type { Conversation } from '../src/data/conversations.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

const WORDS =
  'the of and to a in is it that for on was with as at by be this from or have an are not but what all were when we there can your which said if do will each about how up out them then she many some so these would other into has more her two like him see time could no make than first been its who now people my made over did down only way find use may water long little very after words called just where most know'.split(
    ' ',
  );

function sentence(r: () => number, n: number): string {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(WORDS[Math.floor(r() * WORDS.length)] as string);
  const s = out.join(' ');
  return s.charAt(0).toUpperCase() + s.slice(1) + '.';
}

function corpus(targetBytes: number): { file: string; conversations: Conversation[] } {
  let seed = 12345;
  const r = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296;
  const conversations: Conversation[] = [];
  const lines: string[] = [];
  let bytes = 0;
  while (bytes < targetBytes) {
    const messages: Conversation['messages'] = [];
    if (r() < 0.5) messages.push({ role: 'system', content: sentence(r, 8) });
    const turns = 1 + Math.floor(r() * 3);
    for (let t = 0; t < turns; t++) {
      messages.push({ role: 'user', content: sentence(r, 5 + Math.floor(r() * 30)) });
      messages.push({
        role: 'assistant',
        content: Array.from({ length: 1 + Math.floor(r() * 6) }, () => sentence(r, 5 + Math.floor(r() * 25))).join(' '),
      });
    }
    const conv = { messages };
    const line = JSON.stringify(conv);
    conversations.push(conv);
    lines.push(line);
    bytes += line.length + 1;
  }
  const dir = mkdtempSync(join(tmpdir(), 'chatsft-bench-'));
  const file = join(dir, 'corpus.jsonl');
  writeFileSync(file, lines.join('\n') + '\n');
  return { file, conversations };
}

async function main(): Promise<void> {
  const mb = Number(arg('mb', '20'));
  const { file, conversations } = corpus(mb * 1e6);
  for (const fixture of arg('model', 'mistral-chatml,qwen3').split(',') as FixtureName[]) await measure(fixture, file, conversations);
  rmSync(join(file, '..'), { recursive: true, force: true });
  cleanupTemp();
}

async function measure(fixture: FixtureName, file: string, conversations: Conversation[]): Promise<void> {
  const setup = setupTokenizer(loadModelFolder(buildFixture(fixture)));
  console.log(`corpus: ${conversations.length} conversations, ${(statSync(file).size / 1e6).toFixed(1)} MB, tokenizer ${fixture}`);

  // chatsft prepare path: stream, render with spans, tokenize, label, check, pack nothing.
  let t0 = performance.now();
  let rows = 0;
  const stats = await processFile(setup, file, {}, (r) => {
    rows += r.length;
  });
  const prepSeconds = (performance.now() - t0) / 1000;
  const prepRate = stats.tokens / prepSeconds;
  console.log(`prepare:      ${stats.tokens} tokens in ${prepSeconds.toFixed(2)} s = ${Math.round(prepRate)} tokens/s (${rows} rows)`);

  // Raw encodeBatch on the same rendered texts (rendering not timed), same chunk size.
  const texts = conversations.map((c) => renderChat(setup.template, c, { vars: setup.vars }));
  t0 = performance.now();
  let tokens = 0;
  for (let i = 0; i < texts.length; i += 256) {
    const encs = await setup.tokenizer.encodeBatch(texts.slice(i, i + 256), { addSpecialTokens: false });
    for (const e of encs) tokens += e.getIds().length;
  }
  const rawSeconds = (performance.now() - t0) / 1000;
  const rawRate = tokens / rawSeconds;
  console.log(`encodeBatch:  ${tokens} tokens in ${rawSeconds.toFixed(2)} s = ${Math.round(rawRate)} tokens/s`);
  console.log(
    `ratio prepare / encodeBatch = ${(prepRate / rawRate).toFixed(3)}  (${fixture}, template ${setup.template.nativeChatml ? 'native ChatML, spans while rendering' : 'prefix renders per assistant turn'})`,
  );
}

await main();
