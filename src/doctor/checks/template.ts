/**
 * Template checks: is there a template, does it close assistant turns with a
 * token, and is that token one special token of this vocabulary? Found by
 * rendering the built-in sample and reading what follows each assistant
 * content, so a broken template becomes a finding with evidence rather than
 * the TEMPLATE_SPAN error the label builder would throw.
 */
import { isChatsftError } from '../../errors.js';
import type { ModelFolder } from '../../model/folder.js';
import type { TokenizerSetup } from '../../tokenize/setup.js';
import { renderWithSpans, type RenderedChat } from '../../template/spans.js';
import { codePointIndexer, sliceCodePoints } from '../../tokenize/encode.js';
import { SAMPLE } from '../sample.js';
import { tok, type EotInfo, type Finding } from '../types.js';

const MAX_GAP = 8; // whitespace allowed between content and EOT, as in labels/build.ts
/** Strings that look like control-token markup: <|im_end|>, </s>, <end_of_turn>, [/INST]. */
const TOKEN_LIKE = /^\s*(<\|[^|\s]+\|>|<\/?[A-Za-z_][^<>\s]*>|\[\/?[A-Za-z_][^\]\s]*\])/;

type TurnEnd =
  | { kind: 'eot'; id: number }
  | { kind: 'not_single'; closing: string }
  | { kind: 'none'; after: string };

export interface TemplateProbe {
  findings: Finding[];
  eot: EotInfo | undefined;
  /** The probe conversation as rendered (for the BOS check). */
  text: string | undefined;
}

export function templateMissingFinding(folder: ModelFolder): Finding {
  return {
    code: 'TEMPLATE_MISSING',
    severity: 'error',
    message: 'The model folder has no chat_template and none was given, so there is no way to know how turns end.',
    evidence: {
      file: `${folder.dir}/tokenizer_config.json`,
      chat_template: null,
      eos_token: folder.eosToken ?? null,
      assumed_for_the_rest_of_this_report: 'chatml (--template chatml)',
    },
    hint: '--template chatml (adds <|im_start|>/<|im_end|> as special tokens) or --template path/to/template.jinja',
  };
}

function isWs(s: string): boolean {
  return /^\s*$/.test(s);
}

function renderProbe(setup: TokenizerSetup): { rendered: RenderedChat } | { error: string } {
  let lastError = 'no probe conversation rendered';
  for (const conv of SAMPLE) {
    try {
      return { rendered: renderWithSpans(setup.template, conv, setup.vars) };
    } catch (e) {
      // A template may reject one probe (e.g. system turns); try the next.
      if (isChatsftError(e) && e.code === 'TEMPLATE_ERROR') {
        lastError = e.message;
        continue;
      }
      if (isChatsftError(e)) return { error: e.message };
      throw e;
    }
  }
  return { error: lastError };
}

export async function checkTemplate(setup: TokenizerSetup): Promise<TemplateProbe> {
  const where = setup.template.origin === 'file' ? (setup.template.path ?? 'template file') : `${setup.template.origin} template`;
  const probe = renderProbe(setup);
  if ('error' in probe) {
    return {
      findings: [
        {
          code: 'TEMPLATE_BROKEN',
          severity: 'error',
          message: 'chatsft cannot render the template or locate the assistant content in it, so no labels can be built.',
          evidence: { template: where, error: probe.error },
          hint: 'fix the template (or add {% generation %} tags around assistant output), or use --template chatml',
        },
      ],
      eot: undefined,
      text: undefined,
    };
  }
  const { text, spans } = probe.rendered;
  // Tokenized here rather than through tokenize/encode: one short text, and
  // plain offset arrays keep this probe independent of that module's internals.
  const enc = await setup.tokenizer.encode(text, null, { addSpecialTokens: false });
  const ids = enc.getIds();
  const offsets = enc.getOffsets(); // [start, end) in code points
  const starts = offsets.map((o) => o[0] as number);
  const ends = offsets.map((o) => o[1] as number);
  const cp = codePointIndexer(text);
  const special = (id: number | undefined): boolean => id !== undefined && setup.specialIds.has(id);

  const turnEnds: TurnEnd[] = spans.map((span) => {
    const s = cp(span.start);
    const e = cp(span.end);
    if (span.generation) {
      // A {% generation %} block may include its EOT as the last token.
      let last = -1;
      for (let i = 0; i < ids.length && (starts[i] as number) < e; i++) last = i;
      if (last >= 0 && (starts[last] as number) >= s && special(ids[last])) return { kind: 'eot', id: ids[last] as number };
    }
    let j = 0;
    while (j < ids.length && (starts[j] as number) < e) j++;
    // Skip whitespace-only tokens (Llama 2's " </s>").
    while (j < ids.length && !special(ids[j]) && (ends[j] as number) - e <= MAX_GAP && isWs(sliceCodePoints(text, e, ends[j] as number))) j++;
    if (j < ids.length && special(ids[j]) && (starts[j] as number) - e <= MAX_GAP && isWs(sliceCodePoints(text, e, starts[j] as number))) {
      return { kind: 'eot', id: ids[j] as number };
    }
    const after = sliceCodePoints(text, e, e + 40);
    const m = TOKEN_LIKE.exec(after);
    return m ? { kind: 'not_single', closing: m[1] as string } : { kind: 'none', after };
  });

  const notSingle = turnEnds.find((t): t is Extract<TurnEnd, { kind: 'not_single' }> => t.kind === 'not_single');
  if (notSingle) {
    const pieces = await setup.tokenizer.encode(notSingle.closing, null, { addSpecialTokens: false });
    const pieceIds = pieces.getIds();
    return {
      findings: [
        {
          code: 'EOT_NOT_SINGLE_TOKEN',
          severity: 'error',
          message: `The template closes assistant turns with '${notSingle.closing}', which this vocabulary does not encode as one special token, so there is no single token to learn to stop on.`,
          evidence: {
            template: where,
            closing_string: notSingle.closing,
            encodes_to: pieces.getTokens(),
            ids: pieceIds,
            token_count: pieceIds.length,
            special: pieceIds.length === 1 && special(pieceIds[0]),
          },
          hint:
            setup.template.origin === 'chatml'
              ? `add '${notSingle.closing}' to the tokenizer as a special token`
              : `--template chatml (adds <|im_start|>/<|im_end|> as special tokens), or add '${notSingle.closing}' to tokenizer.json added_tokens with "special": true and resize the embeddings`,
        },
      ],
      eot: undefined,
      text,
    };
  }
  const none = turnEnds.find((t): t is Extract<TurnEnd, { kind: 'none' }> => t.kind === 'none');
  if (none) {
    return {
      findings: [
        {
          code: 'TEMPLATE_NO_EOT',
          severity: 'error',
          message: 'The template does not close assistant turns with a special token, so a model trained on it cannot learn to stop.',
          evidence: {
            template: where,
            after_assistant_content: none.after === '' ? '(end of text)' : none.after,
            turns_without_eot: turnEnds.filter((t) => t.kind === 'none').length,
            turns_probed: turnEnds.length,
          },
          hint: 'close each assistant turn with a special token in the template (e.g. append {{ eos_token }} after the content), or use --template chatml',
        },
      ],
      eot: undefined,
      text,
    };
  }
  const eotIds = [...new Set(turnEnds.map((t) => (t as Extract<TurnEnd, { kind: 'eot' }>).id))];
  if (eotIds.length === 0) {
    return {
      findings: [
        {
          code: 'TEMPLATE_BROKEN',
          severity: 'error',
          message: 'The template rendered no assistant turn for the probe conversations, so the end of turn cannot be found.',
          evidence: { template: where, rendered_excerpt: text.slice(0, 200) },
          hint: 'check that the template prints assistant messages, or use --template chatml',
        },
      ],
      eot: undefined,
      text,
    };
  }
  const eot: EotInfo = { ids: eotIds, tokens: eotIds.map((id) => setup.tokenizer.idToToken(id) ?? '?') };
  return {
    findings: [
      {
        code: 'EOT_FOUND',
        severity: 'info',
        message: `Assistant turns end with ${eotIds.map((id) => tok(setup, id)).join(', ')}; that is the token the model must learn to emit.`,
        evidence: {
          template: where,
          eot: eotIds.map((id) => tok(setup, id)),
          generation_tags: setup.template.hasGenerationTags,
          turns_probed: turnEnds.length,
        },
        hint: '',
      },
    ],
    eot,
    text,
  };
}
