/**
 * Settings checks: tokens added for the template or the pad get fresh
 * embedding rows; a LoRA config with `train_embeddings: none` never trains
 * them, so the model cannot learn to emit (or read) them. Tokens the folder
 * already has can't be judged trained or not without the weights; the only
 * cheap signal is an id past config.json's vocab_size (no row at all).
 */
import { tok, type DoctorFacts, type Finding } from '../types.js';

export function checkNewTokens(ctx: DoctorFacts): Finding[] {
  const { setup, cfg } = ctx;
  if (!cfg.lora || cfg.lora.train_embeddings !== 'none') return [];
  const fresh = new Map<number, string>();
  for (const t of setup.addedTokens) fresh.set(t.id, 'added by chatsft');
  const vocab = setup.folder.modelConfig?.['vocab_size'];
  if (typeof vocab === 'number') {
    for (const t of setup.folder.addedTokens)
      if (t.id >= vocab && !fresh.has(t.id)) fresh.set(t.id, `id >= config.json vocab_size ${vocab}`);
  }
  if (fresh.size === 0) return [];
  const ids = [...fresh.keys()].sort((a, b) => a - b);
  const onlyPad = ids.every((id) => id === setup.padId);
  const eotIsNew = (ctx.eot?.ids ?? []).some((id) => fresh.has(id));
  return [
    {
      code: 'NEW_TOKENS_UNTRAINED',
      severity: onlyPad ? 'warning' : 'error',
      message: `${ids.length} token(s) get new embedding rows that this LoRA config never trains (lora.train_embeddings: none)${eotIsNew ? ', including the EOT, so the model cannot learn to stop' : ''}.`,
      evidence: {
        tokens: ids.map((id) => `${tok(setup, id)}: ${fresh.get(id) as string}`),
        eot_is_new: eotIsNew,
        lora_r: cfg.lora.r,
        train_embeddings: cfg.lora.train_embeddings,
      },
      hint: '--lora-train-embeddings new_tokens (lora.train_embeddings: new_tokens), or full fine-tuning',
    },
  ];
}
