// chatsft inspect --model ./qwen3 --data chats.jsonl --index 3 [--html page.html]
import type { Command } from 'commander';
import fs from 'node:fs';
import { resolve } from 'node:path';
import { ChatsftError } from '../errors.js';
import { readConversations } from '../data/conversations.js';
import { certainlyOver, overLengthMessage, sizeLimit } from '../data/limits.js';
import { dataReporter } from '../data/report.js';
import { intFlag, printDataReport } from './flags.js';
import { createEncoder } from '../labels/encode.js';
import { buildView, notInspectPage, renderHtml, renderTerminal, type InspectView } from '../inspect/view.js';
import { checkOutput, replaceOutputSync, type ReplaceOptions } from '../util/atomic.js';
import { action, addConfigFlags, configFrom, printJson, useColor } from './common.js';
import { encodeOptionsFrom, PIPELINE_KEYS, setupFromConfig } from './prepare.js';

export function registerInspect(program: Command): void {
  const cmd = program.command('inspect').description('show tokens of conversations, trained vs masked, EOT highlighted');
  addConfigFlags(cmd, PIPELINE_KEYS)
    .option('--index <n>', '0-based index of the conversation among the valid lines', '0')
    .option('--count <n>', 'number of conversations to show', '1')
    .option('--html <file>', 'also write a self-contained HTML page')
    .option('--overwrite', 'replace an earlier --html page (only one chatsft inspect wrote; anything else is refused)')
    .option('--json', 'print tokens and turn counts as JSON')
    .action(
      action(async (opts: Record<string, unknown>) => {
        const cfg = configFrom(opts);
        if (!cfg.data.train) throw new ChatsftError('USAGE', 'missing --data FILE');
        const index = intFlag(opts['index'], 'index', { min: 0 });
        const count = intFlag(opts['count'], 'count', { min: 1 });
        const html = typeof opts['html'] === 'string' ? opts['html'] : undefined;
        const protect = [cfg.data.train, ...(cfg.model ? [cfg.model] : [])];
        const replacing: ReplaceOptions = {
          kind: 'file',
          overwrite: Boolean(opts['overwrite']),
          notOwned: notInspectPage,
          protect,
          flag: '--html',
          onNote: (l) => process.stderr.write(`${l}\n`),
        };
        // Refuse a page we may not replace before doing any work.
        if (html !== undefined) checkOutput(html, replacing);
        const setup = setupFromConfig(cfg);
        const encoder = createEncoder(setup, encodeOptionsFrom(cfg));
        const views: InspectView[] = [];
        // Lines read up to the last one shown are reported, as every command reports them.
        const rep = dataReporter(cfg.data.train);
        const limit = sizeLimit(setup.folder, cfg.max_length);
        let seen = 0;
        for await (const parsed of readConversations(cfg.data.train)) {
          rep.seen(parsed.line);
          if (parsed.ok === 'blank') continue;
          if (parsed.ok === false) {
            rep.drop(parsed.line, parsed.reason ?? 'invalid_data', parsed.issue.field, parsed.issue.message);
            continue;
          }
          if (seen++ < index) continue;
          const over =
            limit && (limit.source !== 'max_length' || cfg.truncation === 'drop')
              ? certainlyOver(setup.tokenizer, parsed.conversation, limit.tokens)
              : undefined;
          if (over && limit) {
            rep.drop(parsed.line, 'too_long', 'messages', overLengthMessage(over, limit));
          } else {
            const [r] = await encoder.encode([{ conversation: parsed.conversation, line: parsed.line }]);
            if (!r) continue;
            if (!r.ok) rep.drop(r.line, r.reason, r.reason, r.detail);
            else {
              rep.use();
              views.push(buildView(setup, r));
            }
          }
          if (views.length >= count || seen >= index + count) break;
        }
        printDataReport(rep.report, { quiet: false });
        if (views.length === 0) throw new ChatsftError('USAGE', `no conversation to show at index ${index}`, cfg.data.train);
        if (html !== undefined) {
          // Written at a temp sibling and renamed over the old page: never half a page, never someone else's file.
          const page = renderHtml(views, `chatsft inspect: ${cfg.data.train}`);
          replaceOutputSync(html, (tmp) => fs.writeFileSync(tmp, page), replacing);
          process.stderr.write(`wrote ${resolve(html)}\n`);
        }
        if (opts['json']) printJson({ examples: views, data_report: rep.report });
        else process.stdout.write(views.map((v) => renderTerminal(v, useColor(process.stdout))).join('\n\n') + '\n');
      }),
    );
}
