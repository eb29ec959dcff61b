/**
 * Operating-system errors as user errors, and a folder creation that always
 * ends. Node's fs errors carry `code` (ENOENT…), `syscall` and `path`; the
 * user should read "cannot write /x/out: permission denied (EACCES)", never
 * `error[INTERNAL]`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';

/** What each errno means to someone running a command. */
const CAUSES: Record<string, string> = {
  ENOENT: 'no such file or folder',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a folder, not a file',
  ENOTDIR: 'a part of the path is a file, not a folder',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EEXIST: 'already exists',
  ENOTEMPTY: 'folder is not empty',
  EMFILE: 'too many open files (raise `ulimit -n`)',
  ENFILE: 'too many open files in the system',
  EBUSY: 'busy (in use by another process)',
  EXDEV: 'cannot move across file systems',
  ENAMETOOLONG: 'name too long',
  ELOOP: 'too many symbolic links',
  EIO: 'input/output error (failing disk?)',
  EFBIG: 'file too large',
  EINVAL: 'invalid argument for this file system',
  ETXTBSY: 'file busy',
};

const VERBS: Record<string, string> = {
  open: 'cannot open',
  read: 'cannot read',
  write: 'cannot write',
  mkdir: 'cannot create folder',
  rmdir: 'cannot remove',
  rm: 'cannot remove',
  unlink: 'cannot remove',
  rename: 'cannot rename',
  stat: 'cannot access',
  lstat: 'cannot access',
  scandir: 'cannot list',
  opendir: 'cannot list',
  copyfile: 'cannot copy',
  fsync: 'cannot flush',
  realpath: 'cannot resolve',
  access: 'cannot access',
  symlink: 'cannot link',
};

interface ErrnoLike {
  code?: unknown;
  syscall?: unknown;
  path?: unknown;
  dest?: unknown;
}

/** Whether `e` is an fs error with an errno code we can explain. */
export function isOsError(e: unknown): e is NodeJS.ErrnoException {
  if (typeof e !== 'object' || e === null) return false;
  const code = (e as ErrnoLike).code;
  return typeof code === 'string' && /^E[A-Z]+$/.test(code) && typeof (e as ErrnoLike).syscall === 'string';
}

/**
 * The user error for an OS error: `where` is the path (the error's own, or
 * the one the caller knows; `preferWhere`: the caller's, e.g. the final name
 * of a file written through a temp), the message says the operation and the cause.
 * Anything that is not an OS error is returned unchanged.
 */
export function userErrorFromOs(e: unknown, where?: string, preferWhere = false): unknown {
  if (!isOsError(e)) return e;
  const err = e as NodeJS.ErrnoException & ErrnoLike;
  const code = err.code as string;
  const syscall = String(err.syscall);
  const p = typeof err.path === 'string' && !(preferWhere && where) ? err.path : where;
  const dest = typeof err.dest === 'string' && !preferWhere ? ` → ${err.dest}` : '';
  const cause = CAUSES[code] ?? err.message.replace(/^[A-Z]+: /, '').split(',')[0] ?? code;
  const verb = VERBS[syscall] ?? `${syscall} failed`;
  return new ChatsftError('IO_ERROR', `${verb}${dest}: ${cause} (${code})`, p);
}

/** Run `fn`, turning an OS error into a user error that names `where` when the error has no path. */
export function withPath<T>(where: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw userErrorFromOs(e, where);
  }
}

/** Pseudo file systems where no output belongs (proc, sysfs, cgroup, debugfs…), by statfs magic. */
const PSEUDO_FS: Record<number, string> = {
  0x9fa0: 'procfs',
  0x62656572: 'sysfs',
  0x27e0eb: 'cgroup',
  0x63677270: 'cgroup2',
  0x64626720: 'debugfs',
  0x74726163: 'tracefs',
  0x73636673: 'securityfs',
};

/**
 * Create `dir` and its missing parents, one level at a time and never with
 * `recursive: true`: Node 20's recursive mkdir loops forever on procfs
 * (mkdir returns ENOENT although the parent exists). Walks up to the first
 * existing ancestor, refuses when that is not a folder or lies on a pseudo
 * file system, then creates each missing part. `forPath` is the output the
 * folder is for, named in errors.
 */
export function ensureDir(dir: string, forPath?: string): void {
  const target = path.resolve(dir);
  const named = forPath ?? target;
  const missing: string[] = [];
  let cur = target;
  for (;;) {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(cur);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') throw userErrorFromOs(e, cur);
    }
    if (st) {
      if (!st.isDirectory()) {
        throw new ChatsftError('IO_ERROR', `cannot create folder ${target}: ${cur} is a file, not a folder (ENOTDIR)`, named);
      }
      break;
    }
    missing.push(cur);
    const parent = path.dirname(cur);
    if (parent === cur) break;
    cur = parent;
  }
  let fsType: string | undefined;
  try {
    fsType = PSEUDO_FS[fs.statfsSync(cur).type];
  } catch {
    fsType = undefined; // statfs is a courtesy; mkdir below still fails cleanly
  }
  if (fsType) throw new ChatsftError('IO_ERROR', `cannot write output here: ${cur} is on ${fsType}, a pseudo file system`, named);
  for (const p of missing.reverse()) {
    try {
      fs.mkdirSync(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // Created meanwhile by another process: fine if it is a folder.
      if (code === 'EEXIST' && fs.statSync(p).isDirectory()) continue;
      throw userErrorFromOs(e, p);
    }
  }
}
