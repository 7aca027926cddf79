/**
 * A build's log as the build tab shows it: entries keyed by ``seq`` (a duplicate is
 * ignored, a gap is counted), log lines grouped by step with each step's name, duration and
 * exit code, at most ``maxLines`` lines kept (the oldest dropped in bulk; the full log stays
 * one download away), and the rows of the windowed view computed without flattening, so the
 * cost of a scroll or a new batch grows with the screen, not with the log.
 *
 * Pure: no DOM, no Lab, so it is unit-tested on its own.
 */
import { stripAnsi } from './ansi';
import { IEntry, TERMINAL_STATUSES } from './contract';

export interface ILine {
  seq: number;
  step: number;
  stream: 'stdout' | 'stderr';
  text: string;
}

export interface IStepGroup {
  step: number;
  name: string;
  startedAt: string | null;
  finishedAt: string | null;
  /** seconds, from the step_finished event */
  duration: number | null;
  exitCode: number | null;
  lines: ILine[];
  /** lines of this step no longer kept */
  dropped: number;
  /** the user's choice; null: open while running or failed */
  open: boolean | null;
}

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

/** A log line, compact: ``[seq, step, 0 for stdout | 1 for stderr, text]``. */
export type LogTuple = [number, number, number, string];

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

  /** True once the terminal status entry has been seen: nothing more will ever come. */
  get done(): boolean {
    return this.status !== null && TERMINAL.has(this.status);
  }

  get droppedLines(): number {
    return this.totalLines - this.keptLines;
  }

  /** Add a batch (ascending seq). Entries at or below ``lastSeq`` are duplicates. A log
   * line may come as a compact tuple ``[seq, step, 0|1 (stdout|stderr), text]``. */
  add(entries: readonly (IEntry | LogTuple)[]): IAddResult {
    const result: IAddResult = { added: 0, duplicates: 0, gap: 0 };
    for (const item of entries) {
      if (Array.isArray(item)) {
        const [seq, step, stderr, text] = item as LogTuple;
        if (seq <= this.lastSeq) {
          result.duplicates++;
          continue;
        }
        if (seq > this.lastSeq + 1) {
          result.gap += seq - this.lastSeq - 1;
        }
        this.lastSeq = seq;
        result.added++;
        this.group(step, '').lines.push({ seq, step, stream: stderr ? 'stderr' : 'stdout', text });
        this.totalLines++;
        this.keptLines++;
        continue;
      }
      const entry = item as IEntry;
      if (entry.seq <= this.lastSeq) {
        result.duplicates++;
        continue;
      }
      if (entry.seq > this.lastSeq + 1) {
        result.gap += entry.seq - this.lastSeq - 1;
      }
      this.lastSeq = entry.seq;
      result.added++;
      if (entry.kind === 'log') {
        const step = entry.step ?? -1;
        this.group(step, entry.ts).lines.push({
          seq: entry.seq,
          step,
          stream: entry.stream ?? 'stdout',
          text: entry.text ?? ''
        });
        this.totalLines++;
        this.keptLines++;
      } else {
        this.event(entry);
      }
    }
    this.gaps += result.gap;
    this.duplicates += result.duplicates;
    if (this.keptLines > this.maxLines) {
      this.trim();
    }
    if (result.added) {
      this.offsets = null;
    }
    return result;
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
    } else if (entry.type === 'step_started' && typeof data.step === 'number') {
      const group = this.group(data.step, entry.ts);
      group.name = data.name ?? group.name;
      group.startedAt = entry.ts;
    } else if (entry.type === 'step_finished' && typeof data.step === 'number') {
      const group = this.group(data.step, entry.ts);
      group.finishedAt = entry.ts;
      group.duration = typeof data.duration === 'number' ? data.duration : null;
      group.exitCode = typeof data.exit_code === 'number' ? data.exit_code : null;
    } else {
      this.events.push(entry);
    }
  }

  private group(step: number, ts: string): IStepGroup {
    let group = this.byStep.get(step);
    if (!group) {
      group = {
        step,
        name: step < 0 ? 'build' : `step ${step + 1}`,
        startedAt: ts,
        finishedAt: null,
        duration: null,
        exitCode: null,
        lines: [],
        dropped: 0,
        open: null
      };
      this.byStep.set(step, group);
      this.groups.push(group);
      this.groups.sort((a, b) => a.step - b.step);
      this.offsets = null;
    }
    return group;
  }

  /** Drop the oldest lines in bulk (down to three quarters of the bound). */
  private trim(): void {
    let excess = this.keptLines - Math.floor(this.maxLines * 0.75);
    for (const group of this.groups) {
      if (excess <= 0) {
        break;
      }
      const n = Math.min(excess, group.lines.length);
      if (n) {
        group.lines = group.lines.slice(n);
        group.dropped += n;
        this.keptLines -= n;
        excess -= n;
      }
    }
    this.offsets = null;
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
        row += 1 + (this.isOpen(group) ? group.lines.length : 0);
      }
      this.offsets = offsets;
      this.rows = row;
    }
    return this.offsets;
  }

  /** Open/closed state can change with time (a step finishing): recompute lazily. */
  invalidate(): void {
    this.offsets = null;
  }

  get rowCount(): number {
    this.layout();
    return this.rows;
  }

  /** The row at ``index`` (0 <= index < rowCount), found in O(log steps). */
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
    return { kind: 'line', group, line: group.lines[within - 1] };
  }

  /** The row showing line ``seq`` (its step opened), or -1 when it is not kept. */
  rowOfSeq(seq: number): number {
    for (const group of this.groups) {
      const lines = group.lines;
      if (!lines.length || seq < lines[0].seq || seq > lines[lines.length - 1].seq) {
        continue;
      }
      const at = indexOfSeq(lines, seq);
      if (at < 0) {
        return -1;
      }
      if (!this.isOpen(group)) {
        this.toggle(group.step, true);
      }
      const offsets = this.layout();
      return offsets[this.groups.indexOf(group)] + 1 + at;
    }
    return -1;
  }

  /** Seqs of the kept lines containing ``query`` (case-insensitive, escapes ignored). */
  search(query: string): number[] {
    const needle = query.toLowerCase();
    const found: number[] = [];
    if (!needle) {
      return found;
    }
    for (const group of this.groups) {
      for (const line of group.lines) {
        if (stripAnsi(line.text).toLowerCase().includes(needle)) {
          found.push(line.seq);
        }
      }
    }
    return found;
  }
}

function indexOfSeq(lines: readonly ILine[], seq: number): number {
  let lo = 0;
  let hi = lines.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (lines[mid].seq === seq) {
      return mid;
    }
    if (lines[mid].seq < seq) {
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return -1;
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

/** "1.2s", "3m 05s", "1h 02m": a duration for people. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null || !isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 60) {
    return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)}s`;
  }
  const s = Math.round(seconds);
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  }
  return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
}
