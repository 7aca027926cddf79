/**
 * ANSI SGR colours of one log line, as segments the log view sets as text with a class or
 * a style: never as HTML (logs are untrusted). Other escapes (cursor moves, titles, OSC
 * hyperlinks) are dropped. The state does not carry across lines: each line is rendered on
 * its own, only when on screen, so a line's look cannot depend on lines never rendered.
 */

export interface IAnsiStyle {
  /** one of the 16 colours (0-15) as a class, or a CSS colour for 256/true colours */
  fg?: number | string;
  bg?: number | string;
  bold?: boolean;
  dim?: boolean;
  italic?: boolean;
  underline?: boolean;
}

export interface IAnsiSegment extends IAnsiStyle {
  text: string;
}

// CSI ... final byte, OSC ... BEL/ST, or a lone two-byte escape
// eslint-disable-next-line no-control-regex
const ESCAPE = /\x1b(?:\[([0-9;:?]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])/g;

/** The 256-colour palette's CSS colour for index ``n`` (16-255). */
export function xterm256(n: number): string {
  if (n < 232) {
    const i = n - 16;
    const level = (v: number) => (v === 0 ? 0 : 55 + v * 40);
    return `rgb(${level(Math.floor(i / 36))},${level(Math.floor(i / 6) % 6)},${level(i % 6)})`;
  }
  const grey = 8 + (n - 232) * 10;
  return `rgb(${grey},${grey},${grey})`;
}

function extended(params: number[], i: number): [number | string | undefined, number] {
  // 38;5;n or 38;2;r;g;b (i points at the 38/48)
  if (params[i + 1] === 5 && params.length > i + 2) {
    const n = params[i + 2];
    return [n < 16 ? n : xterm256(n), i + 2];
  }
  if (params[i + 1] === 2 && params.length > i + 4) {
    const [r, g, b] = params.slice(i + 2, i + 5).map(v => Math.max(0, Math.min(255, v)));
    return [`rgb(${r},${g},${b})`, i + 4];
  }
  return [undefined, params.length];
}

function apply(style: IAnsiStyle, raw: string): IAnsiStyle {
  const params = raw === '' ? [0] : raw.split(/[;:]/).map(p => (p === '' ? 0 : Number(p)));
  const next: IAnsiStyle = { ...style };
  for (let i = 0; i < params.length; i++) {
    const p = params[i];
    if (p === 0) {
      for (const key of Object.keys(next) as (keyof IAnsiStyle)[]) {
        delete next[key];
      }
    } else if (p === 1) {
      next.bold = true;
    } else if (p === 2) {
      next.dim = true;
    } else if (p === 3) {
      next.italic = true;
    } else if (p === 4) {
      next.underline = true;
    } else if (p === 22) {
      delete next.bold;
      delete next.dim;
    } else if (p === 23) {
      delete next.italic;
    } else if (p === 24) {
      delete next.underline;
    } else if (p >= 30 && p <= 37) {
      next.fg = p - 30;
    } else if (p >= 90 && p <= 97) {
      next.fg = p - 90 + 8;
    } else if (p === 39) {
      delete next.fg;
    } else if (p >= 40 && p <= 47) {
      next.bg = p - 40;
    } else if (p >= 100 && p <= 107) {
      next.bg = p - 100 + 8;
    } else if (p === 49) {
      delete next.bg;
    } else if (p === 38 || p === 48) {
      const [colour, last] = extended(params, i);
      if (colour !== undefined) {
        next[p === 38 ? 'fg' : 'bg'] = colour;
      }
      i = last;
    }
  }
  return next;
}

/** Split ``text`` into styled segments; escapes are consumed, never shown. */
export function parseAnsi(text: string): IAnsiSegment[] {
  const segments: IAnsiSegment[] = [];
  if (text.indexOf('\x1b') < 0) {
    return text ? [{ text }] : [];
  }
  let style: IAnsiStyle = {};
  let last = 0;
  ESCAPE.lastIndex = 0;
  for (let match = ESCAPE.exec(text); match; match = ESCAPE.exec(text)) {
    if (match.index > last) {
      segments.push({ ...style, text: text.slice(last, match.index) });
    }
    if (match[2] === 'm') {
      style = apply(style, match[1] ?? '');
    }
    last = ESCAPE.lastIndex;
  }
  if (last < text.length) {
    segments.push({ ...style, text: text.slice(last) });
  }
  return segments;
}

/** The text without its escapes (what search matches and what is copied). */
export function stripAnsi(text: string): string {
  return text.indexOf('\x1b') < 0 ? text : text.replace(ESCAPE, '');
}
