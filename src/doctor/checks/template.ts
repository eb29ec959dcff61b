/**
 * Template checks: is there a template, does it close assistant turns with a
 * token, and is that token one special token of this vocabulary? Read from
 * the shared template probe (template/probe.ts), so doctor, eval and export
 * agree on the EOT and the stop ids.
 */
import type { ModelFolder } from '../../model/folder.js';
import type { TokenizerSetup } from '../../tokenize/setup.js';
import { probeTemplate, type TemplateProbe } from '../../template/probe.js';
import { templateWhere } from '../../template/spans.js';
import { tok, type EotInfo, type EvidenceValue, type Finding } from '../types.js';

export interface TemplateCheck {
  findings: Finding[];
  eot: EotInfo | undefined;
  /** The shared template probe (template/probe.ts). */
  probe: TemplateProbe;
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

export async function checkTemplate(setup: TokenizerSetup): Promise<TemplateCheck> {
  const where = templateWhere(setup.template);
  const probe = await probeTemplate(setup);
  const problem = probe.problem;
  if (problem?.code === 'TEMPLATE_BROKEN') {
    return {
      findings: [
        {
          code: 'TEMPLATE_BROKEN',
          severity: 'error',
          message: 'chatsft cannot render the template or locate the assistant turns in it, so no labels can be built.',
          evidence: { template: where, error: problem.message },
          hint: 'fix the template (or add {% generation %} tags around assistant output), or use --template chatml',
        },
      ],
      eot: undefined,
      probe,
    };
  }
  if (problem?.code === 'EOT_NOT_SINGLE_TOKEN' && problem.closing) {
    const pieces = await setup.tokenizer.encode(problem.closing, null, { addSpecialTokens: false });
    const pieceIds = pieces.getIds();
    return {
      findings: [
        {
          code: 'EOT_NOT_SINGLE_TOKEN',
          severity: 'error',
          message: `The template closes assistant turns with '${problem.closing}', which this vocabulary does not encode as one special token, so there is no single token to learn to stop on.`,
          evidence: {
            template: where,
            closing_string: problem.closing,
            encodes_to: pieces.getTokens(),
            ids: pieceIds,
            token_count: pieceIds.length,
            special: pieceIds.length === 1 && setup.specialIds.has(pieceIds[0] as number),
          },
          hint:
            setup.template.origin === 'chatml'
              ? `add '${problem.closing}' to the tokenizer as a special token`
              : `--template chatml (adds <|im_start|>/<|im_end|> as special tokens), or add '${problem.closing}' to tokenizer.json added_tokens with "special": true and resize the embeddings`,
        },
      ],
      eot: undefined,
      probe,
    };
  }
  if (problem) {
    return {
      findings: [
        {
          code: 'TEMPLATE_NO_EOT',
          severity: 'error',
          message: 'The template does not close assistant turns with a special token, so a model trained on it cannot learn to stop.',
          evidence: { template: where, after_assistant_content: problem.after ? problem.after : '(end of text)' },
          hint: 'close each assistant turn with a special token in the template (e.g. append {{ eos_token }} after the content), or use --template chatml',
        },
      ],
      eot: undefined,
      probe,
    };
  }
  const eot: EotInfo = {
    ids: probe.eotIds,
    tokens: probe.eotIds.map((id) => setup.tokenizer.idToToken(id) ?? '?'),
    stopIds: probe.stopIds,
  };
  const closings: Record<string, EvidenceValue> = {};
  for (const c of probe.closings) closings[c.kind] = c.ids.map((id) => tok(setup, id)).join(' ');
  const findings: Finding[] = [
    {
      code: 'EOT_FOUND',
      severity: 'info',
      message:
        `Assistant turns end with ${probe.closings.map((c) => `${c.ids.map((id) => tok(setup, id)).join(' ')} (${c.kind.replace('_', ' ')})`).join(', ')}; ` +
        `a runtime must stop on ${probe.stopIds.map((id) => tok(setup, id)).join(', ')}.`,
      evidence: {
        template: where,
        eot: probe.eotIds.map((id) => tok(setup, id)),
        stop_ids: probe.stopIds.map((id) => tok(setup, id)),
        closing_by_turn_kind: closings,
        tool_calls_supervised: probe.closings.some((c) => c.kind === 'tool_call'),
        drops_earlier_reasoning: probe.dropsEarlierReasoning,
        generation_tags: setup.template.hasGenerationTags,
      },
      hint: '',
    },
  ];
  if (probe.dropsEarlierReasoning) {
    findings.push({
      code: 'REASONING_DROPPED',
      severity: 'info',
      message:
        'The template drops the reasoning of earlier assistant turns: those tokens are not in the rows and are not supervised; only the reasoning of turns after the last user message is learned.',
      evidence: { template: where },
      hint: 'split multi-turn reasoning conversations into one example per turn to supervise every reasoning trace',
    });
  }
  const pp = probe.promptIsPrefix;
  if (pp && !pp.ok) {
    findings.push({
      code: 'PROMPT_NOT_PREFIX',
      severity: 'warning',
      message: `The inference prompt (add_generation_prompt=True) does not tokenize as a prefix of the training row (token ${pp.at}): at inference the model continues from tokens it never saw in training there.`,
      evidence: { template: where, position: pp.at, prompt_tokens: pp.prompt, training_tokens: pp.row },
      hint: 'usually a token that joins the end of the turn header with the start of the reply; chatsft masks that token, but generations may start differently than trained',
    });
  }
  return { findings, eot, probe };
}
