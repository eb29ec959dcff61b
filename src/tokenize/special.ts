/**
 * Finding special-token text inside message content (SPEC §3): the
 * tokenizer would turn a literal `<|im_end|>` typed by a user into a real
 * control token, i.e. an injected turn end.
 */
export interface SpecialMatcher {
  /** The first special-token string found in `text`, if any. */
  find(text: string): string | undefined;
}

export function specialMatcher(specials: string[]): SpecialMatcher {
  // Bucket by the first two characters so a scan costs one Map lookup per
  // candidate position even with thousands of added tokens (Gemma has 6 k).
  const buckets = new Map<string, string[]>();
  const firstChars = new Set<string>();
  for (const s of specials) {
    if (s.length === 0) continue;
    const key = s.slice(0, 2);
    const list = buckets.get(key) ?? [];
    list.push(s);
    buckets.set(key, list);
    firstChars.add(s[0] as string);
  }
  for (const list of buckets.values()) list.sort((a, b) => b.length - a.length);
  const escaped = [...firstChars].map((c) => c.replace(/[\\\]^-]/g, '\\$&')).join('');
  const starter = escaped ? new RegExp(`[${escaped}]`, 'g') : undefined;
  return {
    find(text: string): string | undefined {
      if (!starter) return undefined;
      starter.lastIndex = 0;
      let m: RegExpExecArray | null;
      while ((m = starter.exec(text)) !== null) {
        const list = buckets.get(text.slice(m.index, m.index + 2));
        if (list) for (const s of list) if (text.startsWith(s, m.index)) return s;
        // One-character specials live under a one-character key.
        const single = buckets.get(text[m.index] as string);
        if (single) for (const s of single) if (text.startsWith(s, m.index)) return s;
      }
      return undefined;
    },
  };
}
