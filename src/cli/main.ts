#!/usr/bin/env node
// chatsft prepare --model DIR --data chats.jsonl --out prepared/   (see `chatsft --help`)
import { Command } from 'commander';
import { VERSION } from './common.js';

type Register = (program: Command) => void;

/**
 * Commands are loaded on demand: the engine's TensorFlow.js import alone
 * takes ~0.35 s, which `prepare`, `inspect` and `doctor` do not need.
 * `chatsft --help` (or an unknown command) loads them all.
 */
const COMMANDS: Record<string, () => Promise<Register>> = {
  prepare: async () => (await import('./prepare.js')).registerPrepare,
  inspect: async () => (await import('./inspect.js')).registerInspect,
  doctor: async () => (await import('./doctor.js')).registerDoctor,
  train: async () => (await import('./train.js')).registerTrain,
  generate: async () => (await import('./generate.js')).registerGenerate,
  chat: async () => (await import('./chat.js')).registerChat,
  eval: async () => (await import('./eval.js')).registerEval,
  demo: async () => (await import('./demo.js')).registerDemo,
  export: async () => (await import('./export.js')).registerExport,
};

// A closed pipe (`chatsft generate --data f | head`) is the reader's choice,
// not an error: stop quietly instead of crashing with an EPIPE stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
}

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

const asked = process.argv[2];
const names = asked !== undefined && asked in COMMANDS ? [asked] : Object.keys(COMMANDS);
for (const name of names) (await (COMMANDS[name] as () => Promise<Register>)())(program);

await program.parseAsync(process.argv);
