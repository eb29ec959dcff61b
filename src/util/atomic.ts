/**
 * Atomic writes: every output goes to a temp name in the same folder and is
 * renamed into place, so a crash never leaves a half-written file; and
 * `replaceOutput`, the one way chatsft replaces an existing output: build
 * the new one in a temp sibling, move the old one aside, rename the new one
 * in, delete the old one only after that succeeded, put it back otherwise.
 *
 * Fault injection (tests only): CHATSFT_FAULT=`op:ERRNO[:substring]` makes
 * the named step fail as the OS would, where `op` is `write` (temp data),
 * `aside` (old → .old), `swap` (new → final) or `restore` (.old → final),
 * optionally only when the target path contains `substring`. Running as
 * root, permissions alone cannot make a rename fail, hence this seam.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { ensureDir, userErrorFromOs } from './fs-errors.js';
import { registerAside, registerTemp, sweepStale, unregisterTemp } from './temps.js';

export type FaultOp = 'write' | 'aside' | 'swap' | 'restore';

/** Throw the injected OS error for `op` on `target`, if CHATSFT_FAULT asks for it. */
export function injectFault(op: FaultOp, target: string): void {
  const spec = process.env['CHATSFT_FAULT'];
  if (!spec) return;
  for (const one of spec.split(',')) {
    const [o, code, match] = one.split(':');
    if (o !== op || !code || (match && !target.includes(match))) continue;
    const syscall = op === 'write' ? 'write' : 'rename';
    const err = new Error(`${code}: injected fault, ${syscall} '${target}'`) as NodeJS.ErrnoException;
    err.code = code;
    err.syscall = syscall;
    err.path = target;
    throw err;
  }
}

export function tempName(file: string): string {
  return `${file}.tmp-${process.pid}-${Date.now()}`;
}

function rename(op: FaultOp, from: string, to: string): void {
  injectFault(op, to);
  fs.renameSync(from, to);
}

export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  ensureDir(path.dirname(path.resolve(file)), file);
  const tmp = tempName(file);
  registerTemp(tmp);
  try {
    injectFault('write', file);
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw userErrorFromOs(e, file, true);
  } finally {
    unregisterTemp(tmp);
  }
}

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

/** Stream a large file through a descriptor (fsynced), then rename it into place. */
export function writeFdAtomic(file: string, write: (fd: number) => void): void {
  ensureDir(path.dirname(path.resolve(file)), file);
  const tmp = tempName(file);
  registerTemp(tmp);
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      injectFault('write', file);
      write(fd);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw userErrorFromOs(e, file, true);
  } finally {
    unregisterTemp(tmp);
  }
}

export interface ReplaceOptions {
  /** A folder (built inside the temp folder) or a single file (written at the temp path). */
  kind: 'dir' | 'file';
  /** Replace an existing output (only one `owner` accepts). */
  overwrite: boolean;
  /**
   * Why an existing output at the final path may NOT be replaced, or null
   * when chatsft wrote it (a prepared folder's manifest, a run marker…).
   */
  notOwned: (final: string) => string | null;
  /** Inputs (data files, the model folder) that must never be replaced or deleted. */
  protect?: string[];
  /** The flag that names the output, for messages (`--out`, `output_dir`). */
  flag?: string;
  /** Lines for the user (stale temps reclaimed). */
  onNote?: (line: string) => void;
}

/** Resolve symlinks of the longest existing prefix, so `a/../b` and links compare equal. */
export function realish(p: string): string {
  const abs = path.resolve(p);
  let head = abs;
  const tail: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync(head), ...tail.reverse());
    } catch {
      const parent = path.dirname(head);
      if (parent === head) return abs;
      tail.push(path.basename(head));
      head = parent;
    }
  }
}

/** Whether `inner` is `outer` or lies inside it. */
export function within(inner: string, outer: string): boolean {
  const rel = path.relative(outer, inner);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/**
 * Refuse an output path that would replace or delete an input: the output
 * is an input, or an input lies inside the output folder.
 */
export function checkNotInput(final: string, protect: string[], flag: string): void {
  const out = realish(final);
  for (const p of protect) {
    const inp = realish(p);
    if (within(inp, out)) {
      const what = inp === out ? 'is' : 'contains';
      throw new ChatsftError('OUTPUT_REFUSED', `${flag} ${what} an input of this command (${p}); choose another output path`, final);
    }
  }
}

/**
 * Check the final path: free, or an existing output chatsft may replace.
 * Throws the user error that explains a refusal; returns whether it exists.
 */
export function checkOutput(finalPath: string, opts: ReplaceOptions): boolean {
  const final = path.resolve(finalPath);
  const flag = opts.flag ?? '--out';
  checkNotInput(final, opts.protect ?? [], flag);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(final);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw userErrorFromOs(e, final);
  }
  if (st.isSymbolicLink()) {
    // Replacing would swap the link itself, not what it points to: ask for the real path.
    throw new ChatsftError(
      'OUTPUT_REFUSED',
      `${flag} is a symbolic link (to ${fs.readlinkSync(final)}); pass the path it points to`,
      final,
    );
  }
  if (opts.kind === 'dir') {
    if (!st.isDirectory())
      throw new ChatsftError('OUTPUT_REFUSED', `${flag} must be a folder, and this is a file; choose another path`, final);
    if (fs.readdirSync(final).length === 0) return true;
  } else if (st.isDirectory()) {
    throw new ChatsftError('OUTPUT_REFUSED', `${flag} must be a file path, and this is a folder`, final);
  }
  const why = opts.notOwned(final);
  if (why !== null) {
    throw new ChatsftError(
      'OUTPUT_REFUSED',
      `${why}; chatsft replaces only output it wrote itself, even with --overwrite. Remove it yourself or choose another path`,
      final,
    );
  }
  if (!opts.overwrite) {
    throw new ChatsftError(
      'USAGE',
      `output ${opts.kind === 'dir' ? 'folder' : 'file'} exists and is not empty (pass --overwrite to replace it)`,
      final,
    );
  }
  return true;
}

interface Replacing {
  final: string;
  tmp: string;
  old: string;
}

function beginReplace(finalPath: string, opts: ReplaceOptions): Replacing {
  const final = path.resolve(finalPath);
  const dir = path.dirname(final);
  const base = path.basename(final);
  // Reclaim first: a dead swap's `.old-PID` may be put back at the final name, which the check must then see.
  for (const n of sweepStale(dir, base)) opts.onNote?.(n);
  checkOutput(final, opts);
  ensureDir(dir, final);
  const r = { final, tmp: path.join(dir, `.${base}.partial-${process.pid}`), old: path.join(dir, `.${base}.old-${process.pid}`) };
  fs.rmSync(r.tmp, { recursive: true, force: true });
  registerTemp(r.tmp);
  try {
    if (opts.kind === 'dir') fs.mkdirSync(r.tmp);
  } catch (e) {
    unregisterTemp(r.tmp);
    throw userErrorFromOs(e, final, true);
  }
  return r;
}

function abortReplace(r: Replacing, e: unknown): unknown {
  fs.rmSync(r.tmp, { recursive: true, force: true });
  unregisterTemp(r.tmp);
  return renameWhere(userErrorFromOs(e), r.tmp, r.final);
}

/** An error about a file inside the temp folder `tmp`, re-addressed to the output `final` it was for (the temp is gone). */
export function renameWhere(err: unknown, tmp: string, final: string): unknown {
  if (err instanceof ChatsftError && err.where?.startsWith(tmp)) {
    const own = err.message.slice(err.where.length + 2);
    return new ChatsftError(err.code, own, final + err.where.slice(tmp.length));
  }
  return err;
}

/** Synchronous from start to end, so a signal handler cannot run between the renames. */
function commitReplace(r: Replacing, opts: ReplaceOptions): void {
  const { final, tmp, old } = r;
  try {
    if (opts.kind === 'file' || !fs.existsSync(final)) {
      // A file rename replaces the old file atomically; a new folder has nothing to move aside.
      rename('swap', tmp, final);
    } else {
      rename('aside', final, old);
      try {
        rename('swap', tmp, final);
      } catch (e) {
        try {
          rename('restore', old, final);
        } catch (e2) {
          throw new ChatsftError(
            'IO_ERROR',
            `could not put the new output in place (${(userErrorFromOs(e) as Error).message}) nor the old one back (${(userErrorFromOs(e2) as Error).message}); your previous output is intact at ${old}`,
            final,
          );
        }
        throw e;
      }
      try {
        fs.rmSync(old, { recursive: true, force: true });
      } catch (e) {
        opts.onNote?.(`replaced ${final}, but could not remove the previous output at ${old}: ${(e as Error).message}`);
      }
    }
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw userErrorFromOs(e, final);
  } finally {
    unregisterTemp(tmp);
  }
}

/**
 * Build a new output and swap it in without ever losing the old one:
 * check → reclaim dead temps → build in `.NAME.partial-PID` → move old to
 * `.NAME.old-PID` → rename new in → delete old. A failure before the swap
 * leaves the old output untouched; a failed swap puts the old one back.
 * An interrupt (SIGINT/SIGTERM) removes the partial output.
 */
export async function replaceOutput<T>(finalPath: string, build: (tmp: string) => Promise<T> | T, opts: ReplaceOptions): Promise<T> {
  const r = beginReplace(finalPath, opts);
  let result: T;
  try {
    result = await build(r.tmp);
  } catch (e) {
    throw abortReplace(r, e);
  }
  commitReplace(r, opts);
  return result;
}

/** `replaceOutput` for a synchronous build (exports). */
export function replaceOutputSync<T>(finalPath: string, build: (tmp: string) => T, opts: ReplaceOptions): T {
  const r = beginReplace(finalPath, opts);
  let result: T;
  try {
    result = build(r.tmp);
  } catch (e) {
    throw abortReplace(r, e);
  }
  commitReplace(r, opts);
  return result;
}

/**
 * Move an existing output aside for a process that writes its new output in
 * place over a long time (training): `.NAME.old-PID` is put back on an
 * interrupt or by `release(false)`, and deleted by `release(true)`.
 */
export function moveAside(final: string): { old: string; release: (success: boolean) => void } {
  const dir = path.dirname(final);
  const old = path.join(dir, `.${path.basename(final)}.old-${process.pid}`);
  try {
    rename('aside', final, old);
  } catch (e) {
    throw userErrorFromOs(e, final);
  }
  registerAside(old, final);
  return {
    old,
    release(success: boolean) {
      unregisterTemp(old);
      if (success) {
        fs.rmSync(old, { recursive: true, force: true });
        return;
      }
      fs.rmSync(final, { recursive: true, force: true });
      try {
        rename('restore', old, final);
      } catch (e) {
        throw new ChatsftError(
          'IO_ERROR',
          `could not put the previous output back (${(userErrorFromOs(e) as Error).message}); it is intact at ${old}`,
          final,
        );
      }
    },
  };
}
