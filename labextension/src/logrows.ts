/**
 * The rows of the log tab as DOM: a log line (its link by seq, ANSI colours, the search
 * query's matches marked), a step's header (caret, outcome, duration, line count) and the
 * "earlier lines dropped" row. Text is always set as text: logs are untrusted.
 *
 * Apart from the windowed view (logview.ts) so each row is built from what it shows alone.
 */
import { TranslationBundle } from '@jupyterlab/translation';

import { IAnsiSegment, parseAnsi } from './ansi';
import { Stream } from './contract';
import { IStepGroup, LogModel, Row, formatDuration } from './logmodel';

/** A new element with its class and (as text, never HTML) its text. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = '',
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** What a row's look depends on beyond the row itself. */
export interface IRowContext {
  model: LogModel;
  trans: TranslationBundle;
  /** the link of line ``seq`` */
  lineUrl: (seq: number) => string;
  /** the line the user picked (a line link), highlighted */
  selectedSeq: number | null;
  /** the seq of the current search match, or -1 */
  currentMatch: number;
  /** the search query, marked in each line */
  query: string;
}

export function renderRow(row: Row, ctx: IRowContext): HTMLElement {
  const trans = ctx.trans;
  if (row.kind === 'dropped') {
    const node = el('div', 'jp-AgentBuild-row jp-AgentBuild-dropped');
    node.textContent = trans.__(
      '%1 earlier lines are not kept here; the full log is one download away.',
      row.count.toLocaleString()
    );
    return node;
  }
  if (row.kind === 'header') {
    return renderHeader(row.group, ctx);
  }
  const line = row.line;
  const node = el('div', 'jp-AgentBuild-row jp-AgentBuild-line');
  node.dataset.seq = String(line.seq);
  if (line.stream === Stream.stderr) {
    node.classList.add('jp-mod-stderr');
  }
  if (line.seq === ctx.selectedSeq) {
    node.classList.add('jp-mod-selected');
  }
  if (line.seq === ctx.currentMatch) {
    node.classList.add('jp-mod-current');
  }
  const link = el('a', 'jp-AgentBuild-lineno', String(line.seq));
  link.href = ctx.lineUrl(line.seq);
  link.dataset.seq = String(line.seq);
  const text = el('span', 'jp-AgentBuild-text');
  for (const segment of parseAnsi(line.text)) {
    text.append(renderSegment(segment, ctx.query));
  }
  node.append(link, text);
  return node;
}

function renderSegment(segment: IAnsiSegment, query: string): HTMLElement | Text {
  const plain =
    segment.fg === undefined &&
    segment.bg === undefined &&
    !segment.bold &&
    !segment.dim &&
    !segment.italic &&
    !segment.underline;
  const node: HTMLElement | null = plain ? null : el('span');
  if (node) {
    if (typeof segment.fg === 'number') {
      node.classList.add(`jp-AgentBuild-fg${segment.fg}`);
    } else if (segment.fg) {
      node.style.color = segment.fg;
    }
    if (typeof segment.bg === 'number') {
      node.classList.add(`jp-AgentBuild-bg${segment.bg}`);
    } else if (segment.bg) {
      node.style.backgroundColor = segment.bg;
    }
    for (const flag of ['bold', 'dim', 'italic', 'underline'] as const) {
      if (segment[flag]) {
        node.classList.add(`jp-AgentBuild-${flag}`);
      }
    }
  }
  const children = highlight(segment.text, query);
  if (!node && children.length === 1) {
    return children[0];
  }
  const holder = node ?? el('span');
  holder.append(...children);
  return holder;
}

/** The text with each occurrence of the query in a <mark>. */
function highlight(text: string, query: string): (HTMLElement | Text)[] {
  const needle = query.toLowerCase();
  if (!needle) {
    return [document.createTextNode(text)];
  }
  const lower = text.toLowerCase();
  const out: (HTMLElement | Text)[] = [];
  let at = 0;
  for (let i = lower.indexOf(needle); i >= 0; i = lower.indexOf(needle, at)) {
    if (i > at) {
      out.push(document.createTextNode(text.slice(at, i)));
    }
    out.push(el('mark', 'jp-AgentBuild-match', text.slice(i, i + needle.length)));
    at = i + needle.length;
  }
  if (at < text.length) {
    out.push(document.createTextNode(text.slice(at)));
  }
  return out;
}

function renderHeader(group: IStepGroup, ctx: IRowContext): HTMLElement {
  const trans = ctx.trans;
  const model = ctx.model;
  const open = model.isOpen(group);
  const node = el('div', 'jp-AgentBuild-row jp-AgentBuild-stepHeader');
  node.dataset.step = String(group.step);
  node.setAttribute('role', 'button');
  node.setAttribute('aria-expanded', String(open));
  const running = model.isRunning(group);
  const failed = group.exitCode !== null && group.exitCode !== 0;
  node.classList.add(
    open ? 'jp-mod-open' : 'jp-mod-closed',
    running ? 'jp-mod-running' : failed ? 'jp-mod-failed' : 'jp-mod-ok'
  );
  const caret = el('span', 'jp-AgentBuild-caret', open ? '▾' : '▸');
  const mark = el('span', 'jp-AgentBuild-stepMark', running ? '●' : failed ? '✗' : '✓');
  const name = el('span', 'jp-AgentBuild-stepName', group.name);
  let detail = '';
  if (group.duration !== null) {
    detail = formatDuration(group.duration);
  } else if (running && group.startedAt) {
    detail = trans.__('running');
  }
  if (failed) {
    detail += ' · ' + trans.__('exit %1', group.exitCode);
  }
  const lines = group.lineCount + group.dropped;
  const count = el('span', 'jp-AgentBuild-stepLines', trans._n('%1 line', '%1 lines', lines));
  node.append(caret, mark, name, el('span', 'jp-AgentBuild-stepDuration', detail), count);
  return node;
}
