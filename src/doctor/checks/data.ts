/**
 * Data checks over `--data` (streamed in chunks) or the built-in sample:
 * invalid lines, special-token text in content, examples with nothing
 * supervised, and EOTs past max_length with what each over-length policy
 * would do. Every encoded example also goes to the collator simulator.
 */
import { isChatsftError } from '../../errors.js';
import { readConversations, type Conversation } from '../../data/conversations.js';
import { TEMPLATE_REASONS } from '../../labels/types.js';
import { messageStrings } from '../../template/spans.js';
import { certainlyOver, overLengthMessage, sizeLimit } from '../../data/limits.js';
import { dataReporter, type DataReport, type DataReporter } from '../../data/report.js';
import { createEncoder, type EncodeResult, type EncodedExample, type Encoder } from '../../labels/encode.js';
import { specialMatcher } from '../../tokenize/special.js';
import { SAMPLE } from '../sample.js';
import { firstFew, type DoctorContext, type Finding, type FindingCode } from '../types.js';
import type { Simulator } from './collator.js';

const CHUNK = 512;

type Item = { conversation: Conversation; line: number };

interface Stats {
  lines: number;
  conversations: number;
  examples: number;
  assistantTurns: number;
  trainedTurns: number;
  tokens: number;
  longest: number;
  invalid: Array<{ line: number; why: string }>;
  special: Array<{ line: number; where: string; token: string }>;
  specialCounts: Record<string, number>;
  untrainable: number[];
  template: Array<{ line: number; message: string }>;
  // Over-length accounting (only with max_length).
  overLength: number[];
  cutTurns: number;
  dropTurnsLost: number;
  truncTurnsRemoved: number;
  truncExamplesDropped: number;
}

function newStats(): Stats {
  return {
    lines: 0,
    conversations: 0,
    examples: 0,
    assistantTurns: 0,
    trainedTurns: 0,
    tokens: 0,
    longest: 0,
    invalid: [],
    special: [],
    specialCounts: {},
    untrainable: [],
    template: [],
    overLength: [],
    cutTurns: 0,
    dropTurnsLost: 0,
    truncTurnsRemoved: 0,
    truncExamplesDropped: 0,
  };
}

const trainedCount = (r: EncodedExample): number => r.example.turns.filter((t) => t.trained).length;

/**
 * Encode a chunk, results aligned with `items`; a template-level throw is
 * retried per item so one odd conversation can't hide the rest.
 */
async function encodeChunk(
  encoder: Encoder,
  items: Item[],
  onTemplateError: (line: number, message: string) => void,
): Promise<Array<EncodeResult | undefined>> {
  try {
    return await encoder.encode(items);
  } catch (e) {
    if (!isChatsftError(e) || e.code !== 'TEMPLATE_SPAN') throw e;
  }
  const out: Array<EncodeResult | undefined> = [];
  for (const item of items) {
    try {
      out.push((await encoder.encode([item]))[0]);
    } catch (e) {
      if (!isChatsftError(e) || e.code !== 'TEMPLATE_SPAN') throw e;
      onTemplateError(item.line, e.message);
      out.push(undefined);
    }
  }
  return out;
}

export async function scanData(
  ctx: DoctorContext,
  sim: Simulator,
  file: string | undefined,
): Promise<{ findings: Finding[]; sample: string; report?: DataReport }> {
  const { setup, cfg } = ctx;
  const stats = newStats();
  // What prepare and train would report for this file, reason by reason.
  const rep: DataReporter = dataReporter(file ?? '(sample)');
  const limit = sizeLimit(setup.folder, cfg.max_length);
  const matcher = specialMatcher(setup.specialStrings);
  const base = { trainOn: cfg.train_on, allowSpecialTokensInContent: cfg.allow_special_tokens_in_content };
  const full = createEncoder(setup, base); // no length limit: what other trainers see
  const L = cfg.max_length;
  const truncating = L === undefined ? undefined : createEncoder(setup, { ...base, maxLength: L, truncation: 'truncate_turns' });

  const scanSpecial = (item: Item): void => {
    item.conversation.messages.forEach((m, i) => {
      const found = messageStrings(m)
        .map((t) => matcher.find(t))
        .find((f) => f !== undefined);
      if (found === undefined) return;
      stats.special.push({ line: item.line, where: `messages[${i}].content`, token: found });
      stats.specialCounts[found] = (stats.specialCounts[found] ?? 0) + 1;
    });
  };

  async function processChunk(items: Item[]): Promise<void> {
    for (const item of items) scanSpecial(item);
    if (!ctx.eot) return; // no usable template: nothing can be labelled
    const over: Array<{ item: Item; r: EncodedExample }> = [];
    const results = await encodeChunk(full, items, (line, message) => {
      stats.template.push({ line, message });
      rep.drop(line, 'template_error', 'messages', message);
    });
    results.forEach((r, i) => {
      const item = items[i] as Item;
      if (r === undefined) return;
      if (!r.ok) {
        rep.drop(r.line, r.reason, r.reason, r.detail);
        if (r.reason === 'no_supervised_tokens') stats.untrainable.push(r.line);
        else if (TEMPLATE_REASONS.has(r.reason)) stats.template.push({ line: r.line, message: `${r.reason}: ${r.detail}` });
        else if (r.reason !== 'special_tokens_in_content') stats.invalid.push({ line: r.line, why: `${r.reason}: ${r.detail}` });
        return;
      }
      const n = r.example.inputIds.length;
      if (L === undefined || n <= L || cfg.truncation === 'truncate_turns') rep.use();
      else rep.drop(r.line, 'too_long', 'too_long', `${n} tokens > max_length ${L}`);
      stats.examples++;
      stats.assistantTurns += r.example.turns.length;
      stats.trainedTurns += trainedCount(r);
      stats.tokens += n;
      stats.longest = Math.max(stats.longest, n);
      const ex = r.example;
      sim.addRaw(ex);
      if (L !== undefined && n > L) over.push({ item, r });
      else sim.addKept(ex);
    });
    if (!truncating || L === undefined || over.length === 0) return;
    // Re-encoded under truncate_turns: exact counts of the turns that policy removes.
    const shorter = await encodeChunk(
      truncating,
      over.map((o) => o.item),
      () => undefined,
    );
    over.forEach((o, i) => {
      const trained = trainedCount(o.r);
      stats.overLength.push(o.r.line);
      stats.cutTurns += o.r.example.turns.filter((t) => t.trained && t.eot >= L).length;
      stats.dropTurnsLost += trained;
      const t = shorter[i];
      if (t?.ok) {
        stats.truncTurnsRemoved += trained - trainedCount(t);
        if (cfg.truncation === 'truncate_turns') sim.addKept(t.example);
      } else {
        stats.truncExamplesDropped++;
        stats.truncTurnsRemoved += trained;
      }
    });
  }

  if (file === undefined) {
    await processChunk(SAMPLE.map((conversation, i) => ({ conversation, line: i + 1 })));
    return { findings: [], sample: `built-in sample (${SAMPLE.length} conversations; pass --data for yours)` };
  }

  let chunk: Item[] = [];
  for await (const parsed of readConversations(file)) {
    stats.lines = parsed.line;
    rep.seen(parsed.line);
    if (parsed.ok === 'blank') continue;
    if (parsed.ok === false) {
      stats.invalid.push({ line: parsed.line, why: `${parsed.issue.field}: ${parsed.issue.message}` });
      rep.drop(parsed.line, parsed.reason ?? 'invalid_data', parsed.issue.field, parsed.issue.message);
      continue;
    }
    stats.conversations++;
    // Certainly over the limit by its size alone: counted, never tokenized (a 30 MB line took 5 GB).
    const over = limit ? certainlyOver(setup.tokenizer, parsed.conversation, limit.tokens) : undefined;
    if (over && limit) {
      const message = overLengthMessage(over, limit);
      if (limit.source === 'max_length') stats.overLength.push(parsed.line);
      else stats.invalid.push({ line: parsed.line, why: `too_long: ${message}` });
      rep.drop(parsed.line, 'too_long', 'messages', message);
      continue;
    }
    chunk.push({ conversation: parsed.conversation, line: parsed.line });
    if (chunk.length >= CHUNK) {
      await processChunk(chunk);
      chunk = [];
    }
  }
  await processChunk(chunk);
  return { findings: dataFindings(ctx, stats, file), sample: file, report: rep.report };
}

function dataFindings(ctx: DoctorContext, s: Stats, file: string): Finding[] {
  const { cfg } = ctx;
  const out: Finding[] = [];
  if (s.invalid.length > 0) {
    out.push({
      code: 'DATA_INVALID',
      severity: 'error',
      message: `${s.invalid.length} line(s) of ${file} fail to parse, validate or render, and would be skipped.`,
      evidence: {
        lines: s.invalid.length,
        example_lines: firstFew(s.invalid.map((x) => x.line)),
        examples: firstFew(
          s.invalid.map((x) => `${file}:${x.line} ${x.why}`),
          5,
        ),
      },
      hint: 'fix or remove those lines (SPEC §3: {"messages": [{"role", "content"}]} or ShareGPT {"conversations": [{"from", "value"}]})',
    });
  }
  if (s.special.length > 0) {
    const lines = [...new Set(s.special.map((x) => x.line))];
    const allowed = cfg.allow_special_tokens_in_content;
    out.push({
      code: 'CONTENT_HAS_SPECIAL_TOKENS',
      severity: 'warning',
      message: allowed
        ? `${lines.length} conversation(s) contain special-token text in message content, which the tokenizer turns into real control tokens (injected turn ends).`
        : `${lines.length} conversation(s) contain special-token text in message content; chatsft drops them (other trainers would tokenize it as control tokens).`,
      evidence: {
        conversations: lines.length,
        tokens: s.specialCounts,
        example_lines: firstFew(lines),
        examples: firstFew(
          s.special.map((x) => `${file}:${x.line} ${x.where}: ${x.token}`),
          5,
        ),
      },
      hint: allowed
        ? 'remove or escape those strings in the data, or set allow_special_tokens_in_content: false to drop them'
        : 'remove or escape those strings in the data to keep these conversations',
    });
  }
  if (s.untrainable.length > 0) {
    const none = s.examples === 0;
    out.push({
      code: 'NO_TRAINABLE_TOKENS',
      severity: none ? 'error' : 'warning',
      message: `${s.untrainable.length} conversation(s) have nothing supervised (no trained assistant turn under train_on: ${cfg.train_on}) and are dropped.`,
      evidence: {
        conversations: s.untrainable.length,
        example_lines: firstFew(s.untrainable),
        train_on: cfg.train_on,
        trainable_examples: s.examples,
      },
      hint:
        cfg.train_on === 'last'
          ? '--train-on assistant (train every assistant turn), or check the "train": false flags on last turns'
          : 'give each conversation an assistant turn to train on, or remove its "train": false flags',
    });
  }
  const byCode = new Map<FindingCode, Array<{ line: number; message: string }>>();
  for (const t of s.template) {
    const code: FindingCode = t.message.includes('EOT_NOT_SINGLE_TOKEN')
      ? 'EOT_NOT_SINGLE_TOKEN'
      : t.message.includes('TEMPLATE_NO_EOT')
        ? 'TEMPLATE_NO_EOT'
        : 'TEMPLATE_BROKEN';
    byCode.set(code, [...(byCode.get(code) ?? []), t]);
  }
  for (const [code, list] of byCode) {
    out.push({
      code,
      severity: 'error',
      message: `On ${list.length} conversation(s) chatsft cannot establish exact assistant spans and EOT with this template.`,
      evidence: {
        conversations: list.length,
        example_lines: firstFew(list.map((x) => x.line)),
        error: (list[0] as { message: string }).message,
      },
      hint: 'fix the template for these conversations (or add {% generation %} tags), or use --template chatml',
    });
  }
  if (s.overLength.length > 0 && cfg.max_length !== undefined) {
    const keptUnderPolicy = cfg.truncation === 'drop' ? s.examples - s.overLength.length : s.examples - s.truncExamplesDropped;
    out.push({
      code: 'TRUNCATION_CUTS_EOT',
      severity: keptUnderPolicy === 0 ? 'error' : 'warning',
      message: `${s.overLength.length} example(s) exceed max_length ${cfg.max_length}; cutting them there would lose the EOT of ${s.cutTurns} trained assistant turn(s).`,
      evidence: {
        max_length: cfg.max_length,
        longest_example: s.longest,
        examples_over_length: s.overLength.length,
        trained_turns_with_eot_past_max_length: s.cutTurns,
        example_lines: firstFew(s.overLength),
        policy: cfg.truncation,
        drop: { examples_dropped: s.overLength.length, trained_turns_lost: s.dropTurnsLost },
        truncate_turns: { trained_turns_removed: s.truncTurnsRemoved, examples_dropped: s.truncExamplesDropped },
      },
      hint: `--max-length ${s.longest} keeps every example whole; otherwise --truncation truncate_turns keeps whole turns with their EOT (chatsft never cuts an EOT; a trainer that truncates rows does)`,
    });
  }
  out.push({
    code: 'DATA_SUMMARY',
    severity: 'info',
    message: ctx.eot
      ? `${file}: ${s.examples} of ${s.conversations} conversation(s) encode; ${s.trainedTurns} of ${s.assistantTurns} assistant turns are trained.`
      : `${file}: ${s.conversations} conversation(s) read but not encoded: the template has no usable EOT (see the template finding).`,
    evidence: {
      file,
      lines: s.lines,
      conversations: s.conversations,
      examples: s.examples,
      assistant_turns: s.assistantTurns,
      trained_turns: s.trainedTurns,
      tokens: s.tokens,
      longest_example: s.longest,
    },
    hint: '',
  });
  return out;
}
