/**
 * Shared by the reliability tests: run the real CLI (sync, or async with a
 * signal sent at a chosen moment), hash a tree to prove user data is
 * byte-for-byte intact, list leftover temps, and a tiny model + data.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { REPO_ROOT } from '../helpers/fixtures.js';
import { generateDemoData, renderChatml, toJsonl } from '../../src/demo/data.js';
import { writeDemoModelFolder } from '../../src/demo/tokenizer.js';

export const CLI = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

/** A pid above Linux's largest pid_max (2^22): never a live process. */
export const DEAD_PID = 4_206_649;

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function cli(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', ...env },
    timeout: timeoutMs,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Run the CLI and send `signal` once `when(stderr)` is true (checked on
 * every stderr chunk and every 20 ms); resolves when the process exits.
 */
export function cliWithSignal(
  args: string[],
  signal: NodeJS.Signals,
  when: (stderr: string) => boolean,
  opts: { env?: Record<string, string>; timeoutMs?: number; onSpawn?: (pid: number) => void } = {},
): Promise<CliResult & { sent: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, NO_COLOR: '1', ...(opts.env ?? {}) } });
    opts.onSpawn?.(child.pid as number);
    let stdout = '';
    let stderr = '';
    let sent = false;
    const poll = (): void => {
      if (!sent && child.exitCode === null && when(stderr)) {
        sent = true;
        child.kill(signal);
      }
    };
    const timer = setInterval(poll, 20);
    const guard = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      poll();
    });
    child.on('close', (code, sig) => {
      clearInterval(timer);
      clearTimeout(guard);
      resolve({ code, signal: sig, stdout, stderr, sent });
    });
  });
}

/** The one-clear-error contract: exit code, `error[CODE]`, the path or flag named, no stack trace, no INTERNAL. */
export function assertUserError(r: CliResult, code: string, names: RegExp | string, exit = 2): void {
  const all = `stdout: ${r.stdout}\nstderr: ${r.stderr}`;
  assert.equal(r.code, exit, all);
  assert.match(r.stderr, new RegExp(`error\\[${code}\\]`), all);
  if (typeof names === 'string') assert.ok(r.stderr.includes(names), `the message names ${names}\n${all}`);
  else assert.match(r.stderr, names, all);
  assert.doesNotMatch(r.stderr, /INTERNAL|\n\s+at .+:\d+:\d+\)?/, `no INTERNAL error, no stack trace\n${all}`);
  assert.equal(r.stderr.match(/error\[/g)?.length, 1, `one error line\n${all}`);
}

/** sha256 of every file (path → hash) under `p`, or of the file itself. */
export function hashTree(p: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (q: string, rel: string): void => {
    const st = fs.lstatSync(q);
    if (st.isDirectory()) for (const n of fs.readdirSync(q).sort()) walk(path.join(q, n), rel ? `${rel}/${n}` : n);
    else out[rel || '.'] = createHash('sha256').update(fs.readFileSync(q)).digest('hex');
  };
  walk(p, '');
  return out;
}

/** Names in `dir` (recursively) that look like chatsft temps: `.partial-PID`, `.tmp-PID…`, `.old-PID`. */
export function leftovers(dir: string): string[] {
  const found: string[] = [];
  const walk = (q: string): void => {
    for (const e of fs.readdirSync(q, { withFileTypes: true })) {
      if (/\.(partial|tmp|old)-\d+/.test(e.name)) found.push(path.join(q, e.name));
      if (e.isDirectory()) walk(path.join(q, e.name));
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return found;
}

export const TINY_CONFIG = {
  model_type: 'llama',
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  max_position_embeddings: 256,
};

/** A demo tokenizer + tiny random-init llama config, and a small training file, under `root`. */
export async function tinySetup(root: string, examples = 24): Promise<{ model: string; data: string; lines: string[] }> {
  const { train } = generateDemoData({ seed: 3, train: examples, heldout: 2, task: 'A' });
  const model = path.join(root, 'model');
  const info = await writeDemoModelFolder(model, train.map(renderChatml), { vocabSize: 300 });
  fs.writeFileSync(path.join(model, 'config.json'), JSON.stringify({ ...TINY_CONFIG, vocab_size: info.vocabSize }));
  const data = path.join(root, 'train.jsonl');
  fs.writeFileSync(data, toJsonl(train));
  return { model, data, lines: toJsonl(train).trim().split('\n') };
}

/** Whether `mount -t tmpfs` works here (root in a privileged container); tests that need it skip with a message otherwise. */
export function canMountTmpfs(dir: string): boolean {
  fs.mkdirSync(dir, { recursive: true });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) return false;
  spawnSync('umount', [dir]);
  return true;
}

export function mountTmpfs(dir: string, options: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

export function umount(dir: string): void {
  spawnSync('umount', [dir]);
}
