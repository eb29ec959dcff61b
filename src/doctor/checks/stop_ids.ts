/**
 * Stop ids: a runtime loading this folder stops on generation_config.json's
 * `eos_token_id` (int or list; config.json's as fallback), else on the
 * tokenizer's eos. If the template's EOT is not among them, the model learns
 * to emit the EOT and the runtime keeps generating past it.
 */
import { generationEosIds } from '../../model/folder.js';
import { tok, type DoctorContext, type DoctorFacts, type Finding } from '../types.js';

export function runtimeStopIds(ctx: DoctorContext): { ids: number[]; source: string } {
  const folder = ctx.setup.folder;
  const fromGen = generationEosIds(folder);
  if (fromGen.length > 0) {
    const source =
      folder.generationConfig?.['eos_token_id'] !== undefined ? 'generation_config.json eos_token_id' : 'config.json eos_token_id';
    return { ids: fromGen, source };
  }
  const eos = folder.eosToken === undefined ? undefined : (ctx.setup.tokenizer.tokenToId(folder.eosToken) ?? undefined);
  return { ids: eos === undefined ? [] : [eos], source: 'tokenizer_config.json eos_token' };
}

export function checkStopIds(ctx: DoctorFacts): Finding[] {
  const { setup, eot } = ctx;
  if (!eot) return []; // a template finding already explains why there is no EOT
  const runtime = runtimeStopIds(ctx);
  // The ids generation must end on; an intermediate closer (harmony's <|end|>) is not one.
  const missing = eot.stopIds.filter((id) => !runtime.ids.includes(id));
  const evidence = {
    eot: eot.stopIds.map((id) => tok(setup, id)),
    stop_ids: runtime.ids.map((id) => tok(setup, id)),
    source: runtime.source,
  };
  if (missing.length === 0) {
    return [
      {
        code: 'STOP_IDS',
        severity: 'info',
        message: `A runtime stops on ${runtime.ids.map((id) => tok(setup, id)).join(', ')} (${runtime.source}), which includes the EOT.`,
        evidence,
        hint: '',
      },
    ];
  }
  const union = [...new Set([...runtime.ids, ...eot.stopIds])];
  return [
    {
      code: 'STOP_IDS_MISSING_EOT',
      severity: 'error',
      message: `The EOT ${missing.map((id) => tok(setup, id)).join(', ')} is not among the stop ids a runtime uses (${runtime.ids.map((id) => tok(setup, id)).join(', ') || 'none'}, from ${runtime.source}): the model will learn to stop but no runtime will stop it.`,
      evidence: { ...evidence, missing: missing.map((id) => tok(setup, id)) },
      hint: `set "eos_token_id": ${JSON.stringify(union)} in generation_config.json (chatsft export writes the EOT among the stop ids)`,
    },
  ];
}
