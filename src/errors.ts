/**
 * Errors users see. Each carries a stable code and, where known, the place
 * that caused it ("data.jsonl:17 messages[3].role"). The CLI prints
 * `error[CODE] where: message` and exits 2; it never prints a stack trace for
 * these.
 */
export type ErrorCode =
  | 'USAGE'
  | 'CONFIG_INVALID'
  | 'FILE_MISSING'
  | 'FILE_CORRUPT'
  | 'DATA_INVALID'
  | 'TEMPLATE_ERROR'
  | 'TEMPLATE_MISSING'
  | 'TEMPLATE_SPAN'
  | 'TEMPLATE_NO_EOT'
  | 'TOKENIZER_ERROR'
  | 'LABELS_INVARIANT'
  | 'NO_EOT_SUPERVISED'
  | 'MODEL_INVALID'
  | 'CHECKPOINT_INVALID'
  | 'EXPORT_ERROR'
  | 'ENGINE_ERROR'
  /** The operating system refused a file operation (permission, missing folder, disk full…). */
  | 'IO_ERROR'
  /** An output path that chatsft will not replace (not written by chatsft, or it holds the inputs). */
  | 'OUTPUT_REFUSED'
  /** Training produced a non-finite loss or gradient. */
  | 'TRAINING_DIVERGED'
  /** An optional engine (--engine torch) whose runtime is missing or too old. */
  | 'ENGINE_UNAVAILABLE';

export class ChatsftError extends Error {
  readonly code: ErrorCode;
  readonly where: string | undefined;

  constructor(code: ErrorCode, message: string, where?: string) {
    super(where ? `${where}: ${message}` : message);
    this.name = 'ChatsftError';
    this.code = code;
    this.where = where;
  }
}

export function isChatsftError(e: unknown): e is ChatsftError {
  return e instanceof ChatsftError;
}
