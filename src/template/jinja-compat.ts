/**
 * Rendering a parsed `@huggingface/jinja` template with Python semantics,
 * where chat templates depend on them and the library (0.5) differs from
 * Jinja2 as transformers configures it:
 *
 * - `{{ none }}` prints `None`, `True`/`False` print capitalised, dicts and
 *   lists print as Python's `repr` (`{'a': 1}`), never `[object Map]`;
 * - `'a' + none` / `'a' + {…}` raise (TypeError in Python); `~` converts
 *   both sides with `str()`;
 * - `strip/lstrip/rstrip(chars)` honour `chars` and, like `| trim`, use
 *   Python's whitespace set (U+FEFF is not whitespace; `\x1c`–`\x1f` and
 *   U+0085 are).
 *
 * Nothing here patches the library: a subclass of its exported Interpreter
 * is used for chatsft's own renders only, so other users of
 * `@huggingface/jinja` in the same process keep its behaviour.
 */
import { Environment, Interpreter, Template } from '@huggingface/jinja';

type Side = 'both' | 'left' | 'right';

/** Python's `str.isspace()` set (JavaScript's `\s` minus U+FEFF plus \x1c–\x1f and U+0085). */
const PY_SPACE = /[\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

export function isPySpace(ch: string): boolean {
  return PY_SPACE.test(ch);
}

export function pyStrip(s: string, chars: string | undefined | null, side: Side): string {
  const set = chars === undefined || chars === null ? undefined : new Set(Array.from(chars));
  const strip = (c: string): boolean => (set ? set.has(c) : PY_SPACE.test(c));
  const cps = Array.from(s);
  let a = 0;
  let b = cps.length;
  if (side !== 'right') while (a < b && strip(cps[a] as string)) a++;
  if (side !== 'left') while (b > a && strip(cps[b - 1] as string)) b--;
  return cps.slice(a, b).join('');
}

/** A runtime value of the library, seen through its `type` tag (its classes are not exported). */
interface Value {
  type: string;
  value: unknown;
  builtins: Map<string, unknown>;
}
type Node = { type: string; [key: string]: unknown };

/** Python's `repr` of a string. */
function reprString(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const c = ch.codePointAt(0) as number;
    if (ch === '\\') out += '\\\\';
    else if (ch === quote) out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += '\\x' + c.toString(16).padStart(2, '0');
    else out += ch;
  }
  return out + quote;
}

function isValue(v: unknown): v is Value {
  return typeof v === 'object' && v !== null && typeof (v as Value).type === 'string';
}

/** Python's `repr` of a runtime value (inside containers). */
function pyRepr(v: Value): string {
  if (v.type === 'StringValue') return reprString(v.value as string);
  return pyStr(v);
}

/** Python's `str` of a runtime value: what `{{ x }}` prints. */
export function pyStr(v: Value): string {
  switch (v.type) {
    case 'StringValue':
      return v.value as string;
    case 'NullValue':
      return 'None';
    case 'UndefinedValue':
      return '';
    case 'BooleanValue':
      return v.value ? 'True' : 'False';
    case 'ArrayValue':
      return '[' + (v.value as unknown[]).map((x) => (isValue(x) ? pyRepr(x) : String(x))).join(', ') + ']';
    case 'TupleValue': {
      const items = (v.value as unknown[]).map((x) => (isValue(x) ? pyRepr(x) : String(x)));
      return '(' + items.join(', ') + (items.length === 1 ? ',)' : ')');
    }
    case 'ObjectValue':
    case 'KeywordArgumentsValue': {
      const entries = [...(v.value as Map<string, unknown>).entries()];
      return '{' + entries.map(([k, x]) => `${reprString(k)}: ${isValue(x) ? pyRepr(x) : String(x)}`).join(', ') + '}';
    }
    default:
      return String((v as { toString(): string }).toString());
  }
}

/** Statement nodes: their value is never printed, even when it is none. */
const STATEMENTS = new Set(['Set', 'If', 'For', 'Macro', 'Break', 'Continue', 'CallStatement', 'FilterStatement', 'Comment']);

/** Constructors of the library's value classes, reached through values it creates. */
interface Ctors {
  str: new (v: string) => Value;
  fn: new (f: (args: Value[]) => Value) => Value;
}
let ctors: Ctors | undefined;
function valueCtors(): Ctors {
  if (ctors) return ctors;
  const env = new Environment();
  env.set('s', 'x');
  const s = env.lookupVariable('s') as unknown as Value;
  const upper = s.builtins.get('upper') as object;
  ctors = {
    str: s.constructor as unknown as Ctors['str'],
    fn: upper.constructor as unknown as Ctors['fn'],
  };
  return ctors;
}

type Base = {
  evaluate(node: unknown, env: unknown): Value;
  evaluateBlock(statements: Node[], env: unknown): Value;
  evaluateBinaryExpression(node: Node, env: unknown): Value;
  evaluateMemberExpression(node: Node, env: unknown): Value;
  evaluateFor(node: Node, env: unknown): Value;
  applyFilter(operand: Value, filter: Node, env: unknown): Value;
  run(program: unknown): Value;
};
const BaseInterpreter = Interpreter as unknown as new (env: Environment) => Base;

class PyInterpreter extends BaseInterpreter {
  override evaluateBlock(statements: Node[], env: unknown): Value {
    let out = '';
    for (const st of statements) {
      const v = this.evaluate(st, env);
      if (v.type === 'UndefinedValue') continue;
      if (v.type === 'NullValue' && STATEMENTS.has(st.type)) continue;
      out += pyStr(v);
    }
    return new (valueCtors().str)(out);
  }

  override evaluateBinaryExpression(node: Node, env: unknown): Value {
    const op = (node['operator'] as { value: string }).value;
    if (op !== '~' && op !== '+') return super.evaluateBinaryExpression(node, env);
    const left = this.evaluate(node['left'], env);
    const right = this.evaluate(node['right'], env);
    if (op === '~') return new (valueCtors().str)(pyStr(left) + pyStr(right));
    const ls = left.type === 'StringValue';
    const rs = right.type === 'StringValue';
    if (ls !== rs && (ls || rs)) {
      const other = ls ? right : left;
      throw new Error(`TypeError: can only concatenate str (not "${pyTypeName(other)}") to str`);
    }
    // Numbers, lists, two strings: the library's semantics are Python's.
    return super.evaluateBinaryExpression(node, env);
  }

  override evaluateMemberExpression(node: Node, env: unknown): Value {
    const prop = node['property'] as Node | undefined;
    const name = !node['computed'] && prop?.type === 'Identifier' ? (prop['value'] as string) : undefined;
    if (name === 'strip' || name === 'lstrip' || name === 'rstrip') {
      const object = this.evaluate(node['object'], env);
      if (object.type === 'StringValue') {
        const side: Side = name === 'strip' ? 'both' : name === 'lstrip' ? 'left' : 'right';
        const { str, fn } = valueCtors();
        return new fn((args) => {
          const c = args[0];
          const chars = c && c.type === 'StringValue' ? (c.value as string) : undefined;
          return new str(pyStrip(object.value as string, chars, side));
        });
      }
    }
    return super.evaluateMemberExpression(node, env);
  }

  override evaluateFor(node: Node, env: unknown): Value {
    // Jinja2's Undefined iterates as empty (the `else` block runs); the library raises.
    const iterable = node['iterable'] as Node;
    if (iterable.type !== 'SelectExpression') {
      const v = this.evaluate(iterable, env);
      if (v.type === 'UndefinedValue') {
        const alt = node['defaultBlock'] as Node[] | undefined;
        return alt && alt.length > 0 ? this.evaluateBlock(alt, env) : new (valueCtors().str)('');
      }
    }
    return super.evaluateFor(node, env);
  }

  override applyFilter(operand: Value, filter: Node, env: unknown): Value {
    const name = filter.type === 'Identifier' ? (filter['value'] as string) : undefined;
    const { str } = valueCtors();
    // Jinja2's Undefined is '' as a string.
    if ((name === 'trim' || name === 'string') && operand.type === 'UndefinedValue') return new str('');
    if (name === 'trim' && (operand.type === 'StringValue' || operand.type === 'NullValue')) {
      return new str(pyStrip(pyStr(operand), undefined, 'both'));
    }
    if (name === 'string' && operand.type !== 'StringValue') return new str(pyStr(operand));
    return super.applyFilter(operand, filter, env);
  }
}

function pyTypeName(v: Value): string {
  const names: Record<string, string> = {
    NullValue: 'NoneType',
    UndefinedValue: 'Undefined',
    ObjectValue: 'dict',
    ArrayValue: 'list',
    TupleValue: 'tuple',
    IntegerValue: 'int',
    FloatValue: 'float',
    BooleanValue: 'bool',
  };
  return names[v.type] ?? v.type;
}

function range(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  const out: number[] = [];
  if (step > 0) for (let i = start; i < stop; i += step) out.push(i);
  else if (step < 0) for (let i = start; i > stop; i += step) out.push(i);
  return out;
}

function strftimeNow(format: string): string {
  const d = new Date();
  const pad = (n: number): string => String(n).padStart(2, '0');
  const months = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];
  return format.replace(/%([dmYyHMSbB%])/g, (_m, c: string) => {
    switch (c) {
      case 'd':
        return pad(d.getDate());
      case 'm':
        return pad(d.getMonth() + 1);
      case 'Y':
        return String(d.getFullYear());
      case 'y':
        return pad(d.getFullYear() % 100);
      case 'H':
        return pad(d.getHours());
      case 'M':
        return pad(d.getMinutes());
      case 'S':
        return pad(d.getSeconds());
      case 'b':
        return (months[d.getMonth()] as string).slice(0, 3);
      case 'B':
        return months[d.getMonth()] as string;
      default:
        return '%';
    }
  });
}

/** A template compiled once and rendered with Python semantics. */
export class PyTemplate {
  private readonly parsed: unknown;
  constructor(source: string) {
    this.parsed = (new Template(source) as unknown as { parsed: unknown }).parsed;
  }
  /** The parsed program (for static analysis). */
  get program(): unknown {
    return this.parsed;
  }
  render(items: Record<string, unknown>): string {
    // The globals the library's own Template.render sets (it does not export that helper).
    const env = new Environment();
    env.set('false', false);
    env.set('true', true);
    env.set('none', null);
    env.set('False', false);
    env.set('True', true);
    env.set('None', null);
    env.set('raise_exception', (args: unknown) => {
      throw new Error(String(args));
    });
    env.set('range', range);
    env.set('strftime_now', strftimeNow);
    for (const [k, v] of Object.entries(items)) env.set(k, v);
    return new PyInterpreter(env).run(this.parsed).value as string;
  }
}
