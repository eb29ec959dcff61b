/**
 * Tokenizer-config checks: the pad token (missing, or an EOS/EOT that a
 * pad-id-masking collator would erase), the padding side, and BOS added
 * twice when other trainers call `tokenizer(rendered_text)`.
 */
import { masksByPadId, tok, type DoctorContext, type DoctorFacts, type Evidence, type Finding } from '../types.js';

function idOf(ctx: DoctorContext, token: string | undefined): number | undefined {
  return token === undefined ? undefined : (ctx.setup.tokenizer.tokenToId(token) ?? undefined);
}

/** Ids that occur in training data as turn or sequence ends, with what they are. */
function eosLike(ctx: DoctorContext): Map<number, string> {
  const out = new Map<number, string>();
  const eos = idOf(ctx, ctx.setup.folder.eosToken);
  if (eos !== undefined) out.set(eos, 'the tokenizer eos_token');
  if (ctx.setup.eosId !== undefined && !out.has(ctx.setup.eosId)) out.set(ctx.setup.eosId, 'the eos token of the template');
  for (const id of ctx.eot?.ids ?? []) out.set(id, out.has(id) ? `${out.get(id) as string} and the template's EOT` : "the template's EOT");
  return out;
}

export function checkPad(ctx: DoctorFacts): Finding[] {
  const { setup, cfg, counts } = ctx;
  const folder = setup.folder;
  const out: Finding[] = [];
  const tokPadId = idOf(ctx, folder.padToken);
  const unkId = idOf(ctx, folder.unkToken);
  const eosIds = eosLike(ctx);

  if (tokPadId === undefined) {
    out.push({
      code: 'PAD_MISSING',
      severity: 'warning',
      message: 'The tokenizer has no pad token; trainers that fill it in with the EOS token then mask every EOS in the labels.',
      evidence: {
        tokenizer_pad_token: folder.padToken ?? null,
        eos: tok(setup, idOf(ctx, folder.eosToken)),
        unk: unkId === undefined ? null : tok(setup, unkId),
        chatsft_pad: tok(setup, setup.padId),
        chatsft_pad_reason: setup.padReason,
      },
      hint:
        unkId !== undefined
          ? `set "pad_token": "${folder.unkToken as string}" in tokenizer_config.json (chatsft's --pad auto already uses it); never pad with the EOS`
          : 'add a "<|pad|>" special token and set it as pad_token (chatsft\'s --pad auto does this); never pad with the EOS',
    });
  }

  const configured = eosIds.get(setup.padId);
  const own = tokPadId !== undefined ? eosIds.get(tokPadId) : undefined;
  if (configured !== undefined || own !== undefined) {
    const masking = ctx.simulate.filter(masksByPadId);
    const evidence: Evidence = {
      pad: tok(setup, configured !== undefined ? setup.padId : tokPadId),
      is: (configured ?? own) as string,
      source: configured !== undefined ? `configured pad (pad: ${cfg.pad})` : 'tokenizer_config.json pad_token',
    };
    if (configured !== undefined) {
      for (const name of ['hf-lm-collator', 'hf-completion-collator'] as const) {
        const c = counts[name];
        evidence[`eot_kept_under_${name}`] = `${c.supervisedEot} of ${c.trainedTurns}`;
      }
    } else {
      evidence['chatsft_pad'] = tok(setup, setup.padId);
    }
    // An error only where a simulated collator really erases EOTs with it (a pad
    // equal to an eos that the template never renders costs nothing).
    const erasing = masking.filter((n) => counts[n].trainedTurns - counts[n].supervisedEot - counts[n].cutByLength > 0);
    const severity = configured !== undefined && erasing.length > 0 ? 'error' : 'warning';
    out.push({
      code: 'PAD_IS_EOS',
      severity,
      message:
        configured !== undefined
          ? `The pad token ${tok(setup, setup.padId)} is ${configured}; ${severity === 'error' ? `under ${erasing.join(', ')} the EOTs in the data are masked as padding` : "chatsft's labels stay correct, but a collator that masks labels by pad id erases every occurrence of it in the labels"}.`
          : `The tokenizer's pad token ${tok(setup, tokPadId)} is ${own as string}; trainers that use it and mask labels by pad id erase every EOT.`,
      evidence,
      hint:
        configured !== undefined
          ? `--pad auto (or pad: ${folder.unkToken ?? '<|pad|>'}) so the pad differs from every EOS/EOT`
          : `set "pad_token" in tokenizer_config.json to ${folder.unkToken ? `"${folder.unkToken}"` : 'a new "<|pad|>" special token'} (chatsft itself pads with ${tok(setup, setup.padId)})`,
    });
  }

  out.push({
    code: 'PAD_CHOSEN',
    severity: 'info',
    message: `chatsft pads with ${tok(setup, setup.padId)}: ${setup.padReason}.`,
    evidence: { pad: tok(setup, setup.padId), reason: setup.padReason, padding_side: setup.paddingSide },
    hint: '',
  });
  return out;
}

export function checkPaddingSide(ctx: DoctorFacts): Finding[] {
  const { setup, cfg } = ctx;
  const fromTokenizer = setup.folder.paddingSide === 'left';
  const fromConfig = cfg.padding_side === 'left';
  if (!fromTokenizer && !fromConfig) return [];
  const padIsEos = eosLike(ctx).has(setup.padId);
  return [
    {
      code: 'PADDING_LEFT',
      severity: 'warning',
      message:
        (fromConfig
          ? 'Training batches are padded on the left'
          : 'The tokenizer pads on the left, so trainers that use its padding left-pad training batches') +
        (padIsEos
          ? ', which starts rows with runs of the EOS/EOT pad token.'
          : '; left padding is meant for batched generation, not training.'),
      evidence: {
        tokenizer_padding_side: setup.folder.paddingSide,
        configured_padding_side: cfg.padding_side,
        pad: tok(setup, setup.padId),
        pad_is_eos_or_eot: padIsEos,
      },
      hint: fromConfig
        ? '--padding-side right'
        : 'set "padding_side": "right" in tokenizer_config.json for training (tokenizer.padding_side = "right"); chatsft pads on the right by default',
    },
  ];
}

export async function checkBos(ctx: DoctorFacts): Promise<Finding[]> {
  const { setup, probeText } = ctx;
  const bos = setup.folder.bosToken;
  const bosId = idOf(ctx, bos);
  if (!probeText || bos === undefined || bosId === undefined || !probeText.startsWith(bos) || !setup.folder.addBosToken) return [];
  // What `tokenizer(rendered_text)` gives with add_special_tokens=True (other trainers' default).
  const enc = await setup.tokenizer.encode(probeText, null, { addSpecialTokens: true });
  const first = enc.getIds().slice(0, 3);
  const addedBy =
    typeof setup.folder.tokenizerConfig['add_bos_token'] === 'boolean' ? 'add_bos_token: true' : "tokenizer.json's post_processor";
  return [
    {
      code: 'BOS_DOUBLED',
      severity: 'warning',
      message: `The template renders ${bos} and the tokenizer adds ${bos} too (${addedBy}), so tokenizing the rendered chat with special tokens starts with two BOS.`,
      evidence: {
        bos: tok(setup, bosId),
        template_renders_bos: true,
        tokenizer_adds_bos: addedBy,
        first_ids_with_special_tokens: first,
        first_tokens: first.map((id) => setup.tokenizer.idToToken(id) ?? '?'),
      },
      hint: 'tokenize rendered chats with add_special_tokens=False (chatsft does), or remove {{ bos_token }} from the template',
    },
  ];
}
