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
import { ChatsftError, isChatsftError } from '../errors.js';
import { checkGgufHeader } from './gguf-header.js';
import { readConversations, type Conversation } from '../data/conversations.js';
import { dataReporter, dataSummary, totalDropped, type DataReport } from '../data/report.js';
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
  /** What happened to each line of the data (the report every command gives). */
  data_report: DataReport;
  seconds: number;
}

interface GgufChat {
  template: ChatTemplate;
  vars: TemplateVars;
}

async function readChat(file: string): Promise<GgufChat> {
  let metadata: Record<string, unknown>;
  // The GGUF reader returns partial metadata from a truncated file: check the lengths first.
  try {
    checkGgufHeader(file);
  } catch (e) {
    if (isChatsftError(e)) throw e;
    throw new ChatsftError('FILE_CORRUPT', `not a readable GGUF file: ${(e as Error).message}`, file);
  }
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
  const rep = dataReporter(o.data);
  for await (const parsed of readConversations(o.data)) {
    rep.seen(parsed.line);
    if (parsed.ok === 'blank') continue;
    if (parsed.ok === false) {
      rep.drop(parsed.line, parsed.reason ?? 'invalid_data', parsed.issue.field, parsed.issue.message);
      continue;
    }
    const msgs = parsed.conversation.messages;
    const last = msgs[msgs.length - 1];
    if (last?.role !== 'assistant' || msgs.length < 2) {
      rep.drop(
        parsed.line,
        'no_final_assistant',
        'messages',
        'does not end with an assistant turn after a prompt; nothing to compare a generation with',
      );
      continue;
    }
    const conv: Conversation = { ...parsed.conversation, messages: msgs.slice(0, -1) };
    try {
      prompts.push({
        line: parsed.line,
        text: renderChat(chat.template, conv, { vars: chat.vars, addGenerationPrompt: true }),
        reference: typeof last.content === 'string' ? last.content : '',
      });
      rep.use();
    } catch (e) {
      rep.drop(parsed.line, 'template_error', 'messages', (e as Error).message);
      continue;
    }
    if (o.limit !== undefined && prompts.length >= o.limit) break;
  }
  const skipped = totalDropped(rep.report);
  if (prompts.length === 0) throw new ChatsftError('DATA_INVALID', `nothing to evaluate: ${dataSummary(rep.report, 'skipped')}`);

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
      rows.map((r) => ({
        tokens: r.tokens,
        stoppedBy: r.stoppedBy,
        hitMaxNewTokens: r.hitMaxNewTokens,
        referenceTokens: r.referenceTokens,
      })),
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
        data_report: rep.report,
        seconds: (performance.now() - started) / 1000,
      },
      rows,
    };
  } finally {
    await runner.close();
  }
}
