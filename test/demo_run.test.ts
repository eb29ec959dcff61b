/**
 * The demo at reduced size through the real CLI (about 40 s on 2 cores):
 * legacy labels supervise no EOT and stop less often than chatsft's; the
 * kept folders are complete. Plus the legacy label rule on its own.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { collate, hfLmCollatorLabels } from '../src/batch/collate.js';
import type { Row } from '../src/batch/types.js';
import { legacyMaskRows, verdict, type DemoRun } from '../src/demo/run.js';
import type { TokenizerSetup } from '../src/tokenize/setup.js';
import { REPO_ROOT } from './helpers/fixtures.js';

const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
const root = mkdtempSync(join(tmpdir(), 'chatsft-demo-run-'));
after(() => rmSync(root, { recursive: true, force: true }));

test('legacy labels: every position whose input id is the pad id loses its label, as the HF LM collator does', () => {
  const EOT = 9;
  const rows: Row[] = [
    { inputIds: [1, 2, 3, 9, 4, 5, 9], labels: [-100, -100, 3, 9, -100, 5, 9] },
    { inputIds: [9, 7, 9], labels: [9, 7, 9] },
  ];
  const setup = { padId: EOT, paddingSide: 'left' } as unknown as TokenizerSetup;
  const masked = legacyMaskRows(rows, setup);
  assert.deepEqual(masked[0]!.labels, [-100, -100, 3, -100, -100, 5, -100]);
  assert.deepEqual(masked[1]!.labels, [9, 7, -100]); // position 0 is never a target; kept as given
  assert.deepEqual(masked[0]!.inputIds, rows[0]!.inputIds);
  // Same as the collator rule on a padded batch, where padding is -100 anyway.
  const batch = collate(rows, { padId: EOT, paddingSide: 'left' });
  const hf = hfLmCollatorLabels(batch, EOT, 'labels');
  const again = collate(masked, { padId: EOT, paddingSide: 'left' });
  assert.deepEqual(Array.from(again.labels), Array.from(hf));
  // With a real pad id nothing changes.
  assert.deepEqual(legacyMaskRows(rows, { padId: 0, paddingSide: 'right' } as unknown as TokenizerSetup)[0]!.labels, rows[0]!.labels);
});

test('the verdict is computed from the runs', () => {
  const run = (name: string, eot: number, stop: number): DemoRun => ({
    name,
    pipeline: name === 'legacy' ? 'legacy' : 'chatsft',
    supervised_eot: eot,
    stop_rate: stop,
    mean_new_tokens: 10,
    p95_new_tokens: 12,
    final_loss: 1,
    eval_loss: 1,
    seconds: 1,
    eval_seconds: 1,
    runaways: { total: 0, new_turn_header: 0, inside_text: 0 },
    task: 'A',
    model_dir: null,
    stop_rate_curve: [],
    stop_rate_warning: null,
  });
  const lines = verdict([run('legacy', 0, 0.02), run('chatsft', 120, 0.97)]);
  assert.equal(lines.length, 2);
  assert.match(lines[0]!, /legacy supervised 0 .* stopped on 2%/);
  assert.match(lines[1]!, /chatsft supervised 120 and stopped on 97%/);
});

test('chatsft demo --quick: legacy supervises no EOT and stops less often than chatsft', () => {
  const out = join(root, 'demo');
  const r = spawnSync(process.execPath, [CLI, 'demo', '--quick', '--json', '--out', out], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
  });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as {
    runs: { name: string; supervised_eot: number; stop_rate: number; mean_new_tokens: number; final_loss: number; seconds: number }[];
  };
  assert.deepEqual(
    report.runs.map((x) => x.name),
    ['legacy', 'chatsft'],
  );
  const [legacy, chatsft] = report.runs as [(typeof report.runs)[0], (typeof report.runs)[0]];
  for (const run of report.runs) {
    for (const key of ['supervised_eot', 'stop_rate', 'mean_new_tokens', 'final_loss', 'seconds'] as const)
      assert.equal(typeof run[key], 'number', key);
  }
  assert.equal(legacy.supervised_eot, 0);
  assert.ok(chatsft.supervised_eot > 0);
  assert.ok(legacy.stop_rate < chatsft.stop_rate, `legacy ${legacy.stop_rate} vs chatsft ${chatsft.stop_rate}`);
  assert.ok(legacy.mean_new_tokens > chatsft.mean_new_tokens);
  assert.match(r.stderr, /\[2\/3\] legacy: training/);

  for (const name of ['legacy', 'chatsft']) {
    for (const f of ['model.safetensors', 'config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
      assert.ok(existsSync(join(out, name, f)), `${name}/${f}`);
    }
    // Both folders name <|im_end|> as a stop id: the difference is in the weights, not the runtime.
    const gen = JSON.parse(readFileSync(join(out, name, 'generation_config.json'), 'utf8')) as { eos_token_id: number[] };
    const tok = JSON.parse(readFileSync(join(out, name, 'tokenizer.json'), 'utf8')) as { added_tokens: { id: number; content: string }[] };
    const imEnd = tok.added_tokens.find((t) => t.content === '<|im_end|>')!.id;
    assert.ok(gen.eos_token_id.includes(imEnd), `${name} stops on <|im_end|>`);
  }
  const legacyTc = JSON.parse(readFileSync(join(out, 'legacy', 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(legacyTc['pad_token'], '<|im_end|>');
  assert.equal(legacyTc['padding_side'], 'left');
  assert.ok(readFileSync(join(out, 'heldout.jsonl'), 'utf8').trim().split('\n').length === 24);
  const saved = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as { runs: { name: string; stop_rate: number }[] };
  assert.deepEqual(
    saved.runs.map((x) => x.stop_rate),
    report.runs.map((x) => x.stop_rate),
  );
});
