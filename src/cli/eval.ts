// chatsft eval --model out/ --data heldout.jsonl [--max-new-tokens 64] [--loss-only] [--json]   |   chatsft eval --engine llama.cpp --model m.gguf --data heldout.jsonl
import type { Command } from 'commander';
import { ChatsftError } from '../errors.js';
import { decodeIds, evaluateModel, type EvalReport, type EvalRow } from '../eval/evaluate.js';
import type { TokenizerSetup } from '../tokenize/setup.js';
import { createProgress, type Progress } from '../util/progress.js';
import { action, addConfigFlags, configFrom, printJson } from './common.js';
import { intFlag, printDataReport } from './flags.js';
import { loadModelFolder } from '../model/folder.js';
import { checkNewTokensFit } from '../generate/limits.js';
import { droppedByReason, totalDropped } from '../data/report.js';
import { encodeOptionsFrom } from './prepare.js';
import { evaluateGguf, type GgufEvalReport, type GgufEvalRow } from '../eval/gguf.js';

function formatGgufTable(file: string, r: GgufEvalReport, samples: GgufEvalRow[]): string {
  const stopped = Object.values(r.stopped_by).reduce((a, b) => a + b, 0);
  const lines = [
    `eval ${file} with llama.cpp (${r.model})`,
    `  stop rate        ${pct(r.stop_rate)}  (${stopped}/${r.examples} generations ended on llama.cpp's end-of-generation set)`,
    `  new tokens       mean ${fixed(r.mean_new_tokens, 1)}  p95 ${r.p95_new_tokens}  max ${r.max_new_tokens}  (reference answers: mean ${fixed(r.reference_mean_tokens, 1)})`,
    `  runaways         ${r.runaways.total}  (started a new turn header: ${r.runaways.new_turn_header}, inside text: ${r.runaways.inside_text})`,
    `  stop ids         ${r.stop_ids.join(', ') || '(none)'}    loss: not computed with llama.cpp`,
    `  skipped lines    ${r.skipped} of ${r.data_report.lines}${r.skipped ? `  (${droppedByReason(r.data_report.dropped)}; listed on stderr)` : ''}`,
  ];
  for (const s of samples) {
    const text = s.text.replace(/\n/g, '\\n');
    const end = s.stoppedBy !== null ? 'stopped' : s.ending === 'runaway_new_turn' ? 'ran on into a new turn' : 'did not stop';
    lines.push(
      `  line ${s.line}: ${JSON.stringify(text.length > 120 ? text.slice(0, 117) + '...' : text)}  [${end}, ${s.tokens.length} tokens]`,
    );
  }
  return lines.join('\n') + '\n';
}

async function evalWithLlamaCpp(
  model: string,
  data: string,
  opts: Record<string, unknown>,
  maxNewTokens: number,
  limit: number | undefined,
  samples: number,
): Promise<void> {
  if (opts['lossOnly']) throw new ChatsftError('USAGE', '--loss-only needs the chatsft engine: llama.cpp gives no loss here');
  const threads = opts['threads'] !== undefined ? positiveInt(opts['threads'], 'threads') : undefined;
  let progress: Progress | undefined;
  const { report, rows } = await evaluateGguf({
    gguf: model,
    data,
    maxNewTokens,
    ...(limit !== undefined ? { limit } : {}),
    ...(threads !== undefined ? { threads } : {}),
    onProgress: (done, total) => {
      progress ??= createProgress({ label: 'eval', unit: 'prompts', total, silent: Boolean(opts['quiet']) });
      progress.update(done);
    },
  });
  progress?.done();
  printDataReport(report.data_report, { verb: 'skipped' }); // warnings, shown under --quiet too
  const shown = rows.slice(0, Math.max(0, samples));
  if (opts['json']) {
    printJson({
      data,
      ...report,
      samples: shown.map((r) => ({
        line: r.line,
        text: r.text,
        new_tokens: r.tokens.length,
        reference_tokens: r.referenceTokens,
        stopped_by: r.stoppedBy,
        ending: r.ending,
      })),
    });
  } else {
    process.stdout.write(formatGgufTable(data, report, shown));
  }
}

const positiveInt = (raw: unknown, flag: string): number => intFlag(raw, flag, { min: 1 });

const pct = (x: number | null): string => (x === null ? '-' : `${(100 * x).toFixed(1)}%`);
const fixed = (x: number | null, d: number): string => (x === null ? '-' : x.toFixed(d));

/** The readable report: one metric per line, then a few generations. */
export async function formatEvalTable(setup: TokenizerSetup, file: string, r: EvalReport, samples: EvalRow[]): Promise<string> {
  const name = (id: number): string => `${setup.tokenizer.idToToken(id) ?? '?'} (${id})`;
  const lines = [
    `eval ${file}`,
    `  loss             ${fixed(r.loss, 4)}  (mean CE over ${r.loss_tokens} supervised tokens of ${r.loss_examples} conversations)`,
  ];
  // Lines left out are part of the result: a stop rate over 2 of 19 lines is not a stop rate over 19.
  const data = r.data_report ?? r.loss_data_report;
  if (data) {
    const n = totalDropped(data);
    lines.push(
      `  skipped lines    ${n} of ${data.lines}${n ? `  (${droppedByReason(data.dropped)}; listed on stderr, all in --json data_report)` : ''}`,
    );
  }
  if (r.examples !== null) {
    const stopped = r.stopped_by ? Object.values(r.stopped_by).reduce((a, b) => a + b, 0) : 0;
    const run = r.runaways ?? { total: 0, new_turn_header: 0, inside_text: 0 };
    lines.push(
      `  stop rate        ${pct(r.stop_rate)}  (${stopped}/${r.examples} generations ended with a stop id)`,
      `  new tokens       mean ${fixed(r.mean_new_tokens, 1)}  p95 ${r.p95_new_tokens ?? '-'}  max ${r.max_new_tokens}  (reference answers: mean ${fixed(r.reference_mean_tokens, 1)})`,
      `  runaways         ${run.total}  (started a new turn header: ${run.new_turn_header}, inside text: ${run.inside_text})`,
      `  stop ids         ${r.stop_ids.map(name).join(', ')}`,
    );
  }
  for (const s of samples) {
    const text = (await decodeIds(setup, s.tokens)).replace(/\n/g, '\\n');
    const end = s.stoppedBy !== null ? 'stopped' : s.ending === 'runaway_new_turn' ? 'ran on into a new turn' : 'did not stop';
    lines.push(
      `  line ${s.line}: ${JSON.stringify(text.length > 120 ? text.slice(0, 117) + '...' : text)}  [${end}, ${s.tokens.length} tokens]`,
    );
  }
  return lines.join('\n') + '\n';
}

export function registerEval(program: Command): void {
  const cmd = program.command('eval').description('loss and stop rate of a model folder on held-out conversations (SPEC §8)');
  addConfigFlags(cmd, ['model', 'data', 'template', 'train_on', 'max_length', 'truncation', 'allow_special_tokens_in_content'])
    .option('--max-new-tokens <n>', 'generation budget per prompt', '128')
    .option('--batch-size <n>', 'prompts per generation batch', '16')
    .option('--limit <n>', 'evaluate only the first N usable conversations')
    .option('--samples <n>', 'generations shown in the table', '3')
    .option('--loss-only', 'skip generation')
    .option('--engine <name>', 'chatsft (a model folder) or llama.cpp (a .gguf file, through node-llama-cpp)', 'chatsft')
    .option('--threads <n>', 'llama.cpp threads (default: its own choice)')
    .option('--json', 'print the report as JSON on stdout')
    .option('--quiet', 'no progress bar')
    .action(
      action(async (opts: Record<string, unknown>) => {
        const cfg = configFrom(opts);
        if (!cfg.model) throw new ChatsftError('USAGE', 'missing --model DIR');
        const data = cfg.data.train ?? cfg.data.eval;
        if (!data) throw new ChatsftError('USAGE', 'missing --data FILE');
        const maxNewTokens = positiveInt(opts['maxNewTokens'], 'max-new-tokens');
        const batchSize = positiveInt(opts['batchSize'], 'batch-size');
        const limit = opts['limit'] !== undefined ? positiveInt(opts['limit'], 'limit') : undefined;
        const samples = intFlag(opts['samples'] ?? 3, 'samples', { min: 0 });
        const engine = String(opts['engine']);
        if (engine === 'llama.cpp') return evalWithLlamaCpp(cfg.model, data, opts, maxNewTokens, limit, samples);
        if (engine !== 'chatsft') throw new ChatsftError('USAGE', `--engine must be chatsft or llama.cpp, not ${engine}`);
        // From config.json, before the engine starts: no room for a prompt is a flag error.
        const positions = loadModelFolder(cfg.model).modelConfig?.['max_position_embeddings'];
        if (typeof positions === 'number') checkNewTokensFit(maxNewTokens, positions);
        // The engine (TensorFlow.js) loads only for this path, not for --engine llama.cpp.
        const { loadGenerator } = await import('./generate.js');
        const { disposeModel } = await import('../engine/index.js');
        const { setup, model } = await loadGenerator(cfg.model, cfg.template);
        const silent = Boolean(opts['quiet']) || Boolean(opts['lossOnly']);
        let progress: Progress | undefined; // created at the first batch, when the total is known
        try {
          const { report, rows } = await evaluateModel({
            setup,
            data,
            model,
            lossOnly: Boolean(opts['lossOnly']),
            maxNewTokens,
            batchSize,
            encode: encodeOptionsFrom(cfg),
            ...(limit !== undefined ? { limit } : {}),
            onProgress: (done, total) => {
              progress ??= createProgress({ label: 'eval', unit: 'prompts', total, silent });
              progress.update(done);
            },
          });
          progress?.done();
          const dataReport = report.data_report ?? report.loss_data_report;
          if (dataReport) printDataReport(dataReport, { verb: 'skipped' }); // warnings, shown under --quiet too
          if (opts['json']) {
            const shown = await Promise.all(
              rows.slice(0, Math.max(0, samples)).map(async (r) => ({
                line: r.line,
                text: await decodeIds(setup, r.tokens),
                new_tokens: r.tokens.length,
                reference_tokens: r.referenceTokens,
                stopped_by: r.stoppedBy,
                ending: r.ending,
              })),
            );
            printJson({ model: cfg.model, data, ...report, samples: shown });
          } else {
            process.stdout.write(await formatEvalTable(setup, data, report, rows.slice(0, Math.max(0, samples))));
          }
        } finally {
          disposeModel(model);
        }
      }),
    );
}
