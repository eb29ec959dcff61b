// chatsft chat --model out/ [--system "Be brief."]   (then type; /reset clears the history, /exit quits; stdin may be piped)
import type { Command } from 'commander';
import { createInterface } from 'node:readline';
import type { Message } from '../data/conversations.js';
import { engineStepModel, generate, type RowResult } from '../generate/index.js';
import { promptIds } from '../eval/runtime.js';
import { action, addConfigFlags, configFrom } from './common.js';
import { addSamplingFlags, endingNote, loadGenerator, samplingFrom, streamDecoder } from './generate.js';
import { ChatsftError } from '../errors.js';
import { certainlyOver } from '../data/limits.js';
import { checkKvCacheFits, checkNewTokensFit } from '../generate/limits.js';

export function registerChat(program: Command): void {
  const cmd = program.command('chat').description('multi-turn chat in the terminal (streams tokens; /reset, /exit)');
  addConfigFlags(cmd, ['model', 'template']).option('--system <text>', 'system message at the start of every conversation');
  addSamplingFlags(cmd, 256).action(
    action(async (opts: Record<string, unknown>) => {
      const cfg = configFrom(opts);
      if (!cfg.model) throw new ChatsftError('USAGE', 'missing --model DIR');
      const s = samplingFrom(opts, 256);
      const { setup, model, runtime } = await loadGenerator(cfg.model, cfg.template);
      const interactive = Boolean(process.stdin.isTTY);
      const system: Message[] = opts['system'] ? [{ role: 'system', content: String(opts['system']) }] : [];
      let history: Message[] = [...system];
      const maxPositions = model.config.maxPositionEmbeddings;
      checkNewTokensFit(s.maxNewTokens, maxPositions);
      checkKvCacheFits(model.config, 1, s.maxNewTokens + 1);
      const room = maxPositions - s.maxNewTokens; // prompt tokens a turn may use
      let kept: Message[] = history; // the history before the message being sent
      /** A message that cannot fit is refused with a note; the session goes on with the history it had. */
      const refuse = (why: string): void => {
        history = kept;
        process.stderr.write(
          `(message not sent: ${why}; the model has max_position_embeddings ${maxPositions} and --max-new-tokens is ${s.maxNewTokens}: send something shorter, /reset, or lower --max-new-tokens)\n`,
        );
      };

      if (interactive) process.stderr.write('chat: type a message; /reset clears the history, /exit quits\n');
      const rl = createInterface({
        input: process.stdin,
        ...(interactive ? { output: process.stdout, prompt: '> ' } : {}),
        terminal: interactive,
      });
      if (interactive) rl.prompt();
      let turn = 0;
      for await (const raw of rl) {
        const line = raw.trim();
        if (line === '/exit' || line === '/quit') break;
        if (line === '/reset') {
          history = [...system];
          process.stderr.write('(history cleared)\n');
        } else if (line !== '') {
          kept = [...history];
          history.push({ role: 'user', content: line });
          // Characters first: a 200 KB line is refused without being tokenized or prefilled.
          const over = certainlyOver(setup.tokenizer, { messages: [...system, { role: 'user', content: line }] }, room);
          if (over) {
            refuse(`${over.chars} characters cannot fit in ${room} tokens`);
            if (interactive) rl.prompt();
            continue;
          }
          let ids = await promptIds(setup, history);
          // Keep within the model's positions: drop the oldest exchanges first.
          while (ids.length + s.maxNewTokens > maxPositions && history.length > system.length + 1) {
            history.splice(system.length, 2);
            ids = await promptIds(setup, history);
          }
          if (ids.length > room) {
            refuse(
              `it is ${ids.length} tokens with the template${system.length ? ' and --system' : ''}, more than the ${room} left for a prompt`,
            );
            if (interactive) rl.prompt();
            continue;
          }
          try {
            checkKvCacheFits(model.config, 1, ids.length + s.maxNewTokens);
          } catch (e) {
            refuse((e as Error).message);
            if (interactive) rl.prompt();
            continue;
          }
          const dec = streamDecoder(setup);
          let pending: Promise<void> = Promise.resolve();
          const [r] = await generate(engineStepModel(model), [ids], {
            maxNewTokens: Math.max(1, Math.min(s.maxNewTokens, maxPositions - ids.length)),
            stopIds: runtime.stopIds,
            temperature: s.temperature,
            topK: s.topK,
            topP: s.topP,
            seed: s.seed + turn++,
            onToken: (e) => (pending = pending.then(async () => void process.stdout.write(await dec.push(e.token)))),
          });
          await pending;
          process.stdout.write((await dec.flush()) + '\n');
          const result = r as RowResult;
          if (result.stoppedBy === null) process.stderr.write(`[${endingNote(setup, result, s.maxNewTokens)}]\n`);
          // Special tokens are left out of the history: a runaway's <|im_start|> must not become a real turn.
          history.push({ role: 'assistant', content: result.tokens.length ? await setup.tokenizer.decode(result.tokens, true) : '' });
        }
        if (interactive) rl.prompt();
      }
      rl.close();
    }),
  );
}
