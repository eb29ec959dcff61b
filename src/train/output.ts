/**
 * Who owns `output_dir`. A run folder carries `chatsft-run.json`, written
 * when the run starts; `train` writes only into a missing or empty folder,
 * continues its own run with --resume, replaces its own run with
 * --overwrite (the old one is moved aside and deleted only when the new
 * run succeeds), and refuses everything else — always the base model's
 * folder and any folder holding the inputs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ChatsftError } from '../errors.js';
import { checkNotInput, moveAside, writeJsonAtomic } from '../util/atomic.js';
import { ensureDir, userErrorFromOs } from '../util/fs-errors.js';
import { sweepStale } from '../util/temps.js';
import { CHECKPOINT_DIR } from './checkpoint.js';
import { METRICS_FILE } from './metrics.js';

export const RUN_MARKER = 'chatsft-run.json';

/** Why `dir` is not a chatsft training run (null when it is; runs from before the marker are recognised by their files). */
export function notRunFolder(dir: string): string | null {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, RUN_MARKER), 'utf8')) as { generator?: unknown };
    if (m.generator === 'chatsft') return null;
  } catch {
    // no marker, or not JSON: look for an older run's files
  }
  const has = (f: string): boolean => fs.existsSync(path.join(dir, f));
  if (has(METRICS_FILE) && (has('loss.svg') || has(path.join(CHECKPOINT_DIR, 'trainer_state.json')))) return null;
  return `output_dir is not empty and is not a chatsft training run (no ${RUN_MARKER})`;
}

export interface RunDirOptions {
  overwrite?: boolean;
  resume?: boolean;
  /** The base model folder and data paths: never written into or replaced. */
  inputs: string[];
  onNote?: (line: string) => void;
}

/** Settle what may happen to `outputDir`; `release(success)` finishes an --overwrite (deletes or restores the old run). */
export function claimRunDir(outputDir: string, o: RunDirOptions): { release: (success: boolean) => void } {
  const out = path.resolve(outputDir);
  const none = { release: () => {} };
  if (o.resume && o.overwrite)
    throw new ChatsftError('USAGE', '--resume continues a run and --overwrite replaces it: pass one of them', out);
  checkNotInput(out, o.inputs, 'output_dir');
  // An --overwrite killed with SIGKILL left the earlier run in `.NAME.old-PID`: put back if nothing replaced it, else reported.
  for (const n of sweepStale(path.dirname(out), path.basename(out), undefined, true)) o.onNote?.(n);
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw userErrorFromOs(e, out);
  }
  if (st && !st.isDirectory()) throw new ChatsftError('OUTPUT_REFUSED', 'output_dir is a file, not a folder', out);
  const empty = !st || fs.readdirSync(out).length === 0;
  const mark = (): void =>
    writeJsonAtomic(path.join(out, RUN_MARKER), { generator: 'chatsft', kind: 'train', created: new Date().toISOString() });
  if (empty) {
    if (o.resume) throw new ChatsftError('CHECKPOINT_INVALID', 'nothing to resume: the folder is empty or missing', out);
    ensureDir(out);
    mark();
    return none;
  }
  const why = notRunFolder(out);
  if (why !== null)
    throw new ChatsftError(
      'OUTPUT_REFUSED',
      `${why}; chatsft never writes into or replaces it, even with --overwrite. Choose another output_dir`,
      out,
    );
  if (o.resume) {
    // Temps of killed writers inside the run (checkpoints are recovered by findCheckpoint).
    for (const n of sweepStale(out, undefined, (name) => name.startsWith(`${CHECKPOINT_DIR}.`))) o.onNote?.(n);
    if (!fs.existsSync(path.join(out, RUN_MARKER))) mark();
    return none;
  }
  if (!o.overwrite) {
    throw new ChatsftError(
      'USAGE',
      'output_dir holds an earlier training run (pass --resume to continue it or --overwrite to replace it)',
      out,
    );
  }
  const aside = moveAside(out);
  try {
    ensureDir(out);
    mark();
  } catch (e) {
    aside.release(false);
    throw e;
  }
  return { release: aside.release };
}
