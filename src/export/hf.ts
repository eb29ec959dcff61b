/**
 * Model folder → a Hugging Face folder other runtimes load as is
 * (transformers, vLLM, TGI, llama.cpp's converter), with the EOT among the
 * stop ids and the pad token that training actually used.
 *
 *   exportHf('runs/chatsft', 'out/hf', { eotToken: '<|im_end|>', padToken: '<|endoftext|>' })
 *
 * Everything is written into a temporary sibling folder that is swapped in
 * at the end (util/atomic `replaceOutputSync`), so a failed export never
 * leaves a half-written folder nor loses the one it replaces; the folder
 * carries `chatsft-export.json`, the mark `--overwrite` needs to replace it.
 */
import fs from 'node:fs';
import { checkOutput, replaceOutputSync, writeJsonAtomic as writeJson, type ReplaceOptions } from '../util/atomic.js';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { readLlamaConfig, toHfConfig } from '../hf/config.js';
import {
  DTYPE_BYTES,
  numelOf,
  openWeights,
  readF32,
  readRaw,
  u16View,
  writeSafetensorsStream,
  type WriteDtype,
} from '../hf/safetensors.js';
import { eosIdField, stopIdsFor } from '../hf/stop_ids.js';
import { configChatTemplate, readJson, tokenIds, tokenString, type Json } from '../hf/files.js';

export interface HfExportOptions {
  /** The token that closes assistant turns; added to generation_config's eos_token_id. */
  eotToken: string;
  /** Pad token used in training (must be in the vocabulary); default: tokenizer_config's. */
  padToken?: string | null;
  /** Chat template to ship; default: the source's. */
  chatTemplate?: string | null;
  /** Shard above this many bytes of tensor data (HF's default is 5 GB). */
  maxShardBytes?: number;
  /** Replace an existing output folder. */
  overwrite?: boolean;
  /** Tensor type of every weight; default f32 (the engine's). f16/bf16 halve the folder; torch_dtype says which. */
  dtype?: 'f32' | 'f16' | 'bf16';
  /** Lines for the user (temps of killed exports reclaimed). */
  onNote?: (line: string) => void;
}

export interface HfExportResult {
  dir: string;
  files: string[];
  shards: number;
  tensorBytes: number;
  eosTokenIds: number[];
  padTokenId: number | null;
  eotTokenId: number;
  bosTokenId: number | null;
  /** Source folder of the PEFT adapter copied to `<out>/adapter/`, or null. */
  adapterFrom: string | null;
}

const ADAPTER_FILES = ['adapter_config.json', 'adapter_model.safetensors'];

/** Written into every exported folder: chatsft replaces (--overwrite) only folders that carry it. */
export const EXPORT_MARKER = 'chatsft-export.json';

/** Why `dir` is not a folder chatsft exported (null when it is). */
export function notExportFolder(dir: string): string | null {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, EXPORT_MARKER), 'utf8')) as { generator?: unknown };
    if (m.generator === 'chatsft') return null;
  } catch {
    // no marker or unreadable
  }
  return `not a folder exported by chatsft (no ${EXPORT_MARKER})`;
}

/**
 * The PEFT adapter of a LoRA run: `adapter/` (where chatsft's trainer writes
 * it) or the folder itself. Both files are needed; one alone is not an adapter.
 */
export function findAdapter(srcDir: string): string | null {
  for (const dir of [path.join(srcDir, 'adapter'), srcDir]) {
    if (ADAPTER_FILES.every((f) => fs.existsSync(path.join(dir, f)))) return dir;
  }
  return null;
}

const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

/** Tokenizer files copied unchanged when present (tokenizer.json and tokenizer_config.json are rewritten). */
const TOKENIZER_EXTRAS = ['tokenizer.model', 'vocab.json', 'merges.txt', 'added_tokens.json'];

/** Greedy split of sorted tensor names into shards of at most `max` bytes (a bigger tensor gets its own shard). */
function planShards(sizes: [string, number][], max: number): [string, number][][] {
  const shards: [string, number][][] = [];
  let cur: [string, number][] = [];
  let bytes = 0;
  for (const e of sizes) {
    if (cur.length > 0 && bytes + e[1] > max) {
      shards.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(e);
    bytes += e[1];
  }
  if (cur.length > 0) shards.push(cur);
  return shards;
}

export function exportHf(srcDir: string, outDir: string, opts: HfExportOptions): HfExportResult {
  const maxShard = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(maxShard > 0)) throw new ChatsftError('USAGE', `maxShardBytes must be > 0 (got ${maxShard})`);
  const out = path.resolve(outDir);
  const replacing: ReplaceOptions = {
    kind: 'dir',
    overwrite: Boolean(opts.overwrite),
    notOwned: notExportFolder,
    protect: [srcDir],
    flag: '--out',
    ...(opts.onNote ? { onNote: opts.onNote } : {}),
  };
  // Refuse early, before reading weights.
  checkOutput(out, replacing);

  const cfg = readLlamaConfig(path.join(srcDir, 'config.json'));
  const tjFile = path.join(srcDir, 'tokenizer.json');
  const tcFile = path.join(srcDir, 'tokenizer_config.json');
  const tj = readJson(tjFile);
  const tc: Json = fs.existsSync(tcFile) ? readJson(tcFile) : {};
  const ids = tokenIds(tj);
  const idOf = (tok: string, what: string): number => {
    const id = ids.get(tok);
    if (id === undefined) throw new ChatsftError('EXPORT_ERROR', `${what} ${JSON.stringify(tok)} is not in the vocabulary`, tjFile);
    if (id >= cfg.vocabSize)
      throw new ChatsftError(
        'EXPORT_ERROR',
        `${what} ${JSON.stringify(tok)} has id ${id} but the model has ${cfg.vocabSize} embedding rows`,
        srcDir,
      );
    return id;
  };
  const eotId = idOf(opts.eotToken, 'EOT token');
  const padTok = opts.padToken !== undefined ? opts.padToken : tokenString(tc['pad_token']);
  const padId = padTok === null ? null : idOf(padTok, 'pad token');
  const eosTok = tokenString(tc['eos_token']);
  const srcGen = path.join(srcDir, 'generation_config.json');
  const gen: Json = fs.existsSync(srcGen) ? readJson(srcGen) : {};
  // Every id a runtime should stop on, under the one policy: the EOT the model
  // learned, the source generation_config's and config's eos ids, the tokenizer's eos.
  const policy = stopIdsFor({
    eotIds: [eotId],
    generationConfigEos: eosIdField(gen['eos_token_id']),
    configEos: cfg.eosTokenId,
    tokenizerEos: eosTok !== null ? idOf(eosTok, 'eos_token') : null,
  });
  // The EOT first: code that reads one eos from a list takes the first.
  const eosIds = [eotId, ...policy.filter((id) => id !== eotId)];
  const template = opts.chatTemplate !== undefined ? opts.chatTemplate : configChatTemplate(tc);

  // Streamed: each tensor is read, converted and written on its own (peak memory: the largest tensor).
  const index = openWeights(srcDir);
  const outType: WriteDtype = opts.dtype === 'f16' ? 'F16' : opts.dtype === 'bf16' ? 'BF16' : 'F32';
  const sizes: [string, number][] = [...index.entries.keys()]
    .sort()
    .map((n) => [n, numelOf(index.entries.get(n)!.shape) * DTYPE_BYTES[outType]]);
  const tensorBytes = sizes.reduce((a, [, b]) => a + b, 0);
  const read = (name: string): Float32Array | Uint16Array => {
    const e = index.entries.get(name)!;
    // Same 16-bit type in and out: the stored words are copied through unchanged.
    return e.dtype === outType && outType !== 'F32' ? u16View(readRaw(e)) : readF32(e);
  };

  return replaceOutputSync(
    out,
    (tmp) => {
      const files: string[] = [];
      const shards = planShards(sizes, maxShard);
      const weightMap: Record<string, string> = {};
      shards.forEach((shard, i) => {
        const name =
          shards.length === 1
            ? 'model.safetensors'
            : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
        const specs = shard.map(([n]) => ({ name: n, shape: index.entries.get(n)!.shape, dtype: outType }));
        // transformers refuses safetensors whose metadata `format` is not a known framework.
        writeSafetensorsStream(path.join(tmp, name), specs, (s) => read(s.name), { format: 'pt' });
        for (const [n] of shard) weightMap[n] = name;
        files.push(name);
      });
      if (shards.length > 1) {
        writeJson(path.join(tmp, 'model.safetensors.index.json'), { metadata: { total_size: tensorBytes }, weight_map: weightMap });
        files.push('model.safetensors.index.json');
      }

      const hfCfg = toHfConfig(cfg);
      hfCfg['eos_token_id'] = eosIds.length === 1 ? eosIds[0] : eosIds;
      hfCfg['pad_token_id'] = padId;
      hfCfg['torch_dtype'] = outType === 'F16' ? 'float16' : outType === 'BF16' ? 'bfloat16' : 'float32';
      writeJson(path.join(tmp, 'config.json'), hfCfg);
      Object.assign(gen, { eos_token_id: eosIds, pad_token_id: padId, bos_token_id: gen['bos_token_id'] ?? cfg.bosTokenId });
      writeJson(path.join(tmp, 'generation_config.json'), gen);
      files.push('config.json', 'generation_config.json');

      fs.copyFileSync(tjFile, path.join(tmp, 'tokenizer.json'));
      const newTc: Json = { ...tc, pad_token: padTok };
      if (template !== null) newTc['chat_template'] = template;
      writeJson(path.join(tmp, 'tokenizer_config.json'), newTc);
      files.push('tokenizer.json', 'tokenizer_config.json');
      const stm = path.join(srcDir, 'special_tokens_map.json');
      if (fs.existsSync(stm)) {
        writeJson(path.join(tmp, 'special_tokens_map.json'), { ...readJson(stm), pad_token: padTok });
        files.push('special_tokens_map.json');
      }
      // transformers ≥ 4.43 prefers chat_template.jinja over tokenizer_config's field; keep them equal.
      if (fs.existsSync(path.join(srcDir, 'chat_template.jinja')) && template !== null) {
        fs.writeFileSync(path.join(tmp, 'chat_template.jinja'), template);
        files.push('chat_template.jinja');
      }
      // The adapter goes to adapter/, never next to the merged weights: transformers
      // treats a folder with adapter_config.json as base model + adapter and would
      // apply the (already merged) LoRA a second time.
      const adapterFrom = findAdapter(srcDir);
      if (adapterFrom !== null) {
        fs.mkdirSync(path.join(tmp, 'adapter'));
        for (const f of ADAPTER_FILES) {
          fs.copyFileSync(path.join(adapterFrom, f), path.join(tmp, 'adapter', f));
          files.push(`adapter/${f}`);
        }
      }
      for (const f of TOKENIZER_EXTRAS) {
        if (fs.existsSync(path.join(srcDir, f))) {
          fs.copyFileSync(path.join(srcDir, f), path.join(tmp, f));
          files.push(f);
        }
      }

      writeJson(path.join(tmp, EXPORT_MARKER), {
        generator: 'chatsft',
        kind: 'export-hf',
        source: path.resolve(srcDir),
        created: new Date().toISOString(),
      });
      const bos = gen['bos_token_id'];
      return {
        dir: out,
        files,
        shards: shards.length,
        tensorBytes,
        eosTokenIds: eosIds,
        padTokenId: padId,
        eotTokenId: eotId,
        bosTokenId: typeof bos === 'number' ? bos : null,
        adapterFrom,
      };
    },
    replacing,
  );
}
