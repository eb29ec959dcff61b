/**
 * Collator simulation: collate the examples the way a trainer would and
 * count, per trained assistant turn, whether its EOT still carries a label.
 *
 * - `chatsft`: the examples chatsft keeps under the over-length policy,
 *   collated by `collate` (labels carried from spans, padding -100 by position).
 * - `hf-lm-collator`: transformers' DataCollatorForLanguageModeling(mlm=False):
 *   labels = input_ids, then `labels[input_ids == pad_id] = -100`; rows cut
 *   at max_length as a tokenizer with truncation=True would.
 * - `hf-completion-collator`: the same masking applied on top of
 *   assistant-only labels (completion-only collators subclass the LM one).
 */
import { collate, hfLmCollatorLabels } from '../../batch/collate.js';
import { IGNORE_INDEX } from '../../batch/types.js';
import type { LabelledExample } from '../../labels/types.js';
import { firstFew, masksByPadId, tok, type CollatorName, type DoctorFacts, type Finding } from '../types.js';

/** What the simulation reads of a labelled example. */
export type SimExample = Pick<LabelledExample, 'line' | 'inputIds' | 'labels' | 'turns'>;

export interface CollatorCount {
  examples: number;
  trainedTurns: number;
  supervisedEot: number;
  /** Input lines (or sample indices) with a trained turn that lost its EOT. */
  lostLines: number[];
  /** Lost EOTs at positions >= max_length (cut rather than masked). */
  cutByLength: number;
}

export interface SimOptions {
  padId: number;
  paddingSide: 'left' | 'right';
  batchSize: number;
  maxLength: number | undefined;
}

export interface Simulator {
  /** An example as fully encoded (no length limit): what other trainers see. */
  addRaw(ex: SimExample): void;
  /** An example as chatsft keeps it (after drop / truncate_turns). */
  addKept(ex: SimExample): void;
  results(): Record<CollatorName, CollatorCount>;
}

function emptyCount(): CollatorCount {
  return { examples: 0, trainedTurns: 0, supervisedEot: 0, lostLines: [], cutByLength: 0 };
}

function note(count: CollatorCount, line: number): void {
  if (count.lostLines[count.lostLines.length - 1] !== line) count.lostLines.push(line);
}

export function createSimulator(opts: SimOptions): Simulator {
  const counts: Record<CollatorName, CollatorCount> = {
    chatsft: emptyCount(),
    'hf-lm-collator': emptyCount(),
    'hf-completion-collator': emptyCount(),
  };
  let raw: SimExample[] = [];
  let kept: SimExample[] = [];
  const limit = opts.maxLength ?? Number.MAX_SAFE_INTEGER;

  // Position of token i of example b in the flat [B, T] batch.
  const at = (b: number, n: number, seqLen: number, i: number): number => b * seqLen + (opts.paddingSide === 'left' ? seqLen - n : 0) + i;

  function flushRaw(): void {
    if (raw.length === 0) return;
    const rows = raw.map((e) => ({ inputIds: e.inputIds.slice(0, limit), labels: e.labels.slice(0, limit) }));
    const batch = collate(rows, { padId: opts.padId, paddingSide: opts.paddingSide });
    const lm = hfLmCollatorLabels(batch, opts.padId, 'input_ids');
    const completion = hfLmCollatorLabels(batch, opts.padId, 'labels');
    raw.forEach((e, b) => {
      const n = (rows[b] as { inputIds: number[] }).inputIds.length;
      for (const [name, labels] of [
        ['hf-lm-collator', lm],
        ['hf-completion-collator', completion],
      ] as const) {
        const c = counts[name];
        for (const turn of e.turns) {
          if (!turn.trained || turn.start >= n) continue; // the turn was cut away entirely
          c.trainedTurns++;
          if (turn.eot >= n) {
            c.cutByLength++;
            note(c, e.line);
          } else if (labels[at(b, n, batch.seqLen, turn.eot)] !== IGNORE_INDEX) c.supervisedEot++;
          else note(c, e.line);
        }
        c.examples++;
      }
    });
    raw = [];
  }

  function flushKept(): void {
    if (kept.length === 0) return;
    const batch = collate(kept, { padId: opts.padId, paddingSide: opts.paddingSide });
    const c = counts.chatsft;
    kept.forEach((e, b) => {
      const n = e.inputIds.length;
      for (const turn of e.turns) {
        if (!turn.trained) continue;
        c.trainedTurns++;
        if (batch.labels[at(b, n, batch.seqLen, turn.eot)] !== IGNORE_INDEX) c.supervisedEot++;
        else note(c, e.line);
      }
      c.examples++;
    });
    kept = [];
  }

  return {
    addRaw(ex) {
      raw.push(ex);
      if (raw.length >= opts.batchSize) flushRaw();
    },
    addKept(ex) {
      kept.push(ex);
      if (kept.length >= opts.batchSize) flushKept();
    },
    results() {
      flushRaw();
      flushKept();
      return counts;
    },
  };
}

/** EOT_UNSUPERVISED for each simulated collator that loses an EOT; an info line for the others. */
export function checkCollators(ctx: DoctorFacts): Finding[] {
  const { setup, cfg, counts, sample } = ctx;
  if (!ctx.eot) return []; // without an EOT there is nothing to lose
  const out: Finding[] = [];
  const padIsEot = ctx.eot?.ids.includes(setup.padId) ?? false;
  for (const name of ctx.simulate) {
    const c = counts[name];
    const lost = c.trainedTurns - c.supervisedEot;
    const evidence = {
      collator: name,
      sample,
      examples: c.examples,
      trained_turns: c.trainedTurns,
      supervised_eot: c.supervisedEot,
      pad: tok(setup, setup.padId),
      padding_side: setup.paddingSide,
      eot: (ctx.eot?.ids ?? []).map((id) => tok(setup, id)),
      ...(c.lostLines.length ? { example_lines: firstFew(c.lostLines) } : {}),
      ...(c.cutByLength ? { cut_by_max_length: c.cutByLength } : {}),
    };
    if (lost === 0) {
      out.push({
        code: 'COLLATOR_SIMULATION',
        severity: 'info',
        message: `${name}: ${c.supervisedEot} of ${c.trainedTurns} trained assistant turns keep their EOT in the labels.`,
        evidence,
        hint: '',
      });
      continue;
    }
    const masked = lost - c.cutByLength;
    const causes: string[] = [];
    if (masked > 0 && masksByPadId(name) && padIsEot) {
      causes.push(`pad id ${setup.padId} is the EOT, and labels[input_ids == pad_id] = -100 erases every EOT`);
    } else if (masked > 0) causes.push('the EOT position is masked');
    if (c.cutByLength > 0) causes.push(`${c.cutByLength} EOT(s) lie past max_length ${String(cfg.max_length)} and are cut off`);
    const hints: string[] = [];
    if (masked > 0)
      hints.push(
        '--pad auto (chatsft picks unk or a new <|pad|>); in other trainers set tokenizer.pad_token to the unk token or a new pad token, never the EOS',
      );
    if (c.cutByLength > 0)
      hints.push('raise --max-length, or drop / truncate whole turns (--truncation drop|truncate_turns) instead of cutting rows');
    out.push({
      code: 'EOT_UNSUPERVISED',
      severity: 'error',
      message: `${name}: ${c.supervisedEot} of ${c.trainedTurns} trained assistant turns keep their EOT in the labels, so the model does not learn to stop (${causes.join('; ')}).`,
      evidence: { ...evidence, lost_eot: lost },
      hint: hints.join('; '),
    });
  }
  return out;
}
