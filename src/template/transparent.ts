/**
 * A static proof that lets span finding skip the verification render:
 * a template is content-transparent when every `x.content` / `x['content']`
 * it reads flows straight into the output, alone or through `+`/`~`
 * concatenations (OpenHermes' ChatML is). Wrapping content in sentinels
 * then changes the output only by the sentinels, for every conversation, so
 * "marked render minus sentinels == plain render" holds without rendering
 * twice. Any other use — a filter (`| trim`), a method (`.strip()`), a test
 * (`if message.content`), an assignment (`set c = …`), a captured block — and
 * the per-example check runs as usual.
 */
type Node = { type?: string; [key: string]: unknown };

/** Statement lists whose expressions are printed. */
const OUTPUT_LISTS: Record<string, string[]> = {
  Program: ['body'],
  For: ['body', 'defaultBlock'],
  If: ['body', 'alternate'],
  Macro: ['body'],
};

function isContentAccess(n: Node): boolean {
  if (n.type !== 'MemberExpression') return false;
  const p = n['property'] as Node | undefined;
  return (p?.type === 'StringLiteral' || (p?.type === 'Identifier' && n['computed'] === false)) && p['value'] === 'content';
}

function isConcat(n: Node): boolean {
  const op = n['operator'] as { value?: string } | undefined;
  return n.type === 'BinaryExpression' && (op?.value === '+' || op?.value === '~');
}

export function isContentTransparent(program: unknown): boolean {
  let ok = true;
  // `printed`: this node is an element of an output list, or a `+` operand of such a node.
  const visit = (node: Node, printed: boolean): void => {
    if (!ok) return;
    if (isContentAccess(node) && !printed) {
      ok = false;
      return;
    }
    const outputKeys = OUTPUT_LISTS[node.type ?? ''] ?? [];
    for (const [key, value] of Object.entries(node)) {
      if (Array.isArray(value)) {
        const out = outputKeys.includes(key);
        for (const child of value) if (child && typeof child === 'object') visit(child as Node, out);
      } else if (value && typeof value === 'object' && 'type' in (value as object)) {
        const child = value as Node;
        const stillPrinted = printed && isConcat(node) && (key === 'left' || key === 'right');
        visit(child, stillPrinted);
      }
    }
  };
  visit(program as Node, false);
  return ok;
}
