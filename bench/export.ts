/**
 * Streaming export: peak RSS of `chatsft export --format gguf|hf` on a
 * generated multi-GB bf16 checkpoint, against its largest tensor.
 *
 *   node dist/bench/export.js [--shape qwen2.5-1.5b] [--dir /tmp/scale-ckpt] [--keep]
 *
 * Each export runs as its own process under /usr/bin/time -v (peak RSS);
 * outputs are deleted afterwards, the checkpoint too unless --keep.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeCheckpoint, type ShapeName } from './checkpoints.js';
import { openWeights, numelOf } from '../src/hf/safetensors.js';

const args = process.argv.slice(2);
const arg = (n: string, d: string): string => {
  const i = args.indexOf(`--${n}`);
  return i >= 0 ? args[i + 1]! : d;
};
const shape = arg('shape', 'qwen2.5-1.5b') as ShapeName;
const root = arg('dir', '/tmp/scale-ckpt');
const src = path.join(root, `${shape}-export-src`);
const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli', 'main.js');

if (!fs.existsSync(path.join(src, 'model.safetensors.index.json'))) {
  const info = makeCheckpoint(shape, src, { shardBytes: 1e9 });
  console.error(`generated ${shape}: ${(info.bytes / 1e9).toFixed(2)} GB bf16, ${info.shards} shards`);
}
const index = openWeights(src);
const largest = Math.max(...[...index.entries.values()].map((e) => numelOf(e.shape)));
console.log(
  `${shape}: ${(index.totalBytes / 1e9).toFixed(2)} GB bf16 in ${index.files.length} shards; largest tensor ${(largest / 1e6).toFixed(1)} M values = ${((largest * 4) / 2 ** 20).toFixed(0)} MiB as f32`,
);
console.log('| export | seconds | output | peak RSS | peak RSS − largest tensor (f32) |');
console.log('|---|---|---|---|---|');
for (const [format, dtype, out] of [
  ['gguf', 'f16', path.join(root, 'bench-export.gguf')],
  ['hf', 'bf16', path.join(root, 'bench-export-hf')],
  ['hf', 'f32', path.join(root, 'bench-export-hf32')],
] as const) {
  fs.rmSync(out, { recursive: true, force: true });
  const t = performance.now();
  const r = spawnSync(
    '/usr/bin/time',
    ['-v', process.execPath, cli, 'export', '--model', src, '--format', format, '--dtype', dtype, '--out', out, '--json'],
    { encoding: 'utf8' },
  );
  const seconds = (performance.now() - t) / 1000;
  const rssKb = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)?.[1] ?? NaN);
  if (r.status !== 0) {
    console.log(
      `| ${format} ${dtype} | failed (exit ${r.status}) | ${r.stderr.split('\n').filter((l) => l.startsWith('error'))[0] ?? ''} | | |`,
    );
    continue;
  }
  const bytes = fs.statSync(out).isDirectory()
    ? fs.readdirSync(out).reduce((n, f) => n + (fs.statSync(path.join(out, f)).isFile() ? fs.statSync(path.join(out, f)).size : 0), 0)
    : fs.statSync(out).size;
  const rss = rssKb * 1024;
  console.log(
    `| ${format} ${dtype} | ${seconds.toFixed(1)} | ${(bytes / 1e9).toFixed(2)} GB | ${(rss / 2 ** 20).toFixed(0)} MiB | ${((rss - largest * 4) / 2 ** 20).toFixed(0)} MiB |`,
  );
  fs.rmSync(out, { recursive: true, force: true });
}
if (!args.includes('--keep')) fs.rmSync(src, { recursive: true, force: true });
