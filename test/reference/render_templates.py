"""
Reference renders of the template corpus, independent of chatsft.

Run with Debian's python3-jinja2: /usr/bin/python3 render_templates.py INDEX.json CONVERSATIONS.jsonl
Prints one JSON object: for every template and conversation, the full render
(add_generation_prompt=False) and what must be supervised in it, as character
(code point) spans:

- templates with {% generation %} blocks: the blocks' spans, tracked the way
  transformers' `return_assistant_tokens_mask` does (AssistantTracker);
- other templates: per assistant turn, the text the turn adds when the
  conversation is rendered incrementally: render(messages[:i],
  add_generation_prompt=True) must be a prefix of render(messages[:i+1]),
  which must be a prefix of the full render (rule "prefix"); a run of
  consecutive assistant messages the template merges is taken as one turn
  (rule "run"), split at the generation prompt when the template prints it
  between the messages (rule "run_split": the header is never supervised); when the prefix property fails, the final turn is still
  derived from render(all[:-1], add_generation_prompt=True) vs render(all)
  (rule "final"); any other turn is reported as "weak" (not checkable by
  prefix: e.g. templates that drop earlier reasoning): only its start and the
  content it must contain are known.

A turn ends at the last special token it renders: whitespace the template
prints after that token (ChatML's "\n") belongs to what follows, as the model
never generates it.

The environment is configured as transformers' chat_template_utils does it
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, a
tojson filter that keeps non-ASCII and does not HTML-escape, raise_exception,
strftime_now); this file re-implements that configuration, it imports nothing
from transformers.
"""
import json
import re
import sys
from contextlib import contextmanager
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


class AssistantTracker(Extension):
    """{% generation %}…{% endgeneration %}: records the character span of what the block renders."""

    tags = {"generation"}

    def __init__(self, environment):
        super().__init__(environment)
        environment.extend(activate_tracker=self.activate_tracker)
        self._rendered_blocks = None
        self._generation_indices = None

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    @jinja2.pass_eval_context
    def _generation_support(self, context, caller):
        rv = caller()
        if self._rendered_blocks is not None:
            start = len("".join(self._rendered_blocks))
            self._generation_indices.append((start, start + len(rv)))
        return rv

    @contextmanager
    def activate_tracker(self, rendered_blocks, generation_indices):
        try:
            self._rendered_blocks = rendered_blocks
            self._generation_indices = generation_indices
            yield
        finally:
            self._rendered_blocks = None
            self._generation_indices = None


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' override of Jinja's tojson: no HTML escaping, non-ASCII kept.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def compile_template(source):
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")


class Renderer:
    def __init__(self, template, kwargs):
        self.template = template
        self.kwargs = kwargs

    def render(self, messages, tools, add_generation_prompt):
        return self.template.render(
            messages=messages, tools=tools, documents=None, add_generation_prompt=add_generation_prompt, **self.kwargs
        )

    def render_tracked(self, messages, tools):
        blocks, indices = [], []
        with self.template.environment.activate_tracker(blocks, indices):
            for block in self.template.generate(
                messages=messages, tools=tools, documents=None, add_generation_prompt=False, **self.kwargs
            ):
                blocks.append(block)
        return "".join(blocks), indices


def describe_error(e):
    return f"{type(e).__name__}: {e}"


def end_of_turn(text, start, end, specials):
    """Cut whitespace after the turn's last special token (it is not generated)."""
    seg = text[start:end]
    stripped = seg.rstrip()
    if stripped != seg and any(stripped.endswith(s) for s in specials):
        return start + len(stripped)
    return end


def visible_content(message):
    """The part of an assistant message's text every template shows: the answer after any </think>."""
    c = message.get("content")
    if not isinstance(c, str):
        return ""
    if "</think>" in c:
        c = c.split("</think>")[-1]
    return c.strip()


def common_prefix(x, y):
    n = 0
    for cx, cy in zip(x, y):
        if cx != cy:
            break
        n += 1
    return n


def header_end(text, pos, specials):
    """Back off to the end of the last special token or newline at or before pos."""
    best = 0
    for s in specials:
        k = text.rfind(s, 0, pos)
        if k >= 0 and k + len(s) <= pos:
            best = max(best, k + len(s))
    k = text.rfind("\n", 0, pos)
    if k >= 0:
        best = max(best, k + 1)
    return best


def strip_trailer(f, p, specials):
    """
    Text a template prints after the last message that is the generation
    prompt again (Command R7B's tool_use template ends every render with the
    chatbot header): the longest common suffix of f and p, less its first
    special token (the closer of the turn, which p has too), when what
    remains starts with a special token.
    """
    n = 0
    while n < min(len(f), len(p)) and f[len(f) - 1 - n] == p[len(p) - 1 - n]:
        n += 1
    tail = f[len(f) - n:]
    # Align to a token boundary: the first special token inside the common suffix.
    k = next((k for k in range(len(tail)) if any(tail.startswith(x, k) for x in specials)), len(tail))
    tail = tail[k:]
    for s in specials:
        if tail.startswith(s):
            rest = tail[len(s):]
            if rest and any(rest.startswith(x) for x in specials):
                return f[: len(f) - len(rest)]
    return f


def trailer_is_ambiguous(f, p, i, messages, specials):
    """
    After an assistant message, p's text before its generation prompt is an
    assistant closer too, so the common suffix may hold more than the
    trailer: strip_trailer cannot tell where the turn ends.
    """
    return i > 0 and messages[i - 1].get("role") == "assistant" and strip_trailer(f, p, specials) != f


def turn_span(p, f, full, specials, messages, i, g=""):
    """
    The span of assistant message i in `full`, from p = render(messages[:i],
    add_generation_prompt=True) and f = render(messages[:i+1]).
    Start: where the generation prompt ends (rule "prefix"); when the turn
    does not render the generation prompt exactly (e.g. a reasoning opener
    such as "<think>\n" that the template strips from finished turns), where
    p and f diverge, backed off to the header's last special token or newline
    (rule "gen_prompt_diverges": the inference prompt is not a prefix of the
    row), provided the part of p that f lacks holds no message text.
    End: the end of f (less a trailing generation prompt, see strip_trailer),
    which must be a prefix of the full render.
    """
    if trailer_is_ambiguous(f, p, i, messages, specials):
        return None
    f = strip_trailer(f, p, specials)
    rule = "prefix"
    start = len(p)
    if not f.startswith(p):
        start, rule = diverged_start(p, f, specials, messages, i, g)
        if start is None:
            return None
    if not full.startswith(f):
        return None
    end = end_of_turn(full, start, len(f), specials)
    c = visible_content(messages[i])
    if c in f and c not in full[start:end]:  # content the template prints must be in the turn (some drop it beside tool calls)
        return None
    return {"start": start, "end": end, "rule": rule, "messages": [i]}


def diverged_start(p, f, specials, messages, i, g=""):
    """
    Where turn i starts in f when p (the prompt with the generation prompt)
    is not a prefix of f. (None, _) when it cannot be told.
    - The generation prompt is in f intact, after whitespace the previous
      turn prints only when it is not last (Tulu's "\n" after eos): the
      turn starts after it (rule "prefix").
    - Otherwise p and f diverge after the header (a reasoning opener such as
      "<think>\n" that finished turns do not render): start at the
      divergence, backed off to the header's last special token or newline
      (rule "gen_prompt_diverges"), provided what p has there is no message
      text and does not reappear later in f (a moved header).
    """
    start = header_end(f, common_prefix(p, f), specials)
    lost = p[start:]
    if any(isinstance(m.get("content"), str) and m["content"].strip() and m["content"].strip() in lost for m in messages[:i]):
        return None, None
    # The generation prompt g (what add_generation_prompt=True adds) intact in f, after scaffolding
    # the previous message prints differently when it is not last (Hermes' "\n" before <|im_end|>).
    if g.strip():
        k = f.find(g, max(0, start - len(g)))
        if k >= 0 and not any(isinstance(m.get("content"), str) and m["content"].strip() and m["content"].strip() in f[start:k] for m in messages[:i]):
            return k + len(g), "prefix"
    # The header p printed may follow in f after a separator (whitespace) the previous turn prints
    # only when it is not last; then the turn starts after as much of p's tail as f repeats there.
    ws = len(f[start:]) - len(f[start:].lstrip())
    if ws and lost.strip():
        m = common_prefix(lost, f[start + ws:])
        if m > 0:
            cut = header_end(lost, m, specials)
            if cut > 0:
                return start + ws + cut, ("prefix" if cut == len(lost) else "gen_prompt_diverges")
    return start, "gen_prompt_diverges"


def weak_start(p, full, specials, messages, i, g=""):
    """Where the turn starts in full, when that is known without a full match (None: unknown)."""
    if p is None:
        return None
    if full.startswith(p):
        return len(p)
    start, _ = diverged_start(p, full, specials, messages, i, g)
    return start


def assistant_runs(messages):
    runs, i = [], 0
    while i < len(messages):
        if messages[i].get("role") == "assistant":
            j = i
            while j + 1 < len(messages) and messages[j + 1].get("role") == "assistant":
                j += 1
            runs.append((i, j))
            i = j + 1
        else:
            i += 1
    return runs


def split_run(run, full, g, specials, messages, a, b):
    """
    A run the template renders as one piece of text may still print the
    generation prompt (the assistant header) between its messages (Qwen3:
    "<|im_end|>\n<|im_start|>assistant\n"): the header is never supervised,
    so the run is one turn per message there, each ending at its last special
    token. Split only when every piece holds its own message's content;
    otherwise the run is one turn (the template really merges the messages).
    """
    whole = [{**run, "rule": "run", "messages": list(range(a, b + 1))}]
    if not g.strip():
        return whole
    cuts, k = [], full.find(g, run["start"])
    while 0 <= k and k + len(g) <= run["end"]:
        cuts.append(k)
        k = full.find(g, k + len(g))
    if len(cuts) != b - a:
        return whole
    starts = [run["start"]] + [c + len(g) for c in cuts]
    ends = cuts + [run["end"]]
    pieces = []
    for n, (s, e) in enumerate(zip(starts, ends)):
        e = end_of_turn(full, s, e, specials)
        if visible_content(messages[a + n]) not in full[s:e] or not any(full[s:e].endswith(t) for t in specials):
            return whole
        pieces.append({"start": s, "end": e, "rule": "run_split", "messages": [a + n]})
    return pieces


def incremental(r, messages, tools, full, specials):
    def safe(msgs, gen):
        try:
            return r.render(msgs, tools, gen)
        except Exception:
            return None

    def prompt(i):
        """render(messages[:i], add_generation_prompt=True), and the text the generation prompt adds."""
        if i == 0:
            return None, ""
        p, q = safe(messages[:i], True), safe(messages[:i], False)
        if p is None or q is None:
            return p, ""
        return p, p[common_prefix(p, q):]

    spans, weak = [], []
    last = len(messages) - 1
    for a, b in assistant_runs(messages):
        per = []
        for i in range(a, b + 1):
            p, g = prompt(i)
            f = safe(messages[: i + 1], False)
            per.append(turn_span(p, f, full, specials, messages, i, g) if p is not None and f is not None else None)
        if all(per):
            spans.extend(per)
            continue
        if any(per):
            # The template keeps these messages apart (only some fail, e.g. on a trailing eos the
            # template prints after the last message): each failing one on its own.
            for i, sp in zip(range(a, b + 1), per):
                if sp is not None:
                    spans.append(sp)
                    continue
                p_i, g_i = prompt(i)
                final = turn_span(p_i, full, full, specials, messages, i, g_i) if i == last and p_i is not None else None
                if final is not None:
                    spans.append({**final, "rule": "final"})
                else:
                    weak.append({"start": weak_start(p_i, full, specials, messages, i, g_i), "messages": [i], "content": [c for c in [visible_content(messages[i])] if c in full]})
            continue
        # Consecutive assistant messages the template merges: one turn.
        p_a, g_a = prompt(a)
        f_b = safe(messages[: b + 1], False) if b > a else None
        run = turn_span(p_a, f_b, full, specials, messages, b, g_a) if p_a is not None and f_b is not None else None
        if run is not None:
            spans.extend(split_run(run, full, g_a, specials, messages, a, b))
            continue
        # The final turn: render(all[:-1], add_generation_prompt=True) vs render(all).
        final = turn_span(p_a, full, full, specials, messages, b, g_a) if b == last and p_a is not None else None
        if final is not None:
            spans.append({**final, "rule": "final", "messages": list(range(a, b + 1))})
            continue
        weak.append({
            "start": weak_start(p_a, full, specials, messages, a, g_a),
            "messages": list(range(a, b + 1)),
            # Only content the template prints at all (Llama 3.1 and gpt-oss print just the tool call of a turn that also has text).
            "content": [c for c in (visible_content(messages[i]) for i in range(a, b + 1)) if c in full],
        })
    # A weak turn's region ends where the next known turn starts (or the text ends).
    starts = sorted([s["start"] for s in spans] + [w["start"] for w in weak if w["start"] is not None])
    for w in weak:
        if w["start"] is None:
            w["end"] = None
            continue
        later = [s for s in starts if s > w["start"]]
        w["end"] = later[0] if later else len(full)
    return spans, weak


def main():
    index_path, conv_path = sys.argv[1], sys.argv[2]
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    base = index_path.rsplit("/", 1)[0]
    conversations = []
    with open(conv_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                conversations.append(json.loads(line))
    out = {"jinja2": jinja2.__version__, "templates": {}}
    for t in index["templates"]:
        with open(f"{base}/{t['file']}", encoding="utf-8") as f:
            source = f.read()
        if t.get("load") == "join_lines":
            source = source.replace("    ", "").replace("\n", "")
        tk = t["tokenizer"]
        # transformers passes the tokenizer's special_tokens_map: only the tokens that are set.
        kwargs = {f"{k}_token": tk[k] for k in ("bos", "eos", "unk", "pad") if tk.get(k)}
        kwargs.update(t.get("vars", {}))
        specials = [s if isinstance(s, str) else s["content"] for s in tk["special"]]
        specials += [tk[k] for k in ("bos", "eos", "unk", "pad") if tk.get(k)]
        generation = bool(GENERATION_TAG.search(source))
        r = Renderer(compile_template(source), kwargs)
        rows = []
        for conv in conversations:
            messages, tools = conv["messages"], conv.get("tools")
            row = {"id": conv["id"], "mode": "generation" if generation else "incremental"}
            try:
                if generation:
                    text, indices = r.render_tracked(messages, tools)
                    row["spans"] = [{"start": s, "end": e, "rule": "generation"} for s, e in indices if e > s]
                    row["weak"] = []
                else:
                    text = r.render(messages, tools, False)
                    row["spans"], row["weak"] = incremental(r, messages, tools, text, specials)
                row["text"] = text
                row["error"] = None
            except Exception as e:  # the template rejects this conversation: an expected drop
                row["error"] = describe_error(e)
            rows.append(row)
        out["templates"][t["name"]] = rows
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
