/**
 * In-progress temporary output: a registry the atomic writers fill, signal
 * handlers that empty it on Ctrl-C / SIGTERM, and a sweep that reclaims the
 * temps a killed process (SIGKILL, power loss) left beside an output.
 *
 * Temp names carry the writer's pid so the sweep can tell a dead writer's
 * leftovers from a live one's:
 *   `.out.partial-PID` / `.out.old-PID`      (folders being built / moved aside)
 *   `file.tmp-PID-TIME`, `.out.tmp-PID-TIME` (files and folders being written)
 *   `checkpoint.tmp-PID`, `checkpoint.old-PID` (handled by train/checkpoint.ts)
 */
import fs from 'node:fs';
import path from 'node:path';

/** A temp to delete on interrupt, or a moved-aside original to put back over `restoreTo`. */
interface Entry {
  path: string;
  restoreTo?: string;
}

const live = new Map<string, Entry>();

export function registerTemp(p: string): void {
  live.set(p, { path: p });
}

/** `old` holds what was at `final` before this process moved it aside; an interrupt puts it back. */
export function registerAside(old: string, final: string): void {
  live.set(old, { path: old, restoreTo: final });
}

export function unregisterTemp(p: string): void {
  live.delete(p);
}

/** Delete every registered temp and restore every moved-aside original; returns what was done. */
export function cleanupTemps(): string[] {
  const done: string[] = [];
  // Temps first: a restore may need the final name a temp was being renamed to.
  const entries = [...live.values()].sort((a, b) => Number(a.restoreTo !== undefined) - Number(b.restoreTo !== undefined));
  for (const e of entries) {
    try {
      if (e.restoreTo !== undefined) {
        fs.rmSync(e.restoreTo, { recursive: true, force: true });
        fs.renameSync(e.path, e.restoreTo);
        done.push(`restored ${e.restoreTo}`);
      } else if (fs.existsSync(e.path)) {
        fs.rmSync(e.path, { recursive: true, force: true });
        done.push(`removed ${e.path}`);
      }
    } catch (err) {
      done.push(`could not clean ${e.path}: ${(err as Error).message}`);
    }
    live.delete(e.path);
  }
  return done;
}

/** Run before the temps are removed on an interrupt: stop child processes that write into them. */
const hooks = new Set<() => void>();

/** `hook` runs (synchronously) on SIGINT/SIGTERM before cleanup; returns its unregister function. */
export function registerInterruptHook(hook: () => void): () => void {
  hooks.add(hook);
  return () => void hooks.delete(hook);
}

let installed = false;

/**
 * SIGINT and SIGTERM remove in-progress temps, then end the process by the
 * same signal, so a shell reports 130 / 143 (128 + signal number) and a
 * parent sees a signal death (the convention for interrupted programs).
 * Re-raising rather than `process.exit(130)`: exit waits for libuv's thread
 * pool, which hangs forever when a thread is blocked reading a FIFO or a
 * pipe (`--data /dev/stdin`). A handler only runs between synchronous
 * sections, so a rename pair (move aside, move in) is never split by it;
 * the training loop yields once per step for this.
 */
export function installSignalCleanup(): void {
  if (installed) return;
  installed = true;
  let handling = false;
  const on = (signal: NodeJS.Signals, code: number) => {
    const handler = (): void => {
      // A second Ctrl-C while cleaning up is ignored, so it cannot cut the cleanup short.
      if (handling) return;
      handling = true;
      for (const h of hooks) {
        try {
          h();
        } catch {
          // a hook that fails must not keep the temps from being removed
        }
      }
      const done = cleanupTemps();
      process.stderr.write(`\ninterrupted (${signal})${done.length ? `: ${done.join('; ')}` : ''}\n`);
      process.exitCode = code;
      // What process.exit would run (e.g. removal of the wasm threads' temp folder).
      process.emit('exit', code);
      process.removeListener(signal, handler);
      process.kill(process.pid, signal);
      // Still here only if someone else listens for the signal.
      process.exit(code);
    };
    process.on(signal, handler);
  };
  on('SIGINT', 130);
  on('SIGTERM', 143);
}

/** Whether a process with this pid exists (EPERM: it exists but is not ours). */
export function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** `.out.partial-123`, `out.tmp-123-1700000000000`, `.out.old-123` → { final: 'out', kind, pid }. */
export function parseTempName(name: string): { final: string; kind: 'partial' | 'tmp' | 'old'; pid: number } | null {
  const m = /^(.+?)\.(partial|tmp|old)-(\d+)(?:-\d+)?$/.exec(name);
  if (!m) return null;
  const raw = m[1] as string;
  // Hidden siblings (`.out.partial-PID`) belong to `out`; `file.tmp-PID-T` to `file`.
  const final = raw.startsWith('.') && raw.length > 1 ? raw.slice(1) : raw;
  // A temp of a temp (`.x.gguf.partial-PID.tmp-PID-T`, a file written atomically at a staging path) belongs to `x.gguf`.
  const inner = parseTempName(raw);
  if (inner) return { final: inner.final, kind: 'tmp', pid: Number(m[3]) };
  return { final, kind: m[2] as 'partial' | 'tmp' | 'old', pid: Number(m[3]) };
}

/**
 * Reclaim temps of dead writers in `dir`: those whose final name is `final`
 * (or any, when `final` is undefined), skipping names `skip` accepts.
 * A partial or tmp is deleted. An `.old-PID` is the original a swap moved
 * aside: it is put back when the final name is missing (the swap died
 * between its two renames), and deleted when the final name exists (the
 * swap completed) — or, with `keepOld`, only reported (a training run
 * killed during --overwrite: the final name holds the unfinished new run,
 * the `.old-PID` the previous one). Returns one line per action, for the user.
 */
export function sweepStale(dir: string, final?: string, skip?: (name: string) => boolean, keepOld = false): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const notes: string[] = [];
  for (const name of names) {
    const t = parseTempName(name);
    if (!t || (final !== undefined && t.final !== final) || skip?.(name)) continue;
    if (pidAlive(t.pid)) continue;
    const p = path.join(dir, name);
    const target = path.join(dir, t.final);
    try {
      if (t.kind === 'old' && !fs.existsSync(target)) {
        fs.renameSync(p, target);
        notes.push(`restored ${target} from ${name} (left by interrupted process ${t.pid})`);
      } else if (t.kind === 'old' && keepOld) {
        notes.push(
          `${p} holds what an interrupted --overwrite (process ${t.pid}) was replacing; delete it, or move it back to ${target}, yourself`,
        );
      } else {
        fs.rmSync(p, { recursive: true, force: true });
        notes.push(`removed ${p} (left by interrupted process ${t.pid})`);
      }
    } catch (e) {
      notes.push(`could not reclaim ${p}: ${(e as Error).message}`);
    }
  }
  return notes;
}
