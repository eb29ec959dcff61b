/**
 * `chatsft doctor` end to end: the real CLI on generated fixture folders and
 * data, checking the JSON shape of SPEC §7, the text report and exit codes
 * (1 on error findings, 0 when clean, 2 on bad usage).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildFixture, cleanupTemp, REPO_ROOT, tempRoot, writeJsonl } from './helpers/fixtures.js';

after(() => cleanupTemp());

const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

function doctor(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'doctor', ...args], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface JsonFinding {
  code: string;
  severity: string;
  message: string;
  evidence: Record<string, unknown>;
  hint: string;
}
interface JsonReport {
  findings: JsonFinding[];
  summary: {
    errors: number;
    warnings: number;
    infos: number;
    eot_supervised: Record<string, { trained_turns: number; supervised_eot: number }>;
  };
}

function parse(stdout: string): JsonReport {
  const r = JSON.parse(stdout) as JsonReport;
  for (const f of r.findings) {
    assert.deepEqual(Object.keys(f).sort(), ['code', 'evidence', 'hint', 'message', 'severity']);
    assert.ok(['error', 'warning', 'info'].includes(f.severity));
    if (f.severity !== 'info') assert.ok(f.hint.length > 0, `${f.code} has a hint`);
  }
  return r;
}

const DATA = [
  {
    messages: [
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
    ],
  },
  {
    conversations: [
      { from: 'human', value: 'Two plus two?' },
      { from: 'gpt', value: 'Four.' },
      { from: 'human', value: 'Thanks' },
      { from: 'gpt', value: 'Any time.' },
    ],
  },
];

describe('chatsft doctor CLI', () => {
  test('OpenHermes-Mistral with --pad eos --simulate hf-lm-collator: 0 of N EOTs, exit 1', () => {
    const model = buildFixture('mistral-chatml');
    const data = writeJsonl('cli-hermes.jsonl', DATA);
    const r = doctor(['--model', model, '--data', data, '--pad', 'eos', '--simulate', 'hf-lm-collator,chatsft', '--json']);
    assert.equal(r.code, 1, r.stderr);
    const report = parse(r.stdout);
    const lost = report.findings.find((f) => f.code === 'EOT_UNSUPERVISED');
    assert.ok(lost);
    assert.match(lost.message, /hf-lm-collator: 0 of 3 trained assistant turns keep their EOT/);
    assert.deepEqual(report.summary.eot_supervised, {
      'hf-lm-collator': { trained_turns: 3, supervised_eot: 0 },
      chatsft: { trained_turns: 3, supervised_eot: 3 },
    });
    assert.equal(report.findings.find((f) => f.code === 'PAD_IS_EOS')?.severity, 'error');
    assert.equal(report.summary.errors, report.findings.filter((f) => f.severity === 'error').length);
  });

  test('a clean setup exits 0 with no errors', () => {
    const model = buildFixture('mistral-chatml', { config: { pad_token: '<unk>', padding_side: 'right' } });
    const r = doctor(['--model', model, '--data', writeJsonl('cli-clean.jsonl', DATA), '--simulate', 'hf-lm-collator', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const report = parse(r.stdout);
    assert.equal(report.summary.errors, 0);
    assert.deepEqual(report.summary.eot_supervised['hf-lm-collator'], { trained_turns: 3, supervised_eot: 3 });
  });

  test('--config YAML: settings come from the file, flags override it', () => {
    const model = buildFixture('mistral');
    const cfg = join(tempRoot(), 'doctor.yaml');
    writeFileSync(cfg, `model: ${model}\ntemplate: chatml\npad: eos\npadding_side: left\nlora:\n  train_embeddings: none\n`);
    const report = parse(doctor(['--config', cfg, '--json']).stdout);
    const got = new Set(report.findings.map((f) => f.code));
    for (const code of ['PAD_IS_EOS', 'PADDING_LEFT', 'NEW_TOKENS_UNTRAINED', 'STOP_IDS_MISSING_EOT']) assert.ok(got.has(code), code);
    const overridden = parse(doctor(['--config', cfg, '--lora-train-embeddings', 'new_tokens', '--json']).stdout);
    assert.ok(!overridden.findings.some((f) => f.code === 'NEW_TOKENS_UNTRAINED'));
  });

  test('the text report groups by severity with evidence and fixes, uncoloured off a TTY', () => {
    const r = doctor(['--model', buildFixture('mistral-chatml'), '--pad', 'eos', '--simulate', 'hf-lm-collator']);
    assert.equal(r.code, 1);
    assert.ok(!r.stdout.includes('\x1b['), 'no ANSI codes when stdout is not a TTY');
    const errors = r.stdout.indexOf('Errors (');
    const warnings = r.stdout.indexOf('Warnings (');
    const info = r.stdout.indexOf('Info (');
    assert.ok(errors >= 0 && errors < warnings && warnings < info, r.stdout);
    assert.match(r.stdout, /✖ EOT_UNSUPERVISED {2}hf-lm-collator: 0 of 6 /);
    assert.match(r.stdout, /fix: --pad auto/);
    assert.match(r.stdout, /2 errors, \d+ warnings?, \d+ info — fix the errors before training/);
  });

  test('bad usage exits 2', () => {
    const model = buildFixture('mistral-chatml');
    const bad = doctor(['--model', model, '--simulate', 'trl']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /error\[USAGE\] --simulate: unknown collator 'trl'/);
    assert.equal(doctor([]).code, 2);
    assert.equal(doctor(['--model', model, '--max-length', 'many']).code, 2);
  });
});
