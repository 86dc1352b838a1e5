/**
 * Neutralizes tool-call markup in the agent's own streamed text. Open WebUI renders any
 * `<details type="tool_calls">` found in content as real tool output (CVE-2026-109300), and
 * the agent's text is attacker-influenced (prompt injection through files and web pages), so
 * only the sidecar's own blocks may contain such tags. Works across chunk boundaries by
 * holding back a trailing fragment that could still grow into a guarded tag.
 */
const TAGS = ["<details", "</details", "<summary", "</summary"];
const GUARDED = /<(\/?)(details|summary)(?=[\s>/]|$)/gi;

export class MarkupGuard {
  private pending = "";

  push(text: string): string {
    let s = this.pending + text;
    this.pending = "";
    const lt = s.lastIndexOf("<");
    if (lt >= 0) {
      const tail = s.slice(lt).toLowerCase();
      // A fragment like "<det" or "<details" (no delimiter yet) may still become a tag.
      if (TAGS.some((t) => t.startsWith(tail) || tail === t)) {
        this.pending = s.slice(lt);
        s = s.slice(0, lt);
      }
    }
    return escapeTags(s);
  }

  flush(): string {
    const s = this.pending;
    this.pending = "";
    return escapeTags(s);
  }
}

function escapeTags(s: string): string {
  return s.replace(GUARDED, "&lt;$1$2");
}
