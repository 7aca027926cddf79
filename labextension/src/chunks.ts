/**
 * Log lines packed in chunks: a run of consecutive lines of one step as three typed arrays
 * and ONE string. A build printing a million lines then costs the page's main thread a few
 * hundred objects instead of millions: receiving a chunk from the worker is a copy of one
 * string (the arrays are transferred), and the garbage collector has almost nothing to
 * trace or move, where a million line objects made each collection a long pause.
 *
 * ``ChunkBuilder`` is self-contained (it uses nothing outside its body): the worker's code
 * is made from its source text (see worker.ts).
 */
import { stripAnsi } from './ansi';

/** Lines ``0 <= i < seqs.length`` of step ``step``: line i's text is
 * ``text.slice(i ? ends[i - 1] : 0, ends[i])``. */
export interface ILineChunk {
  step: number;
  seqs: Float64Array;
  /** 1 for a line on stderr, 0 for stdout */
  stderr: Uint8Array;
  ends: Uint32Array;
  text: string;
}

/** Whether a batch item is a chunk (not an entry). */
export function isChunk(item: unknown): item is ILineChunk {
  return !!item && (item as ILineChunk).seqs instanceof Float64Array;
}

/** The text of line ``i`` of ``chunk``. */
export function chunkLine(chunk: ILineChunk, i: number): string {
  return chunk.text.slice(i ? chunk.ends[i - 1] : 0, chunk.ends[i]);
}

/** Packs lines, in order, into chunks: a new chunk at each change of step, and when one
 * holds ``maxLines`` lines or ``maxChars`` characters (so no chunk is unbounded). */
export class ChunkBuilder {
  constructor(maxLines: number, maxChars: number) {
    this.maxLines = maxLines;
    this.maxChars = maxChars;
  }

  private readonly maxLines: number;
  private readonly maxChars: number;
  private step = 0;
  private seqs: number[] = [];
  private stderr: number[] = [];
  private ends: number[] = [];
  private texts: string[] = [];
  private chars = 0;

  /** Add a line; returns the chunk it completed, if any (the line starts the next one). */
  push(seq: number, step: number, stderr: boolean, text: string): ILineChunk | null {
    let done = null;
    if (
      this.seqs.length &&
      (step !== this.step || this.seqs.length >= this.maxLines || this.chars >= this.maxChars)
    ) {
      done = this.take();
    }
    this.step = step;
    this.seqs.push(seq);
    this.stderr.push(stderr ? 1 : 0);
    this.chars += text.length;
    this.ends.push(this.chars);
    this.texts.push(text);
    return done;
  }

  /** The lines added since the last chunk, as a chunk (null when there are none). */
  take(): ILineChunk | null {
    if (!this.seqs.length) {
      return null;
    }
    const chunk = {
      step: this.step,
      seqs: Float64Array.from(this.seqs),
      stderr: Uint8Array.from(this.stderr),
      ends: Uint32Array.from(this.ends),
      text: this.texts.join('')
    };
    this.seqs = [];
    this.stderr = [];
    this.ends = [];
    this.texts = [];
    this.chars = 0;
    return chunk;
  }
}

/** A chunk of lines ``from <= i < to`` of ``a`` followed by all of ``b`` (same step): small
 * chunks are merged as they come, so a slow build's lines do not each cost a chunk. */
export function joinChunks(a: ILineChunk, from: number, b: ILineChunk): ILineChunk {
  const start = from ? a.ends[from - 1] : 0;
  const count = a.seqs.length - from;
  const seqs = new Float64Array(count + b.seqs.length);
  seqs.set(a.seqs.subarray(from));
  seqs.set(b.seqs, count);
  const stderr = new Uint8Array(seqs.length);
  stderr.set(a.stderr.subarray(from));
  stderr.set(b.stderr, count);
  const ends = new Uint32Array(seqs.length);
  const head = a.text.length - start;
  for (let i = 0; i < count; i++) {
    ends[i] = a.ends[from + i] - start;
  }
  for (let i = 0; i < b.ends.length; i++) {
    ends[count + i] = b.ends[i] + head;
  }
  return { step: a.step, seqs, stderr, ends, text: a.text.slice(start) + b.text };
}

/** Push the seqs (> ``after``) of the lines of ``chunk`` that contain ``needle``. */
export function searchChunk(chunk: ILineChunk, needle: string, after: number, out: number[]): void {
  const { seqs, ends } = chunk;
  if (chunk.text.indexOf('\x1b') >= 0) {
    for (let i = 0; i < seqs.length; i++) {
      if (seqs[i] > after && stripAnsi(chunkLine(chunk, i)).toLowerCase().includes(needle)) {
        out.push(seqs[i]);
      }
    }
    return;
  }
  // one pass over the chunk's text; a match must lie within one line
  const text = chunk.text.toLowerCase();
  let line = 0;
  for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + 1)) {
    while (ends[line] <= at) {
      line++;
    }
    if (at + needle.length <= ends[line]) {
      if (seqs[line] > after) {
        out.push(seqs[line]);
      }
      at = ends[line] - 1; // one match per line
    }
  }
}

/** A chunk of lines ``from <= i`` of ``chunk``. */
export function sliceChunk(chunk: ILineChunk, from: number): ILineChunk {
  const start = chunk.ends[from - 1];
  return {
    step: chunk.step,
    seqs: chunk.seqs.slice(from),
    stderr: chunk.stderr.slice(from),
    ends: chunk.ends.slice(from).map(end => end - start),
    text: chunk.text.slice(start)
  };
}

export function indexOfSeq(seqs: Float64Array, from: number, seq: number): number {
  let lo = from;
  let hi = seqs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (seqs[mid] === seq) {
      return mid;
    }
    if (seqs[mid] < seq) {
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return -1;
}
