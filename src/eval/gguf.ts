/**
 * Stop-rate evaluation of any GGUF model through llama.cpp (node-llama-cpp),
 * so users can measure the models they deploy, 7B and up, without our
 * engine. Everything comes from the GGUF itself: the chat template
 * (`tokenizer.chat_template`, rendered with our Jinja), llama.cpp's own
 * tokenizer, and llama.cpp's own end-of-generation set as stop ids — i.e.
 * exactly what a deployed runtime would do. Loss needs logits over the
 * conversation and is not computed on this path (null).
 */
import { existsSync } from 'node:fs';
import { gguf } from '@huggingface/gguf';
import { ChatsftError } from '../errors.js';
import { readConversations, type Conversation } from '../data/conversations.js';
import { compileTemplate, renderChat, type ChatTemplate, type TemplateVars } from '../template/render.js';
import { openLlamaCpp, type LlamaCppRunner } from '../export/llamacpp.js';
import { turnHeaderIds, turnHeaderText } from '../template/turn_header.js';
import { classifyEnding, stopRateMetrics, type Ending, type StopRateMetrics } from './metrics.js';

export interface GgufEvalOptions {
  gguf: string;
  data: string;
  maxNewTokens: number;
  limit?: number;
  threads?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface GgufEvalRow {
  line: number;
  promptTokens: number;
  referenceTokens: number;
  tokens: number[];
  text: string;
  stoppedBy: number | null;
  hitMaxNewTokens: boolean;
  ending: Ending;
}

export interface GgufEvalReport extends StopRateMetrics {
  engine: 'llama.cpp';
  model: string;
  loss: null;
  /** llama.cpp's end-of-generation ids among the vocabulary's special tokens. */
  stop_ids: number[];
  turn_headers: number[][];
  skipped: number;
  seconds: number;
}

interface GgufChat {
  template: ChatTemplate;
  vars: TemplateVars;
}

async function readChat(file: string): Promise<GgufChat> {
  let metadata: Record<string, unknown>;
  try {
    metadata = (await gguf(file, { allowLocalFile: true })).metadata as unknown as Record<string, unknown>;
  } catch (e) {
    throw new ChatsftError('FILE_CORRUPT', `not a readable GGUF file: ${(e as Error).message}`, file);
  }
  const source = metadata['tokenizer.chat_template'];
  if (typeof source !== 'string') {
    throw new ChatsftError('TEMPLATE_MISSING', 'the GGUF has no tokenizer.chat_template; prompts cannot be rendered', file);
  }
  const tokens = metadata['tokenizer.ggml.tokens'] as string[] | undefined;
  const tokenOf = (key: string): string | undefined => {
    const id = metadata[key];
    return typeof id === 'number' && tokens ? tokens[id] : undefined;
  };
  const bos = tokenOf('tokenizer.ggml.bos_token_id');
  const eos = tokenOf('tokenizer.ggml.eos_token_id');
  return { template: compileTemplate(source, 'model'), vars: { bos_token: bos ?? '', eos_token: eos ?? '' } };
}

/** The ids that open a new turn (turn_header.ts), tokenized by llama.cpp. */
function turnHeader(chat: GgufChat, runner: LlamaCppRunner): number[][] {
  const text = turnHeaderText(chat.template, chat.vars);
  return turnHeaderIds(text === null ? [] : runner.tokenize(text));
}

export async function evaluateGguf(o: GgufEvalOptions): Promise<{ report: GgufEvalReport; rows: GgufEvalRow[] }> {
  if (!existsSync(o.gguf)) throw new ChatsftError('FILE_MISSING', 'GGUF file not found', o.gguf);
  if (!existsSync(o.data)) throw new ChatsftError('FILE_MISSING', 'data file not found', o.data);
  const started = performance.now();
  const chat = await readChat(o.gguf);

  // Prompts: everything before the last assistant message + the generation prompt.
  const prompts: Array<{ line: number; text: string; reference: string }> = [];
  let skipped = 0;
  for await (const parsed of readConversations(o.data)) {
    if (parsed.ok === 'blank') continue;
    const msgs = parsed.ok === true ? parsed.conversation.messages : [];
    const last = msgs[msgs.length - 1];
    if (parsed.ok !== true || last?.role !== 'assistant' || msgs.length < 2) {
      skipped++;
      continue;
    }
    const conv: Conversation = { ...parsed.conversation, messages: msgs.slice(0, -1) };
    try {
      prompts.push({ line: parsed.line, text: renderChat(chat.template, conv, { vars: chat.vars, addGenerationPrompt: true }), reference: last.content ?? '' });
    } catch {
      skipped++;
      continue;
    }
    if (o.limit !== undefined && prompts.length >= o.limit) break;
  }
  if (prompts.length === 0) throw new ChatsftError('DATA_INVALID', 'no conversation ends with an assistant turn: nothing to evaluate', o.data);

  // One context sized for the longest prompt; the tokenizer is needed to know it.
  const probe = await openLlamaCpp(o.gguf, 64, o.threads !== undefined ? { threads: o.threads } : {});
  const ids = prompts.map((p) => probe.tokenize(p.text));
  const refs = prompts.map((p) => probe.tokenize(p.reference).length);
  await probe.close();
  const need = Math.max(...ids.map((x) => x.length)) + o.maxNewTokens + 1;
  const runner = await openLlamaCpp(o.gguf, need, o.threads !== undefined ? { threads: o.threads } : {});
  try {
    const headers = turnHeader(chat, runner);
    const rows: GgufEvalRow[] = [];
    for (let i = 0; i < prompts.length; i++) {
      const r = await runner.generate(ids[i] as number[], o.maxNewTokens);
      const outcome = { ...r, referenceTokens: refs[i] as number };
      rows.push({
        line: (prompts[i] as { line: number }).line,
        promptTokens: (ids[i] as number[]).length,
        referenceTokens: refs[i] as number,
        tokens: r.tokens,
        text: runner.detokenize(r.tokens),
        stoppedBy: r.stoppedBy,
        hitMaxNewTokens: r.hitMaxNewTokens,
        ending: classifyEnding(outcome, headers),
      });
      o.onProgress?.(i + 1, prompts.length);
    }
    const m = stopRateMetrics(
      rows.map((r) => ({ tokens: r.tokens, stoppedBy: r.stoppedBy, hitMaxNewTokens: r.hitMaxNewTokens, referenceTokens: r.referenceTokens })),
      { maxNewTokens: o.maxNewTokens, turnHeaders: headers },
    );
    const stopIds = [runner.eosId, runner.eotId].filter((x): x is number => x !== null);
    return {
      report: {
        engine: 'llama.cpp',
        model: o.gguf,
        ...m,
        loss: null,
        stop_ids: [...new Set(stopIds)].sort((a, b) => a - b),
        turn_headers: headers,
        skipped,
        seconds: (performance.now() - started) / 1000,
      },
      rows,
    };
  } finally {
    await runner.close();
  }
}
