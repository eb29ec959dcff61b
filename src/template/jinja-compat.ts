/**
 * Python string semantics that `@huggingface/jinja` 0.5 lacks and real
 * templates rely on: `strip/lstrip/rstrip(chars)` ignore their argument
 * there, so Qwen3's `content.lstrip('\n')` would also eat leading spaces
 * and render differently from transformers. The library does not export its
 * value classes, so they are reached through a value it creates, and the
 * three methods are replaced on every string's builtins.
 */
import { Environment } from '@huggingface/jinja';

type Side = 'both' | 'left' | 'right';

export function pyStrip(s: string, chars: string | undefined | null, side: Side): string {
  if (chars === undefined || chars === null) {
    return side === 'both' ? s.trim() : side === 'left' ? s.trimStart() : s.trimEnd();
  }
  const set = new Set(Array.from(chars));
  const cps = Array.from(s);
  let a = 0;
  let b = cps.length;
  if (side !== 'right') while (a < b && set.has(cps[a] as string)) a++;
  if (side !== 'left') while (b > a && set.has(cps[b - 1] as string)) b--;
  return cps.slice(a, b).join('');
}

interface RuntimeValueLike {
  value: unknown;
  builtins: Map<string, unknown>;
}
type Ctor<T> = new (...args: never[]) => T;

let installed = false;

export function installJinjaCompat(): void {
  if (installed) return;
  installed = true;
  const env = new Environment();
  env.set('probe', 'x');
  const probe = env.lookupVariable('probe') as unknown as RuntimeValueLike;
  const proto = Object.getPrototypeOf(probe) as object;
  const original = Object.getOwnPropertyDescriptor(proto, 'builtins');
  const upper = probe.builtins.get('upper');
  if (!original?.get || !upper) return; // library changed shape: keep its behaviour
  const StringValue = probe.constructor as unknown as Ctor<RuntimeValueLike>;
  const FunctionValue = (upper as object).constructor as unknown as Ctor<unknown>;
  const makeString = (v: string): unknown => new (StringValue as unknown as new (v: string) => RuntimeValueLike)(v);
  const makeFn = (fn: (args: Array<{ value: unknown }>) => unknown): unknown =>
    new (FunctionValue as unknown as new (f: typeof fn) => unknown)(fn);
  const getter = original.get;
  Object.defineProperty(proto, 'builtins', {
    configurable: true,
    get(this: RuntimeValueLike) {
      const map = getter.call(this) as Map<string, unknown> & { __chatsft?: boolean };
      if (!map.__chatsft) {
        const self = this;
        const chars = (args: Array<{ value: unknown }>): string | undefined => {
          const v = args[0]?.value;
          return typeof v === 'string' ? v : undefined;
        };
        map.set('strip', makeFn((args) => makeString(pyStrip(String(self.value), chars(args), 'both'))));
        map.set('lstrip', makeFn((args) => makeString(pyStrip(String(self.value), chars(args), 'left'))));
        map.set('rstrip', makeFn((args) => makeString(pyStrip(String(self.value), chars(args), 'right'))));
        map.__chatsft = true;
      }
      return map;
    },
  });
}
