/**
 * A build's log as the build tab shows it: entries keyed by ``seq`` (a duplicate is
 * ignored, a gap is counted), log lines grouped by step with each step's name, duration and
 * exit code, at most ``maxLines`` lines kept (the oldest dropped in bulk; the full log stays
 * one download away), and the rows of the windowed view computed without flattening.
 *
 * Lines are kept in chunks (chunks.ts), so the cost of a batch grows with its chunks, not
 * its lines: appending, dropping the oldest (whole chunks, or a chunk's head by moving an
 * index) and laying rows out (offsets per step, shifted only when a step's size changes)
 * never touch each line; a line becomes an object only when its row is rendered. Search
 * goes through each chunk once per query: asked again, it searches only the new lines.
 *
 * The step groups and their lines are in steps.ts.
 *
 * Pure: no DOM, no Lab, so it is unit-tested on its own.
 */
import {
  ChunkBuilder,
  ILineChunk,
  indexOfSeq,
  isChunk,
  joinChunks,
  searchChunk,
  sliceChunk
} from './chunks';
import { EntryKind, IEntry, Stream, TERMINAL_STATUSES } from './contract';
import { ILine, IStepGroup, lineOf, newStepGroup } from './steps';

export type { ILineChunk } from './chunks';
// the step groups live in steps.ts; the view and the tests read them through this module
export type { ILine, IStepGroup } from './steps';
export { formatDuration, lineOf, linesOf } from './steps';

export type Row =
  | { kind: 'dropped'; count: number }
  | { kind: 'header'; group: IStepGroup }
  | { kind: 'line'; group: IStepGroup; line: ILine };

export interface IAddResult {
  added: number;
  duplicates: number;
  /** entries missing before this batch (should always be 0: the stream never skips) */
  gap: number;
}

const TERMINAL = new Set<string>(TERMINAL_STATUSES);
/** Two chunks of a step both smaller than this are merged (a copy of a few lines). */
const SMALL_CHUNK = 512;

export class LogModel {
  constructor(options: { maxLines?: number } = {}) {
    this.maxLines = Math.max(10, options.maxLines ?? 100_000);
  }

  readonly maxLines: number;
  /** the newest seq seen: the stream's resume cursor */
  lastSeq = 0;
  /** the status carried by the newest status entry */
  status: string | null = null;
  exitCode: number | null = null;
  error: string | null = null;
  /** gaps seen (entries that never came): a check, always 0 with a correct stream */
  gaps = 0;
  duplicates = 0;
  /** every log line ever added, kept or not */
  totalLines = 0;
  keptLines = 0;
  readonly groups: IStepGroup[] = [];
  /** events other than status and steps (preview_ready, artifacts_ready, ...) */
  readonly events: IEntry[] = [];
  private byStep = new Map<number, IStepGroup>();
  private offsets: number[] | null = null;
  private rows = 0;
  private searched: { needle: string; matches: number[]; upTo: number } | null = null;

  /** True once the terminal status entry has been seen: nothing more will ever come. */
  get done(): boolean {
    return this.status !== null && TERMINAL.has(this.status);
  }

  get droppedLines(): number {
    return this.totalLines - this.keptLines;
  }

  /** Add a batch (ascending seq): entries, and log lines packed in chunks (from the
   * worker). Entries at or below ``lastSeq`` are duplicates. */
  add(entries: readonly (IEntry | ILineChunk)[]): IAddResult {
    const result: IAddResult = { added: 0, duplicates: 0, gap: 0 };
    const builder = new ChunkBuilder(Infinity, Infinity);
    const addLines = () => {
      const chunk = builder.take();
      if (chunk) {
        this.addChunk(chunk, result);
      }
    };
    for (const item of entries) {
      if (isChunk(item)) {
        addLines();
        this.addChunk(item, result);
        continue;
      }
      const entry = item as IEntry;
      if (entry.kind === EntryKind.log) {
        const pushed = builder.push(entry.seq, entry.step ?? -1, entry.stream === Stream.stderr, entry.text ?? '');
        if (pushed) {
          this.addChunk(pushed, result);
        }
        continue;
      }
      addLines();
      if (!this.count(entry.seq, result)) {
        continue;
      }
      this.event(entry);
    }
    addLines();
    this.gaps += result.gap;
    this.duplicates += result.duplicates;
    if (this.keptLines > this.maxLines) {
      this.trim();
    }
    return result;
  }

  /** Count ``seq`` as added (true), or as a duplicate. */
  private count(seq: number, result: IAddResult): boolean {
    if (seq <= this.lastSeq) {
      result.duplicates++;
      return false;
    }
    if (seq > this.lastSeq + 1) {
      result.gap += seq - this.lastSeq - 1;
    }
    this.lastSeq = seq;
    result.added++;
    return true;
  }

  private addChunk(chunk: ILineChunk, result: IAddResult): void {
    const seqs = chunk.seqs;
    let start = 0;
    while (start < seqs.length && seqs[start] <= this.lastSeq) {
      start++; // a resent head: ascending, so only a prefix can be seen already
    }
    result.duplicates += start;
    for (let i = start; i < seqs.length; i++) {
      this.count(seqs[i], result);
    }
    const count = seqs.length - start;
    if (!count) {
      return;
    }
    const group = this.group(chunk.step, '');
    const last = group.kept[group.kept.length - 1];
    if (last && last.chunk.seqs.length - last.start < SMALL_CHUNK && count < SMALL_CHUNK) {
      group.kept[group.kept.length - 1] = {
        chunk: joinChunks(last.chunk, last.start, start ? sliceChunk(chunk, start) : chunk),
        start: 0
      };
    } else {
      group.kept.push({ chunk, start });
    }
    group.lineCount += count;
    this.totalLines += count;
    this.keptLines += count;
    this.grew(group, count);
  }

  /** ``group`` got ``count`` more lines: the rows after it shift (none for the last). */
  private grew(group: IStepGroup, count: number): void {
    if (this.offsets === null || !this.isOpen(group)) {
      return;
    }
    const at = this.groups.indexOf(group);
    for (let i = at + 1; i < this.offsets.length; i++) {
      this.offsets[i] += count;
    }
    this.rows += count;
  }

  private event(entry: IEntry): void {
    const data = (entry.data ?? {}) as Record<string, any>;
    if (entry.type === 'status') {
      this.status = data.status ?? this.status;
      if (data.exit_code !== undefined) {
        this.exitCode = data.exit_code;
      }
      if (data.error) {
        this.error = data.error;
      }
      this.offsets = null; // a step's open state depends on the build's
    } else if (entry.type === 'step_started' && typeof data.step === 'number') {
      const group = this.group(data.step, entry.ts);
      group.name = data.name ?? group.name;
      group.startedAt = entry.ts;
    } else if (entry.type === 'step_finished' && typeof data.step === 'number') {
      const group = this.group(data.step, entry.ts);
      group.finishedAt = entry.ts;
      group.duration = typeof data.duration === 'number' ? data.duration : null;
      group.exitCode = typeof data.exit_code === 'number' ? data.exit_code : null;
      this.offsets = null; // it may close
    } else {
      this.events.push(entry);
    }
  }

  private group(step: number, ts: string): IStepGroup {
    let group = this.byStep.get(step);
    if (!group) {
      group = newStepGroup(step, ts);
      this.byStep.set(step, group);
      this.groups.push(group);
      this.groups.sort((a, b) => a.step - b.step);
      this.offsets = null;
    }
    return group;
  }

  /** Drop the oldest lines in bulk (down to three quarters of the bound): whole chunks,
   * or the head of one by moving its start (nothing is copied). */
  private trim(): void {
    let excess = this.keptLines - Math.floor(this.maxLines * 0.75);
    for (const group of this.groups) {
      while (excess > 0 && group.kept.length) {
        const kept = group.kept[0];
        const n = Math.min(excess, kept.chunk.seqs.length - kept.start);
        kept.start += n;
        if (kept.start === kept.chunk.seqs.length) {
          group.kept.shift();
        }
        group.lineCount -= n;
        group.dropped += n;
        this.keptLines -= n;
        excess -= n;
      }
    }
    this.offsets = null;
    this.searched = null; // its matches may be gone
  }

  /** Whether a step's lines are shown: the user's choice, else open while it runs, when
   * it failed, and for the last step (where a finished build's outcome is). */
  isOpen(group: IStepGroup): boolean {
    if (group.open !== null) {
      return group.open;
    }
    if (group.finishedAt === null || group === this.groups[this.groups.length - 1]) {
      return true;
    }
    return group.exitCode !== 0;
  }

  /** Step running means: started, not finished, and the build not done. */
  isRunning(group: IStepGroup): boolean {
    return group.finishedAt === null && !this.done;
  }

  toggle(step: number, open?: boolean): void {
    const group = this.byStep.get(step);
    if (group) {
      group.open = open ?? !this.isOpen(group);
      this.offsets = null;
    }
  }

  /** Each group's first row (after the "dropped" row when lines were dropped). */
  private layout(): number[] {
    if (this.offsets === null) {
      const offsets: number[] = [];
      let row = this.droppedLines ? 1 : 0;
      for (const group of this.groups) {
        offsets.push(row);
        row += 1 + (this.isOpen(group) ? group.lineCount : 0);
      }
      this.offsets = offsets;
      this.rows = row;
    }
    return this.offsets;
  }

  /** Lay the rows out again at the next read. */
  invalidate(): void {
    this.offsets = null;
  }

  get rowCount(): number {
    this.layout();
    return this.rows;
  }

  /** The row at ``index`` (0 <= index < rowCount), found in O(log steps + chunks). */
  rowAt(index: number): Row {
    const offsets = this.layout();
    if (this.droppedLines && index === 0) {
      return { kind: 'dropped', count: this.droppedLines };
    }
    let lo = 0;
    let hi = offsets.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (offsets[mid] <= index) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    const group = this.groups[lo];
    const within = index - offsets[lo];
    if (within === 0) {
      return { kind: 'header', group };
    }
    return { kind: 'line', group, line: lineOf(group, within - 1) };
  }

  /** The row showing line ``seq`` (its step opened), or -1 when it is not kept. */
  rowOfSeq(seq: number): number {
    for (const group of this.groups) {
      let before = 0;
      for (const kept of group.kept) {
        const seqs = kept.chunk.seqs;
        if (seq < seqs[kept.start] || seq > seqs[seqs.length - 1]) {
          before += seqs.length - kept.start;
          continue;
        }
        const at = indexOfSeq(seqs, kept.start, seq);
        if (at < 0) {
          return -1;
        }
        if (!this.isOpen(group)) {
          this.toggle(group.step, true);
        }
        const offsets = this.layout();
        return offsets[this.groups.indexOf(group)] + 1 + before + (at - kept.start);
      }
    }
    return -1;
  }

  /** Seqs of the kept lines containing ``query`` (case-insensitive, escapes ignored).
   * Asked again with the same query, only lines added since are searched. */
  search(query: string): number[] {
    const needle = query.toLowerCase();
    if (!needle) {
      return [];
    }
    let state = this.searched;
    if (state === null || state.needle !== needle) {
      state = { needle, matches: [], upTo: 0 };
      this.searched = state;
    }
    const upTo = state.upTo;
    for (const group of this.groups) {
      for (const kept of group.kept) {
        const seqs = kept.chunk.seqs;
        if (seqs[seqs.length - 1] > upTo) {
          // not its dropped head either
          const after = Math.max(upTo, kept.start ? seqs[kept.start - 1] : 0);
          searchChunk(kept.chunk, needle, after, state.matches);
        }
      }
    }
    state.matches.sort((a, b) => a - b);
    state.upTo = this.lastSeq;
    return state.matches.slice();
  }
}

/** The rows to render for a viewport: what is visible plus ``overscan`` rows each side. */
export function windowRange(
  rowCount: number,
  scrollTop: number,
  viewportHeight: number,
  rowHeight: number,
  overscan = 20
): { start: number; end: number } {
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const visible = Math.ceil(Math.max(0, viewportHeight) / rowHeight) + 1;
  const start = Math.max(0, Math.min(first - overscan, rowCount));
  const end = Math.min(rowCount, first + visible + overscan);
  return { start, end: Math.max(start, end) };
}
