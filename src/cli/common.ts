/**
 * What every command shares: config flags derived from the schema, error
 * reporting (code + place, never a stack trace for user errors) and exit
 * codes (0 ok, 1 findings, 2 bad usage or input).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { isChatsftError } from '../errors.js';
import { flagTable, loadConfig } from '../config/load.js';
import type { SftConfig } from '../config/schema.js';
import { userErrorFromOs } from '../util/fs-errors.js';
import { installSignalCleanup } from '../util/temps.js';

export const VERSION: string = (
  JSON.parse(readFileSync(fileURLToPath(new URL('../../../package.json', import.meta.url)), 'utf8')) as { version: string }
).version;

/** Add `--config FILE` and the flags of the given config keys (top-level names or dotted paths). */
export function addConfigFlags(cmd: Command, keys: string[]): Command {
  cmd.option('--config <file>', 'YAML config (SPEC §6); flags override it');
  for (const spec of flagTable()) {
    const key = spec.path.join('.');
    if (!keys.some((k) => key === k || key.startsWith(`${k}.`))) continue;
    const flag = spec.kind === 'boolean' ? `--${spec.flag}` : `--${spec.flag} <value>`;
    const opt = new Option(flag, spec.description);
    if (spec.choices) opt.choices(spec.choices);
    cmd.addOption(opt);
    if (spec.kind === 'boolean' && spec.flag !== 'lora') cmd.addOption(new Option(`--no-${spec.flag}`).hideHelp());
  }
  return cmd;
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

/** The config from `--config` and the command's flags. */
export function configFrom(opts: Record<string, unknown>): SftConfig {
  const flags: Record<string, string | boolean | undefined> = {};
  for (const spec of flagTable()) {
    const v = opts[camel(spec.flag)];
    if (typeof v === 'string' || typeof v === 'boolean') flags[spec.flag] = v;
  }
  return loadConfig({ ...(typeof opts['config'] === 'string' ? { file: opts['config'] } : {}), flags });
}

/** Run a command body; user errors print `error[CODE] where: message` and exit 2. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<number | void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    // Ctrl-C / SIGTERM remove in-progress temp output and exit 130 / 143.
    installSignalCleanup();
    try {
      const code = await fn(...args);
      process.exitCode = code ?? 0;
    } catch (caught) {
      // An OS error (EACCES, ENOSPC, EISDIR…) is the user's to fix: say which path and why.
      const e = userErrorFromOs(caught);
      if (isChatsftError(e)) {
        process.stderr.write(`error[${e.code}] ${e.message}\n`);
      } else {
        const err = e as Error;
        process.stderr.write(`error[INTERNAL] ${err?.message ?? String(e)}\n`);
        if (process.env['CHATSFT_DEBUG']) process.stderr.write(`${err?.stack ?? ''}\n`);
        else process.stderr.write('(set CHATSFT_DEBUG=1 for a stack trace, and please report it)\n');
      }
      process.exitCode = 2;
    }
  };
}

/** Colour only on a TTY and when NO_COLOR is unset. */
export function useColor(stream: NodeJS.WriteStream): boolean {
  return Boolean(stream.isTTY) && !process.env['NO_COLOR'] && process.env['TERM'] !== 'dumb';
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
