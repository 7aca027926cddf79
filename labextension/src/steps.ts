/**
 * A step of a build's log as the build tab groups it: its name, timing and exit code, and
 * its kept lines as slices of chunks (chunks.ts). A line becomes an object only here, when
 * its row is rendered; the log model (logmodel.ts) decides which lines are kept.
 *
 * Pure: no DOM, no Lab, so it is unit-tested on its own.
 */
import { ILineChunk, chunkLine } from './chunks';
import { IEntry, Stream } from './contract';

export interface ILine {
  seq: number;
  step: number;
  stream: IEntry['stream'] & string;
  text: string;
}

/** Kept lines ``start <= i < chunk.seqs.length`` of a chunk. */
export interface IKept {
  chunk: ILineChunk;
  start: number;
}

export interface IStepGroup {
  step: number;
  name: string;
  startedAt: string | null;
  finishedAt: string | null;
  /** seconds, from the step_finished event */
  duration: number | null;
  exitCode: number | null;
  /** lines of this step kept */
  lineCount: number;
  /** lines of this step no longer kept */
  dropped: number;
  /** the user's choice; null: open while running or failed */
  open: boolean | null;
  /** the kept lines, oldest first */
  kept: IKept[];
}

/** A step not seen before: named by its number until its step_started event names it. */
export function newStepGroup(step: number, ts: string): IStepGroup {
  return {
    step,
    name: step < 0 ? 'build' : `step ${step + 1}`,
    startedAt: ts,
    finishedAt: null,
    duration: null,
    exitCode: null,
    lineCount: 0,
    dropped: 0,
    open: null,
    kept: []
  };
}

/** The line at ``index`` of ``group`` (0 <= index < lineCount). */
export function lineOf(group: IStepGroup, index: number): ILine {
  let i = index;
  for (const kept of group.kept) {
    const count = kept.chunk.seqs.length - kept.start;
    if (i < count) {
      return chunkLineAt(kept.chunk, kept.start + i);
    }
    i -= count;
  }
  throw new RangeError(`no line ${index} in step ${group.step}`);
}

/** Every kept line of ``group`` as objects: O(lines), for tests and small logs only. */
export function linesOf(group: IStepGroup): ILine[] {
  const out: ILine[] = [];
  for (const kept of group.kept) {
    for (let i = kept.start; i < kept.chunk.seqs.length; i++) {
      out.push(chunkLineAt(kept.chunk, i));
    }
  }
  return out;
}

function chunkLineAt(chunk: ILineChunk, i: number): ILine {
  return {
    seq: chunk.seqs[i],
    step: chunk.step,
    stream: chunk.stderr[i] ? Stream.stderr : Stream.stdout,
    text: chunkLine(chunk, i)
  };
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
