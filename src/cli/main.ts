#!/usr/bin/env node
// chatsft prepare --model DIR --data chats.jsonl --out prepared/   (see `chatsft --help`)
import { Command } from 'commander';
import { VERSION } from './common.js';
import { registerPrepare } from './prepare.js';
import { registerInspect } from './inspect.js';
import { registerDoctor } from './doctor.js';
import { registerTrain } from './train.js';
import { registerGenerate } from './generate.js';
import { registerChat } from './chat.js';
import { registerEval } from './eval.js';
import { registerDemo } from './demo.js';
import { registerExport } from './export.js';

const program = new Command()
  .name('chatsft')
  .description('Supervised fine-tuning of chat models that learn to stop.')
  .version(VERSION)
  .showHelpAfterError()
  .configureOutput({ outputError: (s, write) => write(s) });
program.exitOverride((err) => {
  // Commander's own usage errors exit 2 (SPEC §2); help and version exit 0.
  process.exit(err.exitCode === 0 ? 0 : 2);
});

registerPrepare(program);
registerInspect(program);
registerDoctor(program);
registerTrain(program);
registerGenerate(program);
registerChat(program);
registerEval(program);
registerDemo(program);
registerExport(program);

await program.parseAsync(process.argv);
