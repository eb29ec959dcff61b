/**
 * `runDoctor`: audit a model folder, its template, settings and (optionally)
 * data for every known cause of "my fine-tuned model never stops" (SPEC §7).
 * Reads top to bottom: set up the tokenizer as chatsft would, probe the
 * template for its EOT, scan the data while simulating collators, then run
 * the checks that read those results.
 */
import { existsSync, statSync } from 'node:fs';
import { ChatsftError, isChatsftError } from '../errors.js';
import type { SftConfig } from '../config/schema.js';
import { loadModelFolder } from '../model/folder.js';
import { setupTokenizer, type SetupOptions, type TokenizerSetup } from '../tokenize/setup.js';
import { checkCollators, createSimulator } from './checks/collator.js';
import { scanData } from './checks/data.js';
import type { DataReport } from '../data/report.js';
import { checkNewTokens } from './checks/settings.js';
import { checkTorchEngine } from './checks/engine.js';
import { checkStopIds, runtimeStopIds } from './checks/stop_ids.js';
import { checkTemplate, templateMissingFinding } from './checks/template.js';
import { checkBos, checkPad, checkPaddingSide } from './checks/tokenizer.js';
import { tok, type CollatorName, type DoctorCheck, type DoctorContext, type DoctorFacts, type Finding, type Severity } from './types.js';

/** The checks over the gathered facts, in report order (before sorting by severity). */
const CHECKS: DoctorCheck[] = [checkPad, checkPaddingSide, checkBos, checkStopIds, checkNewTokens, checkCollators];

export { COLLATORS, type CollatorName, type Finding, type FindingCode, type Severity, type Evidence } from './types.js';
export { formatReport } from './report.js';

export interface DoctorOptions {
  config: SftConfig;
  /** Collators whose effect on the EOT is reported (default: chatsft). */
  simulate?: CollatorName[];
  /** Also check the training engine's runtime (`torch`: python, torch, device, bf16). */
  engine?: { name: 'torch'; python?: string };
}

export interface DoctorSummary {
  errors: number;
  warnings: number;
  infos: number;
  model: string;
  template: string;
  eot: string[];
  pad: string;
  padding_side: 'left' | 'right';
  stop_ids: string[];
  data: string;
  simulate: CollatorName[];
  /** Per simulated collator: trained assistant turns and how many keep their EOT. */
  eot_supervised: Record<string, { trained_turns: number; supervised_eot: number }>;
}

export interface DoctorReport {
  findings: Finding[];
  summary: DoctorSummary;
  /** What prepare/train would do with each line of --data and --eval-data (the shared data report). */
  data_reports?: { train?: DataReport; eval?: DataReport };
}

const ORDER: Record<Severity, number> = { error: 0, warning: 1, info: 2 };

/** chatsft's tokenizer setup; with no template, the rest of the audit assumes --template chatml. */
function setupOrFallback(cfg: SftConfig, findings: Finding[]): TokenizerSetup {
  if (!cfg.model) throw new ChatsftError('USAGE', 'missing --model DIR (or model: in the config)');
  const folder = loadModelFolder(cfg.model);
  const opts: SetupOptions = { template: cfg.template, pad: cfg.pad, paddingSide: cfg.padding_side, templateVars: cfg.template_vars };
  try {
    return setupTokenizer(folder, opts);
  } catch (e) {
    if (!isChatsftError(e) || e.code !== 'TEMPLATE_MISSING') throw e;
    findings.push(templateMissingFinding(folder));
    return setupTokenizer(folder, { ...opts, template: 'chatml' });
  }
}

export async function runDoctor(opts: DoctorOptions): Promise<DoctorReport> {
  const cfg = opts.config;
  const simulate = opts.simulate ?? ['chatsft'];
  const findings: Finding[] = [];
  const setup = setupOrFallback(cfg, findings);
  const probe = await checkTemplate(setup);
  findings.push(...probe.findings);
  const ctx: DoctorContext = { cfg, setup, eot: probe.eot, simulate };

  const sim = createSimulator({ padId: setup.padId, paddingSide: setup.paddingSide, batchSize: cfg.batch_size, maxLength: cfg.max_length });
  const file = cfg.data.train;
  for (const f of [file, cfg.data.eval]) {
    if (f !== undefined && existsSync(f) && statSync(f).isDirectory()) {
      throw new ChatsftError('USAGE', 'doctor reads conversations (JSONL), not a prepared folder', f);
    }
  }
  const data = await scanData(ctx, sim, file);
  const counts = sim.results();
  // --eval-data is audited the same way; its labels do not enter the collator simulation of training.
  const evalData =
    cfg.data.eval !== undefined
      ? await scanData(
          ctx,
          createSimulator({ padId: setup.padId, paddingSide: setup.paddingSide, batchSize: cfg.batch_size, maxLength: cfg.max_length }),
          cfg.data.eval,
        )
      : undefined;

  const facts: DoctorFacts = { ...ctx, probeText: probe.probe.text, counts, sample: data.sample };
  findings.push(...data.findings, ...(evalData?.findings ?? []));
  for (const check of CHECKS) findings.push(...(await check(facts)));
  // Not a check over the facts: it probes the Python worker of --engine torch.
  if (opts.engine?.name === 'torch') findings.push(...checkTorchEngine(opts.engine.python));
  findings.sort((a, b) => ORDER[a.severity] - ORDER[b.severity]);

  const count = (s: Severity): number => findings.filter((f) => f.severity === s).length;
  const eotSupervised: DoctorSummary['eot_supervised'] = {};
  if (ctx.eot)
    for (const name of simulate)
      eotSupervised[name] = { trained_turns: counts[name].trainedTurns, supervised_eot: counts[name].supervisedEot };
  return {
    findings,
    summary: {
      errors: count('error'),
      warnings: count('warning'),
      infos: count('info'),
      model: setup.folder.dir,
      template: setup.template.origin === 'file' ? (setup.template.path ?? 'file') : setup.template.origin,
      eot: (ctx.eot?.ids ?? []).map((id) => tok(setup, id)),
      pad: tok(setup, setup.padId),
      padding_side: setup.paddingSide,
      stop_ids: runtimeStopIds(ctx).ids.map((id) => tok(setup, id)),
      data: data.sample,
      simulate,
      eot_supervised: eotSupervised,
    },
    ...(data.report || evalData?.report
      ? { data_reports: { ...(data.report ? { train: data.report } : {}), ...(evalData?.report ? { eval: evalData.report } : {}) } }
      : {}),
  };
}
