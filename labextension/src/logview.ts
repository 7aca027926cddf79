/**
 * The log tab of a build: a windowed list (only the rows on screen, plus a margin, are in
 * the DOM, whatever the log's length), steps as collapsible groups with their durations,
 * ANSI colours, a link per line (by seq), search with next/previous, follow-tail, and the
 * full log's download. Text is always set as text: logs are untrusted.
 *
 * Plain DOM rather than React: a flood of lines repaints at most once per animation frame,
 * and a repaint touches only the ~100 rows on screen. The rows themselves are built in
 * logrows.ts.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { LogModel, windowRange } from './logmodel';
import { el, renderRow } from './logrows';


/** Height of a row, px (the CSS sets the same: one monospace line). */
export const ROW_HEIGHT = 18;
/** While following a flood of lines, repaint at most this often (ms). */
export const FLOOD_INTERVAL = 100;

export interface ILogViewOptions {
  model: LogModel;
  trans: TranslationBundle;
  /** the link of line ``seq`` (a Lab URL that opens this tab scrolled to it) */
  lineUrl: (seq: number) => string;
  /** the full log, as text */
  downloadUrl: string;
  /** a line link was clicked (the view copies it) */
  onLineLink?: (seq: number, url: string) => void;
}

export class LogView extends Widget {
  constructor(options: ILogViewOptions) {
    super();
    this.options = options;
    this.model = options.model;
    const trans = options.trans;
    this.addClass('jp-AgentBuild-logView');
    this.title.label = trans.__('Log');
    const bar = this.createToolbar(trans);
    this.scroller.className = 'jp-AgentBuild-scroller';
    this.scroller.tabIndex = 0;
    this.sizer.className = 'jp-AgentBuild-sizer';
    this.layer.className = 'jp-AgentBuild-rows';
    this.scroller.append(this.sizer, this.layer);
    this.scroller.addEventListener('scroll', () => this.onScroll());
    this.layer.addEventListener('click', event => this.onClick(event));
    this.node.append(bar, this.scroller);
  }

  /** The search box with its previous/next buttons and match count, the follow box, the
   * expand/collapse buttons, the download link and the stream's state. */
  private createToolbar(trans: TranslationBundle): HTMLElement {
    const bar = el('div', 'jp-AgentBuild-logToolbar');
    this.searchInput.type = 'search';
    this.searchInput.placeholder = trans.__('Search the log');
    this.searchInput.className = 'jp-AgentBuild-search jp-mod-styled';
    this.searchInput.setAttribute('aria-label', trans.__('Search the log'));
    this.searchInput.addEventListener('input', () => this.scheduleSearch());
    this.searchInput.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        event.preventDefault();
        this.findNext(event.shiftKey ? -1 : 1);
      }
    });
    const prev = el('button', 'jp-AgentBuild-searchPrev jp-mod-styled', '↑');
    prev.title = trans.__('Previous match (Shift+Enter)');
    prev.onclick = () => this.findNext(-1);
    const next = el('button', 'jp-AgentBuild-searchNext jp-mod-styled', '↓');
    next.title = trans.__('Next match (Enter)');
    next.onclick = () => this.findNext(1);
    const follow = el('label', 'jp-AgentBuild-follow');
    this.followBox.type = 'checkbox';
    this.followBox.checked = true;
    this.followBox.onchange = () => this.setFollow(this.followBox.checked);
    follow.append(this.followBox, document.createTextNode(' ' + trans.__('Follow')));
    const download = el('a', 'jp-AgentBuild-download jp-mod-styled', trans.__('Download log'));
    download.href = this.options.downloadUrl;
    download.setAttribute('download', '');
    const expand = el('button', 'jp-AgentBuild-expandAll jp-mod-styled', trans.__('Expand all'));
    expand.onclick = () => this.setAllOpen(true);
    const collapse = el('button', 'jp-AgentBuild-collapseAll jp-mod-styled', trans.__('Collapse all'));
    collapse.onclick = () => this.setAllOpen(false);
    bar.append(
      this.searchInput,
      prev,
      next,
      this.matchCount,
      follow,
      expand,
      collapse,
      download,
      this.stateLabel
    );
    return bar;
  }

  readonly model: LogModel;
  readonly searchInput = el('input');
  readonly followBox = el('input');
  private readonly options: ILogViewOptions;
  private readonly matchCount = el('span', 'jp-AgentBuild-matchCount');
  private readonly stateLabel = el('span', 'jp-AgentBuild-streamState');
  private readonly scroller = el('div');
  private readonly sizer = el('div');
  private readonly layer = el('div');
  private frame = 0;
  private timer = 0;
  private lastPaint = 0;
  private paintedSeq = 0;
  private follow = true;
  /** scroll events we caused (they must not switch follow off) */
  private programmatic = 0;
  private selectedSeq: number | null = null;
  private pendingSeq: number | null = null;
  private query = '';
  private matches: number[] = [];
  private matchIndex = -1;
  private searchedAt = -1;
  private searchTimer = 0;
  private rendered = '';

  /** Whether the view follows the tail. */
  get following(): boolean {
    return this.follow;
  }

  setFollow(on: boolean): void {
    this.follow = on;
    this.followBox.checked = on;
    if (on) {
      this.selectedSeq = null;
    }
    this.update();
  }

  setStreamState(text: string): void {
    if (this.stateLabel.textContent !== text) {
      this.stateLabel.textContent = text;
    }
  }

  /** Scroll to line ``seq`` once it is here (a line link), highlighting it. */
  revealSeq(seq: number): void {
    this.pendingSeq = seq;
    this.follow = false;
    this.followBox.checked = false;
    this.tryReveal();
  }

  private tryReveal(): void {
    if (this.pendingSeq === null) {
      return;
    }
    const row = this.model.rowOfSeq(this.pendingSeq);
    if (row < 0) {
      if (this.model.done || this.model.lastSeq >= this.pendingSeq) {
        this.pendingSeq = null; // not kept (or not a log line): nothing to show
      }
      return;
    }
    this.selectedSeq = this.pendingSeq;
    this.pendingSeq = null;
    this.scrollToRow(row);
  }

  private scrollToRow(row: number): void {
    const height = this.scroller.clientHeight || 400;
    this.renderNow();
    this.setScrollTop(Math.max(0, row * ROW_HEIGHT - height / 3));
    this.renderNow();
  }

  /** Scroll to ``top`` (``current``: the scroll position already read, if known). */
  private setScrollTop(top: number, current = this.scroller.scrollTop): void {
    if (Math.abs(current - top) >= 1) {
      this.programmatic++;
      this.scroller.scrollTop = top;
    }
  }

  /** New entries (or a toggle): repaint at the next frame. */
  refresh(): void {
    this.tryReveal();
    this.update();
  }

  /** Repaint at the next animation frame, and while lines pour in at most every
   * ``FLOOD_INTERVAL`` ms: the page stays responsive (a notebook beside it keeps typing
   * smoothly), and lines flying by faster than that cannot be read anyway. */
  update(): void {
    // a hidden tab does no work; it repaints when shown
    if (this.frame || this.timer || !this.isVisible) {
      return;
    }
    const wait = this.lastPaint + FLOOD_INTERVAL - performance.now();
    if (this.follow && wait > 0 && this.model.lastSeq !== this.paintedSeq) {
      this.timer = window.setTimeout(() => {
        this.timer = 0;
        this.update();
      }, wait);
      return;
    }
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.lastPaint = performance.now();
      this.paintedSeq = this.model.lastSeq;
      this.renderNow();
    });
  }

  /** Paint the rows on screen. Its reads of the scroller's geometry come before its
   * writes, so a paint forces at most one layout (of the scroller alone: it is
   * ``contain: strict``), and the model answers in O(rows on screen). */
  private renderNow(): void {
    const model = this.model;
    const rows = model.rowCount;
    const viewport = this.scroller.clientHeight;
    const current = this.scroller.scrollTop;
    let top = current;
    const height = `${rows * ROW_HEIGHT}px`;
    if (this.sizer.style.height !== height) {
      this.sizer.style.height = height;
    }
    if (this.follow) {
      top = Math.max(0, rows * ROW_HEIGHT - viewport);
      this.setScrollTop(top, current);
    }
    const { start, end } = windowRange(rows, top, viewport, ROW_HEIGHT);
    const key = `${start}:${end}:${rows}:${model.lastSeq}:${this.selectedSeq}:${this.query}:${this.currentMatch()}`;
    if (key === this.rendered) {
      return;
    }
    this.rendered = key;
    this.layer.style.transform = `translateY(${start * ROW_HEIGHT}px)`;
    const context = {
      model,
      trans: this.options.trans,
      lineUrl: this.options.lineUrl,
      selectedSeq: this.selectedSeq,
      currentMatch: this.currentMatch(),
      query: this.query
    };
    const nodes: HTMLElement[] = [];
    for (let i = start; i < end; i++) {
      nodes.push(renderRow(model.rowAt(i), context));
    }
    this.layer.replaceChildren(...nodes);
  }

  private currentMatch(): number {
    return this.matchIndex >= 0 ? this.matches[this.matchIndex] : -1;
  }


  private onClick(event: MouseEvent): void {
    const target = event.target as HTMLElement;
    const link = target.closest('a.jp-AgentBuild-lineno') as HTMLAnchorElement | null;
    if (link && !event.ctrlKey && !event.metaKey && event.button === 0) {
      event.preventDefault();
      const seq = Number(link.dataset.seq);
      this.selectedSeq = seq;
      this.setFollow(false);
      this.options.onLineLink?.(seq, link.href);
      return;
    }
    const header = target.closest('.jp-AgentBuild-stepHeader') as HTMLElement | null;
    if (header) {
      this.model.toggle(Number(header.dataset.step));
      this.follow = false;
      this.followBox.checked = false;
      this.renderNow();
    }
  }

  private setAllOpen(open: boolean): void {
    for (const group of this.model.groups) {
      this.model.toggle(group.step, open);
    }
    this.follow = false;
    this.followBox.checked = false;
    this.renderNow();
  }

  private onScroll(): void {
    if (this.programmatic > 0) {
      this.programmatic--;
    } else {
      const bottom =
        this.scroller.scrollTop + this.scroller.clientHeight >= this.scroller.scrollHeight - 2;
      if (bottom !== this.follow) {
        this.follow = bottom;
        this.followBox.checked = bottom;
      }
    }
    this.update();
  }

  private scheduleSearch(): void {
    window.clearTimeout(this.searchTimer);
    this.searchTimer = window.setTimeout(() => this.runSearch(), 150);
  }

  private runSearch(): void {
    this.query = this.searchInput.value;
    this.matches = this.model.search(this.query);
    this.searchedAt = this.model.lastSeq;
    this.matchIndex = -1;
    if (this.matches.length) {
      this.findNext(1);
    } else {
      this.showCount();
      this.update();
    }
  }

  /** Go to the next (1) or previous (-1) match. */
  findNext(direction: 1 | -1): void {
    if (this.searchInput.value !== this.query || this.searchedAt !== this.model.lastSeq) {
      const current = this.currentMatch();
      this.query = this.searchInput.value;
      this.matches = this.model.search(this.query);
      this.searchedAt = this.model.lastSeq;
      this.matchIndex = current >= 0 ? this.matches.indexOf(current) : -1;
    }
    if (!this.matches.length) {
      this.showCount();
      return;
    }
    const n = this.matches.length;
    this.matchIndex =
      this.matchIndex < 0 ? (direction > 0 ? 0 : n - 1) : (this.matchIndex + direction + n) % n;
    this.follow = false;
    this.followBox.checked = false;
    this.showCount();
    const row = this.model.rowOfSeq(this.matches[this.matchIndex]);
    if (row >= 0) {
      this.scrollToRow(row);
    }
  }

  private showCount(): void {
    const trans = this.options.trans;
    this.matchCount.textContent = this.query
      ? this.matches.length
        ? trans.__('%1 of %2', this.matchIndex + 1, this.matches.length)
        : trans.__('no match')
      : '';
  }

  focusSearch(): void {
    this.searchInput.focus();
    this.searchInput.select();
  }

  protected onAfterAttach(): void {
    this.rendered = '';
    this.update();
  }

  protected onAfterShow(): void {
    this.rendered = '';
    this.update();
  }

  protected onResize(): void {
    this.rendered = '';
    this.update();
  }

  dispose(): void {
    if (this.frame) {
      cancelAnimationFrame(this.frame);
    }
    window.clearTimeout(this.timer);
    window.clearTimeout(this.searchTimer);
    super.dispose();
  }
}
