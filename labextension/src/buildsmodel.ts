/**
 * The user's builds as the panel, the status bar and the notifications see them: one list,
 * refreshed by a ``Poll`` (@lumino/polling) that backs off on errors and stands by while
 * the page is hidden. It pages backwards through the API's cursor, filters by status and
 * searches by name on the server (so the search reaches builds not loaded yet), and
 * reports transitions (finished, preview ready) to whoever listens.
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { AgentBuildApi } from './api';
import { ACTIVE_STATUSES, IBuild, PreviewState } from './contract';

const ACTIVE = new Set<string>(ACTIVE_STATUSES);

export function isActive(build: IBuild): boolean {
  return ACTIVE.has(build.status);
}

const LIVE_PREVIEW = new Set<string>([PreviewState.starting, PreviewState.ready]);

/** Whether the build's preview runs (or is starting): what a restart can replace. */
export function hasLivePreview(build: IBuild): boolean {
  return !!build.preview && LIVE_PREVIEW.has(build.preview.state);
}

export interface ITransition {
  build: IBuild;
  kind: 'finished' | 'preview_ready';
}

const PAGE = 50;
/** The server's bound on a name search. */
const MAX_SEARCH = 200;

export class BuildsModel {
  constructor(readonly api: AgentBuildApi, interval: number) {
    this.poll = new Poll({
      auto: true,
      factory: () => this.refresh(),
      frequency: { interval: interval * 1000, backoff: true, max: 300 * 1000 },
      name: 'jupyter-agentbuild:builds',
      standby: 'when-hidden'
    });
  }

  readonly poll: Poll;
  builds: IBuild[] = [];
  /** the active builds, listed or hidden by a filter */
  private active: IBuild[] = [];
  /** the cursor of the next (older) page, or null when every page is loaded */
  next: number | null = null;
  status = '';
  /** the name search (name or id contains it) */
  search = '';
  error: string | null = null;
  loaded = false;
  private pages = 1;
  /** status and preview state as last seen, to report transitions */
  private seen = new Map<string, string>();
  private readonly changed_ = new Signal<this, void>(this);
  private readonly transition_ = new Signal<this, ITransition>(this);

  get changed(): ISignal<this, void> {
    return this.changed_;
  }

  get transition(): ISignal<this, ITransition> {
    return this.transition_;
  }

  /** Builds running (whatever the filters). */
  get running(): number {
    return this.active.length;
  }

  /** The builds a filter hides that the status bar and the notifications still follow:
   * the active ones, and those that were active and have ended since (read one by one). */
  private async unlisted(listed: IBuild[]): Promise<IBuild[]> {
    const shown = new Set(listed.map(b => b.id));
    const active = await this.api.list({ status: ACTIVE_STATUSES.join(','), limit: 500 });
    const now = new Set(active.builds.map(b => b.id));
    const ended = this.active.filter(b => !shown.has(b.id) && !now.has(b.id));
    const read = await Promise.all(ended.map(b => this.api.get(b.id).catch(() => null)));
    return [
      ...active.builds.filter(b => !shown.has(b.id)),
      ...read.filter((b): b is IBuild => b !== null)
    ];
  }

  setInterval(seconds: number): void {
    this.poll.frequency = { ...this.poll.frequency, interval: seconds * 1000 };
  }

  setStatus(status: string): void {
    this.status = status;
    this.pages = 1;
    void this.poll.refresh();
  }

  /** Search by name (or id) on the server; '' lists every build. */
  setSearch(search: string): void {
    const trimmed = search.trim().slice(0, MAX_SEARCH);
    if (trimmed === this.search) {
      return;
    }
    this.search = trimmed;
    this.pages = 1;
    void this.poll.refresh();
  }

  /** The filters of a request: an answer for other filters (the user typed on) is dropped. */
  private filters(): { status: string; q: string } {
    return { status: this.status, q: this.search };
  }

  private current(filters: { status: string; q: string }): boolean {
    return filters.status === this.status && filters.q === this.search;
  }

  /** Load one more (older) page. */
  async more(): Promise<void> {
    if (this.next === null) {
      return;
    }
    const filters = this.filters();
    const page = await this.api.list({ ...filters, before: this.next, limit: PAGE });
    if (!this.current(filters)) {
      return;
    }
    this.pages++;
    this.builds = [...this.builds, ...page.builds.filter(b => !this.builds.some(x => x.id === b.id))];
    this.next = page.next;
    this.changed_.emit();
  }

  /** Reload the loaded pages (one request); a failure is shown and rethrown (the poll
   * backs off). Filters changed while the request was out are loaded next, here: the poll
   * drops the refresh they ask for while this one runs (its phase is "refreshed"), and the
   * list would keep the old filters' builds until the next tick, minutes later. */
  async refresh(): Promise<void> {
    while (!(await this.load())) {
      // the filters changed while the request was out: load theirs
    }
  }

  /** One load for the current filters; false when they changed before its answer came
   * (the answer is dropped). */
  private async load(): Promise<boolean> {
    const filters = this.filters();
    try {
      const page = await this.api.list({ ...filters, limit: Math.min(500, PAGE * this.pages) });
      const others = filters.status || filters.q ? await this.unlisted(page.builds) : [];
      if (!this.current(filters)) {
        return false;
      }
      this.error = null;
      this.notice([...page.builds, ...others]);
      this.active = [...page.builds, ...others].filter(isActive);
      this.builds = page.builds;
      this.next = page.next;
      this.loaded = true;
    } catch (error) {
      if (!this.current(filters)) {
        return false;
      }
      this.error = (error as Error).message;
      this.changed_.emit();
      throw error;
    }
    this.changed_.emit();
    return true;
  }

  /** A build is known to have changed (created, cancelled): update it now. */
  upsert(build: IBuild): void {
    const at = this.builds.findIndex(b => b.id === build.id);
    if (at >= 0) {
      this.builds[at] = build;
    } else {
      this.builds = [build, ...this.builds];
    }
    this.notice([build]);
    this.active = [...this.active.filter(b => b.id !== build.id), ...(isActive(build) ? [build] : [])];
    this.changed_.emit();
  }

  private notice(builds: IBuild[]): void {
    const first = !this.loaded;
    for (const build of builds) {
      const key = `${build.status}|${build.preview?.state ?? ''}`;
      const before = this.seen.get(build.id);
      this.seen.set(build.id, key);
      if (first || before === key) {
        continue;
      }
      const [status, preview] = (before ?? '|').split('|');
      const wasActive = before === undefined || ACTIVE.has(status);
      if (wasActive && !isActive(build)) {
        this.transition_.emit({ build, kind: 'finished' });
      }
      if (build.preview?.state === PreviewState.ready && preview !== PreviewState.ready) {
        this.transition_.emit({ build, kind: 'preview_ready' });
      }
    }
  }

  dispose(): void {
    this.poll.dispose();
    Signal.clearData(this);
  }
}
